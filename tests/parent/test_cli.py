"""``attested parent``: --check in process, a real subprocess driven by its ready file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attested.cli import build_parser, main
from attested.kms.credentials import ParentCredentials
from attested.net import parse_address
from attested.relay import EnclaveEgress, Relay
from tests.parent.conftest import ACCESS_KEY, unstamped
from tests.relay.support import Target, connect_through, loopback, recv_exactly, tcp

pytestmark = pytest.mark.integration


def test_check_accepts_a_valid_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "parent.toml"
    path.write_text('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\n')
    assert main(["parent", "--config", str(path), "--check"]) == 0
    assert capsys.readouterr().out == f"attested parent: {path}: valid (logs)\n"


def test_check_prints_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "parent.toml"
    path.write_text('[logs]\nlisten = "nope"\nextra = 1\n')
    assert main(["parent", "--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"attested parent: {path}: logs.extra: unknown key "
        "(known: listen, out, max_line, max_record, enclaves)",
        f"attested parent: {path}: logs.listen: 'nope': expected vsock:CID:PORT, "
        "tcp:HOST:PORT or unix:PATH",
        f"attested parent: {path}: logs.out: required: a file, or '-' for standard output",
    ]
    # without --check, the same: nothing starts
    assert main(["parent", "--config", str(path)]) == 2


def test_an_unreadable_file_is_an_environment_error(tmp_path: Path, capsys) -> None:
    assert main(["parent", "--config", str(tmp_path / "missing.toml"), "--check"]) == 3
    assert "cannot read the configuration file" in capsys.readouterr().err


def test_an_address_in_use_is_an_environment_error(tmp_path: Path, capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = tmp_path / "parent.toml"
        path.write_text(f'[logs]\nlisten = "tcp:127.0.0.1:{port}"\nout = "-"\n')
        assert main(["parent", "--config", str(path)]) == 3
    assert "Address already in use" in capsys.readouterr().err


class Running:
    """``attested parent`` in a subprocess; ``listeners`` come from its ready file."""

    def __init__(self, config: Path, ready: Path, env: dict[str, str]) -> None:
        self.ready = ready
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "attested",
                "parent",
                "--config",
                str(config),
                "--ready-file",
                str(ready),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        end = time.monotonic() + 30
        while not ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(self.process.communicate()[1].decode())
            assert time.monotonic() < end, "no ready file"
            time.sleep(0.02)
        self.info: dict[str, Any] = json.loads(ready.read_text())
        self.listeners = {k: parse_address(v) for k, v in self.info["listeners"].items()}

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err.decode()


@pytest.fixture
def run_cli(tmp_path: Path, aws_environment) -> Iterator[Callable[[str], Running]]:
    started: list[Running] = []

    def start(text: str) -> Running:
        config = tmp_path / "parent.toml"
        config.write_text(text)
        running = Running(config, tmp_path / "ready.json", {**os.environ})
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.communicate(timeout=10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_whole_parent_in_a_subprocess(run_cli, make_target, tmp_path, signum) -> None:
    echo: Target = make_target("echo")
    parent = run_cli(
        f"""
        [egress]
        listen = "tcp:127.0.0.1:0"
        allow = [{{address = "echo.test", port = {echo.port}}},
                 {{address = "127.0.0.1", port = {echo.port}}}]
        hosts = {{"echo.test" = "127.0.0.1"}}
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:{echo.port}"
        allow_parent_target = true  # loopback TCP stands in for the enclave
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "enclave.log"
        """
    )
    assert parent.info["pid"] == parent.process.pid
    assert list(parent.listeners) == ["egress", "credentials", "ingress-0", "logs"]
    assert all(a.port for a in parent.listeners.values())

    enclave = Relay([EnclaveEgress(listen=loopback(), parent=parent.listeners["egress"])])
    (proxy,) = enclave.start()
    try:
        sock, status, _ = connect_through(proxy, f"echo.test:{echo.port}")
        with sock:
            assert status == 200
            sock.sendall(b"egress")
            assert recv_exactly(sock, 6) == b"egress"
    finally:
        enclave.stop(deadline=1.0)

    got = ParentCredentials(parent.listeners["credentials"]).fetch()
    assert got.access_key_id == ACCESS_KEY

    with socket.create_connection(tcp(parent.listeners["ingress-0"]), timeout=10) as sock:
        sock.sendall(b"ingress")
        assert recv_exactly(sock, 7) == b"ingress"

    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b'{"message": "from the enclave"}\n')
        recv_exactly(sock, 8)
    assert unstamped((tmp_path / "enclave.log").read_text()) == {"message": "from the enclave"}

    status, err = parent.stop(signum)
    assert status == 0, err
    assert "attested parent: stopped" in err
    assert ACCESS_KEY not in err
    assert not parent.ready.exists()


def test_sighup_reopens_the_log_file(run_cli, tmp_path: Path) -> None:
    parent = run_cli('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "enclave.log"\n')
    out = tmp_path / "enclave.log"
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b'{"n": 1}\n')
        recv_exactly(sock, 8)
        out.rename(tmp_path / "enclave.log.1")
        parent.process.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while not out.exists():
            assert time.monotonic() < end, "not reopened"
            time.sleep(0.02)
        sock.sendall(b'{"n": 2}\n')
        recv_exactly(sock, 8)
    assert unstamped((tmp_path / "enclave.log.1").read_text()) == {"n": 1}
    assert unstamped(out.read_text()) == {"n": 2}
    status, err = parent.stop()
    assert status == 0, err


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_right_after_the_ready_file_is_handled(run_cli, signum) -> None:
    """The handlers are installed before the ready file appears: no default-action death."""
    parent = run_cli('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\n')
    parent.process.send_signal(signum)
    if signum == signal.SIGHUP:
        time.sleep(0.3)
        assert parent.process.poll() is None  # reopened the log, still running
    status, err = parent.stop()
    assert status == 0, err


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "parent.toml"
    path.write_text('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\n')
    args = build_parser().parse_args(["parent", "--config", str(path), "--log-level", "debug"])
    assert args.log_level == "DEBUG"


_HOSTILE = {
    "nested 2,000 levels": (
        "[egress]\nlisten = " + "[" * 2000 + "]" * 2000 + "\n",
        "the configuration file is not valid TOML: tables and arrays are nested more than 16",
    ),
    "a 5,000-digit integer": (
        "[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '-'\nmax_line = " + "9" * 5000 + "\n",
        "the configuration file is not valid TOML: a value that cannot be converted",
    ),
    "an integer beyond 64 bits": (
        "[egress]\nlisten = 'vsock:ANY:8000'\nallow = [{address = 'a.test', port = 1}]\n"
        "dns_cache = 0x" + "f" * 300 + "\n",
        "the configuration file is not valid TOML: an integer is outside the 64-bit range",
    ),
    "a home directory that does not exist": (
        "[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '~no-such-user-attested/enclave.log'\n",
        "logs.out: '~no-such-user-attested/enclave.log': cannot find the home directory",
    ),
    "an IMDS URL with an open bracket": (
        "[credentials]\nlisten = 'tcp:127.0.0.1:0'\nimds_url = 'http://[::1'\n",
        "credentials.imds_url: must be an http:// URL",
    ),
    "a byte that is not UTF-8": (
        "[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '\udcff'\n",
        "the configuration file is not UTF-8",
    ),
}


@pytest.mark.parametrize(("text", "problem"), list(_HOSTILE.values()), ids=list(_HOSTILE))
def test_check_reports_hostile_files_as_problems(tmp_path: Path, text: str, problem: str) -> None:
    """In a real process: exit 2 and a problem list on stderr, never a traceback."""
    path = tmp_path / "parent.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = subprocess.run(
        [sys.executable, "-m", "attested", "parent", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"attested parent: {path}: {problem}" in result.stderr
