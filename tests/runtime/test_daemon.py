"""The one daemon wrapper (``attested/cli/_daemon.py``) as the four daemons run it.

Real subprocesses of ``attested serve``, ``parent``, ``relay`` and ``emulator kms``,
with a real ``AF_UNIX`` datagram socket standing in for systemd's ``NOTIFY_SOCKET``:
``READY=1`` comes after the ready file, ``WATCHDOG=1`` keeps coming (also after
SIGHUP, which stops none of them), SIGTERM gives ``STOPPING=1``, exit 0, and no socket
file or ready file left behind. In process: an unexpected stop exits 3, and the
notifier's address forms.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from attested.cli._common import CliError
from attested.cli._daemon import Notifier, run_part
from attested.errors import ConfigurationError
from attested.net import Address, parse_address
from attested.simulator import SimulatedNsm
from tests.kit import short_directory

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 400_000  # pings every 0.2 s
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    with short_directory("att-dmn-") as path:
        yield path


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket, a path or abstract."""

    def __init__(self, address: str) -> None:
        self.env = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[list[str]] = []

    def wait_for(self, line: str, timeout: float = 60.0) -> list[str]:
        """The next message containing ``line``; the ones before it are kept too."""
        end = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                raise AssertionError(f"no {line} within {timeout} s: {self.received}") from None
            self.received.append(message)
            if line in message:
                return message

    def close(self) -> None:
        self.sock.close()


@dataclass
class Daemon:
    argv: list[str]
    unix_sockets: list[Path]
    ready: Path


def _serve(directory: Path) -> Daemon:
    SimulatedNsm(state_dir=directory / "nsm").close()
    config = directory / "service.toml"
    config.write_text(
        f"""
        region = "us-east-1"
        [api]
        unix = "{directory / "api.sock"}"
        [nsm]
        backend = "simulated"
        simulated_state = "{directory / "nsm"}"
        [kms]
        endpoint_url = "http://127.0.0.1:9"
        allowed_keys = ["{KEY_ARN}"]
        [credentials]
        source = "environment"
        """
    )
    ready = directory / "ready.json"
    argv = ["serve", "--config", str(config), "--ready-file", str(ready)]
    return Daemon(argv, [directory / "api.sock"], ready)


def _parent(directory: Path) -> Daemon:
    config = directory / "parent.toml"
    config.write_text(
        f"""
        [credentials]
        listen = "tcp:127.0.0.1:0"
        source = "environment"
        [logs]
        listen = "unix:{directory / "logs.sock"}"
        out = "enclave.log"
        """
    )
    ready = directory / "ready.json"
    argv = ["parent", "--config", str(config), "--ready-file", str(ready)]
    return Daemon(argv, [directory / "logs.sock"], ready)


def _relay(directory: Path) -> Daemon:
    ready = directory / "ready.json"
    listen = f"unix:{directory / 'in.sock'}"
    argv = ["relay", "ingress", "--listen", listen, "--to", "tcp:127.0.0.1:9"]
    return Daemon([*argv, "--ready-file", str(ready)], [directory / "in.sock"], ready)


def _emulator(directory: Path) -> Daemon:
    SimulatedNsm(state_dir=directory / "nsm").close()
    ready = directory / "ready.json"
    argv = ["emulator", "kms", "--simulated-state", str(directory / "nsm")]
    return Daemon([*argv, "--ready-file", str(ready)], [], ready)


DAEMONS = {"serve": _serve, "parent": _parent, "relay": _relay, "emulator": _emulator}


def _start(
    daemon: Daemon, directory: Path, notify: NotifySocket | None, **env: str
) -> subprocess.Popen[bytes]:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "AKIADAEMONEXAMPLE001",
        "AWS_SECRET_ACCESS_KEY": "daemon-test-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
        **({} if notify is None else {"NOTIFY_SOCKET": notify.env}),
        **env,
    }
    with (directory / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "attested", *daemon.argv],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=environ,
            cwd=directory,
        )


def _listeners(ready: Path) -> Mapping[str, Address]:
    info = json.loads(ready.read_text())
    return {name: parse_address(text) for name, text in info["listeners"].items()}


def _connect(address: Address) -> None:
    if address.kind == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(address.path))
        return
    socket.create_connection((str(address.host), int(address.port or 0)), timeout=10).close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DAEMONS))
def test_notify_ready_watchdog_sighup_then_sigterm(name: str, short_dir: Path) -> None:
    daemon = DAEMONS[name](short_dir)
    notify = NotifySocket(str(short_dir / "notify"))
    process = _start(daemon, short_dir, notify, WATCHDOG_USEC=str(WATCHDOG_USEC))
    log = short_dir / "stderr.log"
    try:
        ready = notify.wait_for("READY=1")
        assert daemon.ready.exists()  # written before READY=1
        assert any(line.startswith("STATUS=") and "serving" in line for line in ready)
        assert json.loads(daemon.ready.read_text())["pid"] == process.pid
        listeners = _listeners(daemon.ready)
        notify.wait_for("WATCHDOG=1")

        process.send_signal(signal.SIGHUP)
        for _ in range(3):  # still alive and watched after the SIGHUP
            notify.wait_for("WATCHDOG=1")
        assert process.poll() is None, log.read_text()
        for address in listeners.values():
            _connect(address)

        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        _stop(process)
        notify.close()
    assert not daemon.ready.exists()
    for path in daemon.unix_sockets:
        assert not path.exists()
    assert f"attested {daemon.argv[0]}" in log.read_text()


