"""Fixtures for the attested TLS tests: simulated enclaves A and B, an app, an ingress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from attested import Policy, Verifier
from attested.net import parse_address
from attested.simulator import SimulatedNsm
from attested.tls import AttestedTlsIngress, PeerCheck
from tests.kit import simulator_state
from tests.tls.support import OTHER_PCR0, PCR0, http_app


@pytest.fixture(scope="session")
def sim_state() -> Iterator[Path]:
    """A simulated NSM state directory (its root.pem is what the emulator trusts)."""
    with simulator_state("att-tls-sim-") as path:
        yield path


@pytest.fixture(scope="session")
def enclave_a(sim_state: Path) -> Iterator[SimulatedNsm]:
    with SimulatedNsm(state_dir=sim_state, pcrs={0: PCR0}) as nsm:
        yield nsm


@pytest.fixture(scope="session")
def enclave_b(sim_state: Path) -> Iterator[SimulatedNsm]:
    """Another enclave image (another PCR0) under the same simulated root."""
    with SimulatedNsm(state_dir=sim_state, pcrs={0: OTHER_PCR0}) as nsm:
        yield nsm


@pytest.fixture(scope="session")
def app_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with http_app(tmp_path_factory.mktemp("site")) as port:
        yield port


@pytest.fixture(scope="session")
def ingress_a(enclave_a: SimulatedNsm, app_port: int) -> Iterator[AttestedTlsIngress]:
    """Enclave A's attested ingress in front of the unmodified app."""
    ingress = AttestedTlsIngress(
        listen=parse_address("tcp:127.0.0.1:0"),
        to=parse_address(f"tcp:127.0.0.1:{app_port}"),
        attestation=enclave_a,
    )
    with ingress:
        yield ingress


@pytest.fixture
def check_a(enclave_a: SimulatedNsm) -> PeerCheck:
    """A relying party expecting enclave A's image."""
    return PeerCheck(Verifier(trust_root=enclave_a.trust_root), Policy(pcrs={0: PCR0}))
