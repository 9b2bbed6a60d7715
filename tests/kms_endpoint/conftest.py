"""Fixtures: the process stack (emulator and serve), and in-process services for details."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attested import emulator
from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from attested.kms.credentials import StaticCredentials
from attested.service import Service, ServiceConfig
from attested.simulator import SimulatedNsm
from tests.kit import PCR0
from tests.kms_endpoint.stack import REGION, Keys, Stack, admin_client, make_keys, start_stack, stop


@pytest.fixture(scope="session")
def state() -> Iterator[Path]:
    """A simulated NSM state directory whose root.pem the emulator trusts."""
    path = Path(tempfile.mkdtemp(prefix="att-kep-", dir="/tmp"))
    SimulatedNsm(state_dir=path / "sim", pcrs={0: PCR0}).close()
    try:
        yield path / "sim"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(state: Path) -> Iterator[Stack]:
    """``attested emulator kms`` and ``attested serve`` (with the endpoint) as processes."""
    work = Path(tempfile.mkdtemp(prefix="att-kep-", dir="/tmp"))
    running = start_stack(work, state)
    try:
        yield running
    finally:
        stop(running.serve)
        stop(running.emulator)
        shutil.rmtree(work, ignore_errors=True)


class InProcess:
    """An in-process emulator with the stack's keys, and services started against it."""

    def __init__(self, emu: emulator.KmsEmulator, keys: Keys, state: Path) -> None:
        self.emu = emu
        self.keys = keys
        self.state = state
        self.admin = admin_client(emu.endpoint_url)
        self.started: list[Service] = []

    def config(self, **changes: Any) -> ServiceConfig:
        values: dict[str, Any] = {
            "region": REGION,
            "api_unix": "",
            "api_tcp": "tcp:127.0.0.1:0",
            "nsm_backend": "simulated",
            "nsm_simulated_state": str(self.state),
            "nsm_simulated_pcrs": {0: PCR0},
            "kms_endpoint_url": self.emu.endpoint_url,
            "allowed_keys": tuple(self.keys.allowed),
            "credentials_source": "environment",
            "kms_endpoint_listen": "tcp:127.0.0.1:0",
        }
        values.update(changes)
        return ServiceConfig(**values)

    def start(self, **changes: Any) -> Service:
        service = Service(
            self.config(**changes),
            credentials=StaticCredentials(
                access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
            ),
        )
        self.started.append(service)  # stopped at teardown, even if start fails
        service.start()
        return service

    def url(self, service: Service) -> str:
        return f"http://127.0.0.1:{service.listeners['kms_endpoint'].port}"


@pytest.fixture(scope="module")
def in_process(state: Path) -> Iterator[InProcess]:
    config = emulator.EmulatorConfig(
        trust_root=_trust_root(state), region=REGION, host="127.0.0.1", port=0
    )
    with emulator.KmsEmulator(config) as emu:
        world = InProcess(emu, make_keys(admin_client(emu.endpoint_url)), state)
        try:
            yield world
        finally:
            for service in world.started:
                service.stop(deadline=5.0)


StartService = Callable[..., Service]


def _trust_root(state: Path) -> Any:
    from attested.trust import TrustRoot

    return TrustRoot.from_pem((state / "root.pem").read_bytes(), name="simulated root")
