"""Fixtures for ``attested exec``: the simulated NSM, the KMS emulator as a process, moto's
server for Secrets Manager, SSM and S3, the parent's log sink, a tmpfs directory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested.exec._files import RAMFS_MAGIC, TMPFS_MAGIC, filesystem_type
from attested.net import parse_address
from attested.relay import LogSink, Relay
from tests.exec.support import Emulator, start_emulator, stop_process
from tests.kit import short_directory, simulator_state


@pytest.fixture(scope="session")
def sim_state() -> Iterator[Path]:
    """A simulated NSM state directory (its root.pem is what the emulator trusts)."""
    with simulator_state("att-exec-sim-") as path:
        yield path


@pytest.fixture(scope="session")
def emulator(sim_state: Path) -> Iterator[Emulator]:
    """``attested emulator kms`` as a real process, with a key for PCR0 and one for another."""
    log = sim_state / "emulator.log"
    running = start_emulator(sim_state, log)
    try:
        yield running
    finally:
        stop_process(running.process)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server mode (Secrets Manager, SSM, S3 over real HTTP) on loopback."""
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    with short_directory("att-exec-") as path:
        yield path


@pytest.fixture
def secret_dir() -> Iterator[Path]:
    """A fresh directory on tmpfs (``/dev/shm``), where secret files may go."""
    base = Path("/dev/shm")
    if not base.is_dir() or filesystem_type(str(base)) not in (TMPFS_MAGIC, RAMFS_MAGIC):
        pytest.skip("no tmpfs at /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="att-exec-secrets-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sink(short_dir: Path) -> Iterator[tuple[str, Path]]:
    """The parent's log sink (as ``attested parent`` [logs] runs it): address and file."""
    out = short_dir / "shipped.jsonl"
    relay = Relay([LogSink(listen=parse_address("tcp:127.0.0.1:0"), out=out)])
    (address,) = relay.start()
    try:
        yield str(address), out
    finally:
        relay.stop(5.0)
