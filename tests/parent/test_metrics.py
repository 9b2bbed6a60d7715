"""The parent's Prometheus endpoint, and scraping the enclave's /metrics through the parent.

Real loopback sockets, a real HTTP client, the real credential server and, for the
enclave side, a real ``attested serve`` (simulated NSM, the KMS emulator).
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from attested.cli import main
from attested.errors import ConfigError
from attested.kms.credentials import ParentCredentials
from attested.net import Address
from attested.parent import Parent, parse_parent_config
from tests.relay.support import Target, recv_exactly, tcp, wait_acked

# The service's fixtures (module-scoped KMS emulator, simulated NSM), for the enclave side.
from tests.service.conftest import emu, short_dir, sim_nsm, sim_state, start_service  # noqa: F401

pytestmark = pytest.mark.integration


def scrape(address: Address, path: str = "/metrics") -> tuple[int, str, str]:
    host, port = tcp(address)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_the_parent_shows_relay_credential_and_log_sink_counters(
    run_parent: Callable[[str], Parent],
    make_target: Callable[..., Target],
    aws_environment: dict[str, str],
) -> None:
    target = make_target("echo")
    parent = run_parent(
        f"""
        [egress]
        allow = [{{address = "127.0.0.1", port = {target.port}}}]
        [[egress.forward]]
        listen = "tcp:127.0.0.1:0"
        to = "127.0.0.1:{target.port}"
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "enclave.log"
        [metrics]
        listen = "tcp:127.0.0.1:0"
        """
    )
    with socket.create_connection(tcp(parent.listeners["egress-forward-0"]), timeout=10) as sock:
        sock.sendall(b"12345")
        recv_exactly(sock, 5)
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b'{"message": "one"}\n{"message": "two"}\n')
        wait_acked(sock, 2)
    ParentCredentials(parent.listeners["credentials"]).fetch()
    wait_for(lambda: parent.stats()["egress-forward-0"].connections_active == 0)

    status, content_type, text = scrape(parent.listeners["metrics"])
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    lines = set(text.splitlines())
    assert 'attested_relay_connections_total{listener="egress-forward-0"} 1' in lines
    assert 'attested_relay_bytes_up_total{listener="egress-forward-0"} 5' in lines
    assert 'attested_relay_records_total{listener="logs"} 2' in lines
    assert (
        'attested_relay_refusals_total{listener="egress-forward-0",reason="not_allowed"} 0' in lines
    )
    assert 'attested_relay_failures_total{listener="logs",reason="reset"} 0' in lines
    assert "attested_parent_credentials_served_total 1" in lines
    assert "attested_parent_credentials_refused_total 0" in lines
    assert aws_environment["AWS_SECRET_ACCESS_KEY"] not in text
    assert scrape(parent.listeners["metrics"], "/other")[0] == 404


def test_metrics_listen_on_loopback_unless_told_otherwise(tmp_path: Path, capsys) -> None:
    config = parse_parent_config("[metrics]\n")
    assert config.metrics is not None
    assert str(config.metrics.listen) == "tcp:127.0.0.1:9101"
    with pytest.raises(ConfigError) as caught:
        parse_parent_config('[metrics]\nlisten = "tcp:0.0.0.0:9101"\n')
    assert caught.value.problems[0].startswith(
        "metrics.listen: tcp:0.0.0.0:9101 is beyond loopback: set allow_remote = true"
    )
    remote = parse_parent_config('[metrics]\nlisten = "tcp:0.0.0.0:9101"\nallow_remote = true\n')
    assert remote.metrics is not None
    assert remote.metrics.allow_remote
    path = tmp_path / "parent.toml"
    path.write_text('[logs]\nlisten = "vsock:ANY:8090"\nout = "-"\n[metrics]\n')
    assert main(["parent", "--config", str(path), "--check"]) == 0
    assert capsys.readouterr().out == f"attested parent: {path}: valid (logs, metrics)\n"


def test_prometheus_scrapes_the_enclave_service_through_an_ingress_forward(
    run_parent: Callable[[str], Parent],
    start_service: Callable[..., object],  # noqa: F811 - the imported fixture
) -> None:
    """The recipe's way: an ``[[ingress]]`` forward on the parent's loopback to the service.

    In production ``to`` is the service's vsock listener (``api.vsock``, which serves only
    health, metrics and attestation documents); here the service's loopback TCP listener
    stands in for it, which is why the forward needs ``allow_parent_target``. The bytes
    path through the parent is the same raw forward.
    """
    service = start_service(api_tcp="tcp:127.0.0.1:0")
    listen = service.listeners["tcp"]  # type: ignore[attr-defined]
    parent = run_parent(
        f"""
        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:{listen.port}"
        allow_parent_target = true
        [metrics]
        listen = "tcp:127.0.0.1:0"
        """
    )
    status, content_type, text = scrape(parent.listeners["ingress-0"])
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE attested_service_requests_total counter" in text
    _, _, own = scrape(parent.listeners["metrics"])
    assert 'attested_relay_connections_total{listener="ingress-0"} 1' in own.splitlines()