@pytest.mark.parametrize("name", ["serve", "emulator"])
def test_sighup_does_not_stop_serve_or_the_emulator(name: str, short_dir: Path) -> None:
    """Without systemd: they used to take SIGHUP's default action (terminate)."""
    daemon = DAEMONS[name](short_dir)
    process = _start(daemon, short_dir, None)
    try:
        end = time.monotonic() + 60
        while not daemon.ready.exists():
            assert process.poll() is None, (short_dir / "stderr.log").read_text()
            assert time.monotonic() < end, "no ready file"
            time.sleep(0.05)
        listeners = _listeners(daemon.ready)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None
        for address in listeners.values():
            _connect(address)  # still serving
        assert "has no file to reopen" in (short_dir / "stderr.log").read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        _stop(process)


def test_abstract_notify_socket_and_no_watchdog_without_watchdog_usec(short_dir: Path) -> None:
    daemon = _relay(short_dir)
    notify = NotifySocket(f"@attested-test-{os.getpid()}-{time.monotonic_ns()}")
    process = _start(daemon, short_dir, notify)
    try:
        notify.wait_for("READY=1")
        time.sleep(0.6)  # a watchdog would have pinged by now
        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert process.wait(timeout=60) == 0
    finally:
        _stop(process)
        notify.close()
    firsts = [message[0] for message in notify.received]
    assert firsts == ["READY=1", "STOPPING=1"]


# --- in process --------------------------------------------------------------------------


class Part:
    """A part that stops serving on its own after ``lives`` looks at ``running``."""

    def __init__(self, lives: int) -> None:
        self.lives = lives
        self.stopped_with: float | None = None
        self.address = parse_address("tcp:127.0.0.1:1")

    def start(self) -> None:
        pass

    def stop(self, deadline: float = 10.0) -> bool:
        self.stopped_with = deadline
        return True

    @property
    def running(self) -> bool:
        self.lives -= 1
        return self.lives > 0

    @property
    def listeners(self) -> Mapping[str, Address]:
        return {} if self.stopped_with is not None else {"only": self.address}


def test_an_unexpected_stop_exits_3_after_stopping_the_part(short_dir: Path, monkeypatch) -> None:
    notify = NotifySocket(str(short_dir / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", notify.env)
    part = Part(lives=3)
    ready = short_dir / "ready.json"
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
    try:
        with pytest.raises(CliError, match="the part stopped unexpectedly") as raised:
            run_part(part, command="test", what="the part", ready_file=ready, deadline=4.0)
        assert raised.value.status == 3
        assert part.stopped_with == 4.0
        assert not ready.exists()
        notify.wait_for("STOPPING=1", timeout=5)
    finally:
        notify.close()
    assert [message[0] for message in notify.received] == ["READY=1", "STOPPING=1"]
    assert handlers == [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]


def test_a_start_error_is_an_environment_error_or_a_usage_error() -> None:
    class Broken(Part):
        def __init__(self, error: Exception) -> None:
            super().__init__(lives=1)
            self.error = error

        def start(self) -> None:
            raise self.error

    with pytest.raises(CliError, match="cannot start: Address already in use") as raised:
        run_part(Broken(OSError(98, "Address already in use")), command="t", what="it")
    assert raised.value.status == 3
    with pytest.raises(CliError, match="cannot start: bad TLS file") as raised:
        run_part(
            Broken(ConfigurationError("bad TLS file")),
            command="t",
            what="it",
            usage_errors=(ConfigurationError,),
        )
    assert raised.value.status == 2


@pytest.mark.parametrize(
    ("environ", "address", "interval"),
    [
        ({}, None, None),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
        ({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000"}, "\0sd", 15.0),
        ({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, "\0sd", None),
        ({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000"}, None, None),
        ({"WATCHDOG_USEC": "30000000"}, None, None),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "-5"}, "/n", None),
    ],
)
def test_the_notifier_reads_systemds_environment(
    environ: dict[str, str], address: str | None, interval: float | None, caplog
) -> None:
    notifier = Notifier(environ)
    assert notifier._address == address
    assert notifier.watchdog_interval == interval
    if address is None:
        assert notifier.notify("READY=1") is False  # nothing to send to: nothing sent


def test_a_notify_socket_that_is_gone_is_logged_not_raised(short_dir: Path, caplog) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody")})
    assert notifier.notify("READY=1", "STATUS=x") is False
    assert "cannot notify systemd (READY=1)" in caplog.text
