"""``Parent`` in process: every part on real loopback sockets, started and stopped together."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attested.errors import CredentialsUnavailable, RelayUnavailable
from attested.kms.credentials import ParentCredentials
from attested.net import Address
from attested.parent import Parent, parse_parent_config
from attested.relay import EnclaveEgress, Refusal, Relay
from tests.parent.conftest import ACCESS_KEY, SECRET, unstamped
from tests.relay.support import Target, connect_through, loopback, recv_exactly, tcp, wait_acked

pytestmark = pytest.mark.integration


@pytest.fixture
def enclave_proxy() -> Iterator[Callable[[Address], Address]]:
    """The enclave's side of egress: a CONNECT proxy whose tunnels go to the parent."""
    relays: list[Relay] = []

    def start(parent: Address) -> Address:
        relay = Relay([EnclaveEgress(listen=loopback(), parent=parent)])
        (proxy,) = relay.start()
        relays.append(relay)
        return proxy

    yield start
    for relay in relays:
        relay.stop(deadline=1.0)


def is_running(parent: Parent) -> bool:
    return parent.running


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def echo_through(proxy: Address, target: str) -> tuple[int, bytes]:
    sock, status, head = connect_through(proxy, target)
    with sock:
        if status != 200:
            return status, head
        sock.sendall(b"ping through the parent")
        return status, recv_exactly(sock, len(b"ping through the parent"))


def test_egress_dials_allowlisted_destinations_only(run_parent, enclave_proxy, make_target) -> None:
    echo: Target = make_target("echo")
    other: Target = make_target("echo")
    parent = run_parent(
        f"""
        [egress]
        listen = "tcp:127.0.0.1:0"
        allow = [{{address = "127.0.0.1", port = {echo.port}}}]
        """
    )
    proxy = enclave_proxy(parent.listeners["egress"])
    assert echo_through(proxy, f"127.0.0.1:{echo.port}") == (200, b"ping through the parent")
    status, _ = echo_through(proxy, f"127.0.0.1:{other.port}")
    assert status == 403
    assert other.accepts == 0
    stats = parent.stats()["egress"]
    assert stats.refusals[Refusal.NOT_ALLOWED] == 1
    assert stats.bytes_up == len(b"ping through the parent")


def test_hosts_override_keeps_the_name_and_address_rules(
    run_parent, enclave_proxy, make_target, tmp_path: Path
) -> None:
    echo: Target = make_target("echo")
    allow = f"allowlist:\n- {{address: echo.test, port: {echo.port}}}\n"
    (tmp_path / "allow.yaml").write_text(allow)
    only_name = run_parent(
        """
        [egress]
        listen = "tcp:127.0.0.1:0"
        allowlist = "allow.yaml"
        hosts = {"echo.test" = "127.0.0.1", "unlisted.test" = ["127.0.0.1"]}
        """
    )
    proxy = enclave_proxy(only_name.listeners["egress"])
    # The name is listed, but its answer is loopback, which is not: refused.
    assert echo_through(proxy, f"echo.test:{echo.port}")[0] == 403
    # A name in hosts but not in the allowlist: refused before any lookup.
    assert echo_through(proxy, f"unlisted.test:{echo.port}")[0] == 403
    stats = only_name.stats()["egress"]
    assert stats.refusals[Refusal.FORBIDDEN_ADDRESS] == 1
    assert stats.refusals[Refusal.NOT_ALLOWED] == 1
    assert echo.accepts == 0

    both = run_parent(
        f"""
        [egress]
        listen = "tcp:127.0.0.1:0"
        allowlist = "allow.yaml"
        allow = [{{address = "127.0.0.1", port = {echo.port}}}]
        hosts = {{"echo.test" = "127.0.0.1"}}
        """
    )
    proxy = enclave_proxy(both.listeners["egress"])
    assert echo_through(proxy, f"echo.test:{echo.port}") == (200, b"ping through the parent")


def test_credentials_reach_an_allowed_peer(run_parent, aws_environment) -> None:
    parent = run_parent(
        """
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        allowed_peers = ["127.0.0.1"]
        """
    )
    got = ParentCredentials(parent.listeners["credentials"]).fetch()
    assert got.access_key_id == ACCESS_KEY
    assert got.secret_access_key == SECRET
    assert parent.credentials_served == 1
    assert SECRET not in repr(parent)


