"""A test PKI with the AWS profile and a modify-and-re-sign helper for documents."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attested import _cose
from attested.simulator._document import build_payload, encode_payload, sign_payload
from attested.simulator._pki import CertifiedKey, NitroLikePki, build_pki
from attested.trust import TrustRoot

VECTORS = Path(__file__).parent / "vectors"

# A fixed clock for synthetic documents: every test names its time explicitly.
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

PCR0 = bytes.fromhex("aa" * 48)
PCR1 = bytes.fromhex("bb" * 48)
PCR2 = bytes.fromhex("cc" * 48)
PCR8 = bytes.fromhex("dd" * 48)


def real_vectors() -> list[Path]:
    """Every real attestation document from Nitro hardware."""
    return sorted((VECTORS / "attestation").glob("real_attestation_*.cbor"))


def sidecar(path: Path) -> dict[str, Any]:
    """The provenance and expected values of a vector."""
    result: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return result


@dataclass
class Kit:
    """A Nitro-shaped PKI, a leaf, and helpers to build (broken) documents."""

    pki: NitroLikePki
    leaf: CertifiedKey

    @property
    def root(self) -> TrustRoot:
        return TrustRoot((self.pki.root.certificate,), "test root")

    def payload(self, **overrides: object) -> dict[str, object]:
        """A valid payload at T0, with fields replaced by ``overrides``."""
        payload = build_payload(
            module_id="i-0test0000000000000-enc0000000000000001",
            timestamp=T0,
            pcrs={i: bytes(48) for i in range(16)} | {0: PCR0, 1: PCR1, 2: PCR2, 8: PCR8},
            certificate=self.leaf.der,
            cabundle=self.pki.cabundle(),
            public_key=None,
            user_data=None,
            nonce=None,
        )
        payload.update(overrides)
        return payload

    def document(
        self,
        payload: Mapping[Any, Any] | bytes | None = None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        protected: bytes = _cose.PROTECTED_ES384,
        tagged: bool = False,
        indefinite: bool = False,
    ) -> bytes:
        """Encode and sign ``payload`` (the default payload if ``None``) with the leaf key."""
        body: Mapping[Any, Any] | bytes = self.payload() if payload is None else payload
        if indefinite and not isinstance(body, bytes):
            body = encode_payload(body, indefinite=True)
        return sign_payload(body, key or self.leaf.private_key, protected=protected, tagged=tagged)

    def modified(self, change: Callable[[dict[str, object]], None]) -> bytes:
        """A valid payload changed by ``change`` and re-signed with the leaf key."""
        payload = self.payload()
        change(payload)
        return self.document(payload)


def make_kit(now: datetime = T0) -> Kit:
    """A fresh PKI valid at ``now`` and a leaf issued 10 minutes before it."""
    pki = build_pki(now=now)
    leaf = pki.issue_leaf(enclave_id="enc0000000000000001", not_before=now - timedelta(minutes=10))
    return Kit(pki, leaf)


def der(cert: CertifiedKey) -> bytes:
    return cert.certificate.public_bytes(Encoding.DER)


@contextlib.contextmanager
def short_directory(prefix: str) -> Iterator[Path]:
    """A new directory under /tmp, removed afterwards: short enough for Unix socket paths
    (107 bytes), which pytest's ``tmp_path`` may exceed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def simulator_state(prefix: str) -> Iterator[Path]:
    """A simulated NSM state directory with its root made (the emulator trusts root.pem)."""
    from attested.simulator import SimulatedNsm

    with short_directory(prefix) as path:
        SimulatedNsm(state_dir=path).close()
        yield path


def kms_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    *,
    region: str = "us-east-1",
    session_token: str | None = None,
    verify: str | bool | None = None,
) -> Any:
    """A boto3 KMS client for a local endpoint (the emulator), one attempt per call."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kms",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        verify=verify,
        config=Config(retries={"total_max_attempts": 1}),
    )
