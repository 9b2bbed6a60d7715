"""``attested relay ...``: usage errors in process, real subprocesses stopped by signals."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attested.cli import main
from attested.net import Address, parse_address
from attested.relay import VsockLogHandler
from tests.relay.support import closed_port, tcp

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["enclave-egress"], 2, "give --listen and --parent"),
        (["enclave-egress", "--listen", "tcp:127.0.0.1:0"], 2, "go together"),
        (["enclave-egress", "--forward", "tcp:127.0.0.1:0"], 2, "LISTEN=TO"),
        (["parent-egress", "--listen", "tcp:127.0.0.1:0"], 2, "needs --allowlist"),
        (["parent-egress", "--forward", "tcp:127.0.0.1:0=vsock:3:1"], 2, "must be tcp"),
        (
            ["parent-egress", "--forward", "tcp:127.0.0.1:0=tcp:a.test:1", "--dns-cache", "61"],
            2,
            "cache",
        ),
        (["ingress", "--listen", "nope:1", "--to", "tcp:127.0.0.1:1"], 2, "unknown address kind"),
        (["logs", "--listen", "tcp:127.0.0.1:0", "--out", "-", "--max-line", "5"], 2, "max-line"),
    ],
)
def test_usage_errors(argv, status, message, capsys) -> None:
    assert main(["relay", *argv]) == status
    assert message in capsys.readouterr().err


def test_allowlist_errors(tmp_path: Path, capsys) -> None:
    args = ["relay", "parent-egress", "--listen", "tcp:127.0.0.1:0", "--allowlist"]
    assert main([*args, str(tmp_path / "missing.yaml")]) == 3
    assert "cannot read allowlist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("allowlist: [{address: '*.example.com', port: 443}]\n")
    assert main([*args, str(bad)]) == 2
    assert "wildcards are not supported" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("allowlist: [{address: a.example.com, port: 443}]\n")
    forward = ["--forward", "tcp:127.0.0.1:0=tcp:b.example.com:443"]
    assert main(["relay", "parent-egress", "--allowlist", str(good), *forward]) == 2
    assert "not in the allowlist" in capsys.readouterr().err


def test_an_address_in_use_is_an_environment_error(capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = ["relay", "ingress", "--listen", f"tcp:127.0.0.1:{port}", "--to", "tcp:127.0.0.1:1"]
        assert main(argv) == 3
    assert "Address already in use" in capsys.readouterr().err


class Running:
    """A relay CLI subprocess and the addresses it printed."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attested", "relay", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.addresses: list[Address] = []
        self.stderr = b""
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        end = time.monotonic() + 30
        while b"listening on" not in self.stderr:
            left = end - time.monotonic()
            assert left > 0, f"no listening line: {self.stderr!r}"
            ready, _, _ = select.select([fd], [], [], left)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                raise AssertionError(f"exited: {self.stderr!r}")
            self.stderr += chunk
        time.sleep(0.05)  # let every listening line arrive
        ready, _, _ = select.select([fd], [], [], 0)
        if ready:
            self.stderr += os.read(fd, 65536)
        for line in self.stderr.decode().splitlines():
            if " listening on " in line:
                self.addresses.append(parse_address(line.rsplit(" ", 1)[1]))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20) -> tuple[int, bytes, bytes]:
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, self.stderr + err


@pytest.fixture
def run_cli() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Running:
        running = Running(list(args), env)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.communicate(timeout=10)


def test_https_through_two_cli_processes_then_sigterm(
    run_cli, tls_server, relay_ca, tmp_path, monkeypatch
) -> None:
    port = tls_server.port
    allowlist = tmp_path / "vsock-proxy.yaml"
    allowlist.write_text(
        "allowlist:\n"
        f"- {{address: localhost, port: {port}}}\n"
        f"- {{address: 127.0.0.1, port: {port}}}\n"
    )
    parent = run_cli("parent-egress", "--listen", "tcp:127.0.0.1:0", "--allowlist", str(allowlist))
    (parent_addr,) = parent.addresses
    enclave = run_cli("enclave-egress", "--listen", "tcp:127.0.0.1:0", "--parent", str(parent_addr))
    (proxy,) = enclave.addresses
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    with urllib.request.urlopen(
        f"https://localhost:{port}/", context=relay_ca.client_context(), timeout=20
    ) as response:
        assert response.read() == b"hello through the tunnel\n"
    for running in (enclave, parent):
        status, _, err = running.stop()
        assert status == 0, err
        assert b"attested relay: stopped" in err


