"""Fixtures for the service tests: simulated NSM state, the KMS emulator, keys, services."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attested import emulator
from attested.kms.credentials import StaticCredentials
from attested.service import Service, ServiceConfig
from attested.simulator import SimulatedNsm
from tests.kit import kms_client, short_directory, simulator_state
from tests.service.helpers import (
    ACCESS_KEY,
    OTHER_PCR0,
    PCR0,
    REGION,
    SECRET,
    emulator_config,
    key_policy,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    with short_directory("att-svc-") as path:
        yield path


@pytest.fixture(scope="session")
def sim_state() -> Iterator[Path]:
    """A simulated NSM state directory (its root.pem is what the emulator trusts)."""
    with simulator_state("att-sim-") as path:
        yield path


@pytest.fixture(scope="session")
def sim_nsm(sim_state: Path) -> Iterator[SimulatedNsm]:
    nsm = SimulatedNsm(state_dir=sim_state, pcrs={0: PCR0})
    yield nsm
    nsm.close()


@dataclass(frozen=True)
class Keys:
    """Keys in the emulator: ``good`` (policy matches PCR0), ``other`` (another image)."""

    good: str
    good_alias: str
    other: str
    agreement: str
    missing: str


@dataclass
class Emu:
    server: Any
    keys: Keys
    session_token: str | None = None

    @property
    def endpoint_url(self) -> str:
        return str(self.server.endpoint_url)

    def boto(self) -> Any:
        return kms_client(
            self.endpoint_url, ACCESS_KEY, SECRET, region=REGION, session_token=self.session_token
        )


def make_keys(boto: Any) -> Keys:
    good = boto.create_key(Policy=key_policy(PCR0.hex()))["KeyMetadata"]["Arn"]
    boto.create_alias(AliasName="alias/service-test", TargetKeyId=good)
    alias_arn = good.split(":key/")[0] + ":alias/service-test"
    other = boto.create_key(Policy=key_policy(OTHER_PCR0.hex()))["KeyMetadata"]["Arn"]
    agreement = boto.create_key(
        Policy=key_policy(PCR0.hex()), KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"
    )["KeyMetadata"]["Arn"]
    missing = good.split(":key/")[0] + ":key/00000000-0000-0000-0000-000000000000"
    return Keys(good=good, good_alias=alias_arn, other=other, agreement=agreement, missing=missing)


@pytest.fixture(scope="module")
def emu(sim_nsm: SimulatedNsm) -> Iterator[Emu]:
    with emulator.KmsEmulator(emulator_config(sim_nsm)) as server:
        running = Emu(server=server, keys=Keys("", "", "", "", ""))
        running.keys = make_keys(running.boto())
        yield running


def service_config(emu: Emu, sim_state: Path, socket_dir: Path, **changes: Any) -> ServiceConfig:
    """A config for a service on ``socket_dir/api.sock``, simulated NSM, the emulator."""
    keys = emu.keys
    base = ServiceConfig(
        region=REGION,
        api_unix=str(socket_dir / "api.sock"),
        nsm_backend="simulated",
        nsm_simulated_state=str(sim_state),
        nsm_simulated_pcrs={0: PCR0},
        kms_endpoint_url=emu.endpoint_url,
        allowed_keys=(keys.good, keys.good_alias, keys.other, keys.agreement, keys.missing),
        credentials_source="environment",
    )
    return dataclasses.replace(base, **changes)


StartService = Callable[..., Service]


@pytest.fixture
def start_service(emu: Emu, sim_state: Path, short_dir: Path) -> Iterator[StartService]:
    """Start services (static credentials for the emulator); all are stopped at teardown."""
    started: list[Service] = []

    def start(**changes: Any) -> Service:
        config = service_config(emu, sim_state, short_dir, **changes)
        service = Service(
            config,
            credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET),
        )
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop(deadline=5.0)


@pytest.fixture
def socket_path(start_service: StartService) -> str:
    """A running service with the default test config; its socket path."""
    service = start_service()
    return str(service.listeners["unix"].path)
