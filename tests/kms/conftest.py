"""Fixtures for the KMS client tests: keys, vectors, an attestation provider, servers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from attested.kms import RecipientKey
from tests.kit import VECTORS, Kit, sidecar
from tests.kms.servers import (
    ConnectProxy,
    DocumentProvider,
    KmsStandIn,
    LocalCa,
    make_test_ca,
)

CMS = VECTORS / "cms"


@dataclass(frozen=True)
class KeyedVector:
    blob: bytes
    key: RecipientKey
    plaintext: bytes
    path: Path


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def recipient_key(rsa_key: rsa.RSAPrivateKey) -> RecipientKey:
    return RecipientKey.from_private_key(rsa_key)


@pytest.fixture(scope="session")
def edgebit() -> KeyedVector:
    path = CMS / "kms_recipient_edgebit.der"
    private = load_pem_private_key((CMS / "kms_recipient_edgebit_key.pem").read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return KeyedVector(
        blob=path.read_bytes(),
        key=RecipientKey.from_private_key(private),
        plaintext=bytes.fromhex(sidecar(path)["expected_plaintext_hex"]),
        path=path,
    )


@pytest.fixture
def provider(kit: Kit) -> DocumentProvider:
    """A fresh provider (call counts start at zero) signing with the session test PKI."""
    return DocumentProvider(kit)


@pytest.fixture
def kms() -> Iterator[KmsStandIn]:
    """A KMS stand-in over plain HTTP on 127.0.0.1."""
    with KmsStandIn() as server:
        yield server


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def kms_tls(test_ca: LocalCa) -> Iterator[KmsStandIn]:
    """A KMS stand-in over HTTPS with a certificate for kms.us-east-1.amazonaws.com."""
    with KmsStandIn(tls=test_ca) as server:
        yield server


@pytest.fixture
def connect_proxy(kms_tls: KmsStandIn) -> Iterator[ConnectProxy]:
    """An HTTP CONNECT proxy that sends kms.us-east-1.amazonaws.com:443 to ``kms_tls``."""
    assert kms_tls.port is not None
    with ConnectProxy({("kms.us-east-1.amazonaws.com", 443): ("127.0.0.1", kms_tls.port)}) as p:
        yield p
