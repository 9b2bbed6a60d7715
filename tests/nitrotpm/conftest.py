"""Fixtures: the simulated NitroTPM behind the stand-in TPM on a pty, and its device path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm, SimulatedNsm
from attested.trust import TrustRoot
from tests.kms.test_credentials import serve_imds
from tests.nitrotpm.standin import PtyTpm, StandInTpm

PCR4 = DEFAULT_NITROTPM_PCRS[4]
"""The simulated AMI's PCR4, which every document here carries."""


class Source:
    """Where the stand-ins get documents: the simulated NitroTPM, and for documents of the
    wrong kind, a simulated NSM sharing its root."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.tpm = SimulatedNitroTpm(state_dir=state)
        self.nsm = SimulatedNsm(state_dir=state)

    @property
    def trust_root(self) -> TrustRoot:
        return self.tpm.trust_root

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        return self.tpm.get_attestation_document(
            user_data=user_data, nonce=nonce, public_key=public_key
        )

    def enclave_document(self, **fields: bytes | None) -> bytes:
        return self.nsm.get_attestation_document(**fields)

    def close(self) -> None:
        self.tpm.close()
        self.nsm.close()


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    opened = Source(tmp_path_factory.mktemp("sim-state"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def tpm(source: Source) -> StandInTpm:
    return StandInTpm(source=source)


@pytest.fixture
def pty_tpm(tpm: StandInTpm) -> Iterator[PtyTpm]:
    served = PtyTpm(tpm)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def imds() -> Iterator[str]:
    """The KMS tests' IMDSv2 stand-in: the instance role's temporary credentials."""
    with serve_imds() as url:
        yield url