def test_credentials_are_refused_to_other_peers(run_parent, aws_environment) -> None:
    parent = run_parent(
        """
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        allowed_peers = ["127.0.0.2"]
        """
    )
    with pytest.raises(CredentialsUnavailable, match="allowed peers"):
        ParentCredentials(parent.listeners["credentials"]).fetch()
    assert parent.credentials_refused == 1
    assert parent.credentials_served == 0


def test_imds_source_with_a_local_metadata_service(run_parent, imds: str) -> None:
    parent = run_parent(
        f"""
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "imds"
        imds_url = "{imds}"
        """
    )
    got = ParentCredentials(parent.listeners["credentials"]).fetch()
    assert got.access_key_id == "ASIAIMDSEXAMPLE00001"
    assert got.expiration is not None


def test_ingress_forward_carries_bytes_both_ways(run_parent, make_target) -> None:
    echo: Target = make_target("echo")
    count: Target = make_target("count")
    parent = run_parent(
        f"""
        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:{echo.port}"
        allow_parent_target = true  # loopback TCP stands in for the enclave

        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:{count.port}"
        allow_parent_target = true  # loopback TCP stands in for the enclave
        idle_timeout = 0
        """
    )
    assert list(parent.listeners) == ["ingress-0", "ingress-1"]
    payload = bytes(range(256)) * 1024
    with socket.create_connection(tcp(parent.listeners["ingress-0"]), timeout=10) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    with socket.create_connection(tcp(parent.listeners["ingress-1"]), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(64) == f"got {len(payload)}".encode()


def test_log_sink_writes_lines_and_reopens(run_parent, tmp_path: Path) -> None:
    parent = run_parent(
        """
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "enclave.log"
        """
    )
    out = tmp_path / "enclave.log"
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b'{"message": "first"}\n')
        assert len(recv_exactly(sock, 8)) == 8  # acknowledged once written and flushed
        out.rename(tmp_path / "enclave.log.1")
        parent.reopen()
        wait_for(out.exists)
        sock.sendall(b'{"message": "second"}\nnot json\n')
        wait_acked(sock, 3)
    assert unstamped((tmp_path / "enclave.log.1").read_text()) == {"message": "first"}
    lines = [unstamped(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"message": "second"}
    assert len(lines) == 2  # the non-JSON line is kept, wrapped as an object


def test_stop_ends_every_thread_and_listener(run_parent, aws_environment, tmp_path) -> None:
    before = set(threading.enumerate())
    config = parse_parent_config(
        """
        [egress]
        listen = "tcp:127.0.0.1:0"
        allow = [{address = "kms.us-east-1.amazonaws.com", port = 443}]
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:9"
        allow_parent_target = true  # loopback TCP stands in for the enclave
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "-"
        """,
        base=tmp_path,
    )
    with Parent(config) as parent:
        addresses = dict(parent.listeners)
        assert list(addresses) == ["egress", "credentials", "ingress-0", "logs"]
        assert is_running(parent)
        assert len(set(threading.enumerate()) - before) == 4
        held = socket.create_connection(tcp(addresses["ingress-0"]), timeout=5)
    held.close()
    assert not is_running(parent)
    assert parent.stop() is True  # again: harmless
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for address in addresses.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(tcp(address), timeout=5).close()


def test_start_is_all_or_nothing(tmp_path) -> None:
    before = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = parse_parent_config(
            f"""
            [egress]
            listen = "tcp:127.0.0.1:0"
            allow = [{{address = "kms.us-east-1.amazonaws.com", port = 443}}]
            [logs]
            listen = "tcp:127.0.0.1:{port}"
            out = "-"
            """,
            base=tmp_path,
        )
        parent = Parent(config)
        with pytest.raises(RelayUnavailable, match="in use"):
            parent.start()
    assert parent.listeners == {}
    assert not parent.running
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
    with pytest.raises(RuntimeError, match="once"):
        parent.start()
