"""Fixtures: a source of NitroTPM documents, the stand-in TPM on a pty, its device path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from attested.trust import TrustRoot
from tests.kit import Kit, make_kit
from tests.nitrotpm.standin import PtyTpm, StandInTpm

TPM_MODULE_ID = "i-0test0000000000000-tpm0000000000000000"


class KitNitroTpm:
    """NitroTPM-profile documents signed by the test kit's PKI (24 SHA-384 PCRs)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    @property
    def trust_root(self) -> TrustRoot:
        return self.kit.root

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        payload = self.kit.payload(
            module_id=TPM_MODULE_ID, user_data=user_data, nonce=nonce, public_key=public_key
        )
        del payload["pcrs"]
        payload["nitrotpm_pcrs"] = {i: bytes(48) for i in range(24)} | {4: b"\x44" * 48}
        return self.kit.document(payload)

    def enclave_document(self, **fields: bytes | None) -> bytes:
        return self.kit.document(self.kit.payload(**fields))


@pytest.fixture(scope="session")
def source() -> KitNitroTpm:
    return KitNitroTpm(make_kit())


@pytest.fixture
def tpm(source: KitNitroTpm) -> StandInTpm:
    return StandInTpm(source=source)


@pytest.fixture
def pty_tpm(tpm: StandInTpm) -> Iterator[PtyTpm]:
    served = PtyTpm(tpm)
    try:
        yield served
    finally:
        served.close()
