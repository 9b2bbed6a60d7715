"""Fixtures for the KMS emulator: a simulated enclave PKI valid now, a running emulator,
boto3 clients against it, and attestation documents carrying a recipient key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.model import OperationModel
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested.emulator import (
    DEV_ACCESS_KEY_ID,
    DEV_ARN,
    DEV_SECRET_ACCESS_KEY,
    EmulatorConfig,
    KmsEmulator,
)
from attested.simulator._pki import CertifiedKey
from tests.emulator.modelcheck import answer_problems
from tests.kit import PCR0, PCR8, Kit, make_kit

REGION = "us-east-1"
ACCOUNT = "111122223333"
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
OAEP = "RSAES_OAEP_SHA_256"

# One boto3 session for the whole run: its model loader is shared, so clients are cheap.
_SESSION = boto3.session.Session()


@dataclass
class Enclave:
    """A simulated enclave: a PKI valid now and an RSA-2048 recipient key."""

    kit: Kit
    key: rsa.RSAPrivateKey

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    def document(
        self,
        *,
        pcrs: Mapping[int, bytes] | None = None,
        public_key: bytes | None = None,
        leaf: CertifiedKey | None = None,
    ) -> bytes:
        """A document made now, with this enclave's PCRs (or ``pcrs`` merged in)."""
        payload = self.kit.payload(
            timestamp=int(time.time() * 1000),
            public_key=self.spki if public_key is None else public_key,
        )
        if pcrs is not None:
            payload["pcrs"] = {**payload["pcrs"], **pcrs}  # type: ignore[dict-item]
        if leaf is not None:
            payload["certificate"] = leaf.der
        return self.kit.document(payload, key=None if leaf is None else leaf.private_key)

    def recipient(self, **kwargs: Any) -> dict[str, Any]:
        return {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": self.document(**kwargs)}


@pytest.fixture(scope="session")
def enclave() -> Enclave:
    return Enclave(
        kit=make_kit(datetime.now(UTC)),
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def client(
    endpoint: str,
    *,
    access_key: str = DEV_ACCESS_KEY_ID,
    secret: str = DEV_SECRET_ACCESS_KEY,
    token: str | None = None,
    region: str = REGION,
    attempts: int = 1,
    **config: Any,
) -> Any:
    """A boto3 KMS client; retries off unless ``attempts`` says otherwise.

    Every raw answer it receives is checked against botocore's KMS model
    (:mod:`tests.emulator.modelcheck`): a member the model does not define fails the test.
    """
    kms = _SESSION.client(
        "kms",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}, **config),
    )
    kms.meta.events.register("before-parse.kms", _check_answer_against_model)
    return kms


def _check_answer_against_model(
    operation_model: OperationModel, response_dict: dict[str, Any], **_: Any
) -> None:
    problems = answer_problems(operation_model, response_dict["status_code"], response_dict["body"])
    assert not problems, f"{operation_model.name}: {problems}"


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., KmsEmulator]]:
    """Start emulators with a given configuration; every one is stopped afterwards."""
    started: list[KmsEmulator] = []

    def start(config: EmulatorConfig) -> KmsEmulator:
        emulator = KmsEmulator(config).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(enclave: Enclave, start_emulator: Callable[..., KmsEmulator]) -> KmsEmulator:
    return start_emulator(EmulatorConfig(trust_root=enclave.kit.root))


@pytest.fixture
def kms(emulator: KmsEmulator) -> Any:
    return client(emulator.endpoint_url)


def pinned_policy(
    *,
    pcr0: bytes = PCR0,
    pcr8: bytes = PCR8,
    actions: tuple[str, ...] = (
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:DeriveSharedSecret",
    ),
    extra: tuple[dict[str, Any], ...] = (),
) -> str:
    """An admin statement for the account (everything but the enclave actions) and an
    enclave statement pinning PCR0 and PCR8, as the Nitro user guide recommends."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Admin",
            "Effect": "Allow",
            "Principal": {"AWS": ROOT_ARN},
            "NotAction": list(actions),
            "Resource": "*",
        },
        {
            "Sid": "Enclave",
            "Effect": "Allow",
            "Principal": {"AWS": DEV_ARN},
            "Action": list(actions),
            "Resource": "*",
            "Condition": {
                "StringEqualsIgnoreCase": {
                    "kms:RecipientAttestation:ImageSha384": pcr0.hex(),
                    "kms:RecipientAttestation:PCR0": pcr0.hex(),
                    "kms:RecipientAttestation:PCR8": pcr8.hex(),
                }
            },
        },
        *extra,
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