def test_logs_cli_reopens_on_sighup_and_stops_on_sigterm(run_cli, tmp_path) -> None:
    out = tmp_path / "enclave.log"
    sink = run_cli("logs", "--listen", "tcp:127.0.0.1:0", "--out", str(out))
    (address,) = sink.addresses
    handler = VsockLogHandler(address, max_backoff=0.1)
    logger = logging.getLogger("tests.relay.cli.sighup")
    logger.handlers = [handler]
    logger.propagate = False
    try:
        logger.warning("before rotation")
        assert handler.drain(10)
        out.rename(tmp_path / "enclave.log.1")
        sink.signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while not out.exists():
            assert time.monotonic() < end
            time.sleep(0.02)
        logger.warning("after rotation")
        assert handler.drain(10)
    finally:
        handler.close()
    rotated = [
        json.loads(x)["message"] for x in (tmp_path / "enclave.log.1").read_text().splitlines()
    ]
    assert rotated == ["before rotation"]
    assert [json.loads(x)["message"] for x in out.read_text().splitlines()] == ["after rotation"]
    status, _, err = sink.stop()
    assert status == 0, err


def test_logs_to_stdout(run_cli) -> None:
    sink = run_cli("logs", "--listen", "tcp:127.0.0.1:0", "--out", "-")
    (address,) = sink.addresses
    with socket.create_connection(tcp(address)) as sock:
        sock.sendall(b'{"message": "hi"}\n')
        assert len(sock.recv(8)) == 8  # acknowledged: written and flushed
    status, out, _ = sink.stop()
    assert status == 0
    record = json.loads(out)
    assert record["message"] == "hi"
    assert str(record["peer"]).startswith("tcp:127.0.0.1:")  # the sink adds the sender


def test_several_forwards_in_one_process(run_cli, make_target) -> None:
    first, second = make_target("echo"), make_target("count")
    parent = run_cli(
        "parent-egress",
        "--forward",
        f"tcp:127.0.0.1:0={first.address}",
        "--forward",
        f"tcp:127.0.0.1:0={second.address}",
    )
    a, b = parent.addresses
    with socket.create_connection(tcp(a)) as sock:
        sock.sendall(b"one")
        assert sock.recv(3) == b"one"
    with socket.create_connection(tcp(b)) as sock:
        sock.sendall(b"four")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(16) == b"got 4"
    assert parent.stop()[0] == 0


def test_ingress_forwards_raw_bytes(run_cli, make_target) -> None:
    target = make_target("echo")
    ingress = run_cli("ingress", "--listen", "tcp:127.0.0.1:0", "--to", str(target.address))
    (address,) = ingress.addresses
    with socket.create_connection(tcp(address)) as sock:
        sock.sendall(b"raw")
        assert sock.recv(3) == b"raw"
    assert ingress.stop()[0] == 0


def test_a_refused_parent_is_reported_on_stderr(run_cli) -> None:
    port = closed_port()
    enclave = run_cli(
        "enclave-egress", "--listen", "tcp:127.0.0.1:0", "--parent", f"tcp:127.0.0.1:{port}"
    )
    (proxy,) = enclave.addresses
    with socket.create_connection(tcp(proxy)) as sock:
        sock.sendall(b"CONNECT kms.us-east-1.amazonaws.com:443 HTTP/1.1\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 502 ")
    status, _, err = enclave.stop()
    assert status == 0
    assert b"cannot reach the parent relay" in err


def test_ready_file_names_every_bound_listener_and_goes_away(
    run_cli, make_target, tmp_path
) -> None:
    first, second = make_target("echo"), make_target("echo")
    ready = tmp_path / "relay.ready"
    parent = run_cli(
        "parent-egress",
        "--forward",
        f"tcp:127.0.0.1:0={first.address}",
        "--forward",
        f"tcp:127.0.0.1:0={second.address}",
        "--ready-file",
        str(ready),
    )
    content = json.loads(ready.read_text())
    assert content["pid"] == parent.process.pid
    listeners = [parse_address(text) for text in content["listeners"].values()]
    assert listeners == parent.addresses
    assert len(set(content["listeners"])) == 2
    assert all(address.port != 0 for address in listeners)
    assert parent.stop()[0] == 0
    assert not ready.exists()
