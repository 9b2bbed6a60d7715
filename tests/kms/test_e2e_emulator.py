"""End to end: KmsClient, real boto3 and the KMS emulator over loopback.

Documents come from the simulated NSM; the emulator verifies them against the
simulator's root and evaluates the key policy's ``kms:RecipientAttestation:*``
conditions, so these tests check what the stand-in cannot: a policy mismatch, and
throttling from the emulator's fault injection.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attested import emulator
from attested.errors import KmsAccessDenied, KmsThrottled
from attested.kms import KmsClient, NetworkSettings, RecipientKey, RetryPolicy
from attested.kms.credentials import StaticCredentials
from attested.simulator import SimulatedNsm
from tests.kit import PCR0, kms_client

pytestmark = pytest.mark.integration

ACCESS_KEY = "AKIAEMULATOREXAMPLE1"
SECRET = "emulator/secret/EXAMPLEKEYEXAMPLEKEY0"
PARENT = "arn:aws:iam::111122223333:role/parent"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def sim_nsm() -> SimulatedNsm:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SimulatedNsm(pcrs={0: PCR0})


def _config(nsm: SimulatedNsm, **faults: Any) -> Any:
    return emulator.EmulatorConfig(
        host="127.0.0.1",
        port=0,
        region=REGION,
        trust_root=nsm.trust_root,
        identities={ACCESS_KEY: emulator.Identity(secret_access_key=SECRET, arn=PARENT)},
        state_path=None,
        faults=emulator.FaultConfig(**faults),
        tls=None,
    )


@pytest.fixture
def emu(sim_nsm: SimulatedNsm) -> Iterator[Any]:
    with emulator.KmsEmulator(_config(sim_nsm)) as running:
        yield running


def _boto(emu: Any) -> Any:
    return kms_client(emu.endpoint_url, ACCESS_KEY, SECRET, region=REGION)


def _policy(pcr0_hex: str) -> str:
    attested_ops = [
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:DeriveSharedSecret",
    ]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": PARENT},
                    "Action": [
                        "kms:Encrypt",
                        "kms:DescribeKey",
                        "kms:GetPublicKey",
                        "kms:PutKeyPolicy",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "EnclaveOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": PARENT},
                    "Action": attested_ops,
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {
                            "kms:RecipientAttestation:ImageSha384": pcr0_hex,
                            "kms:RecipientAttestation:PCR0": pcr0_hex,
                        }
                    },
                },
            ],
        }
    )


def _client(emu: Any, nsm: SimulatedNsm, key: RecipientKey, **kwargs: Any) -> KmsClient:
    return KmsClient(
        region=REGION,
        attestation=nsm,
        credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET),
        recipient_key=key,
        network=NetworkSettings(endpoint_url=emu.endpoint_url),
        **kwargs,
    )


def test_all_five_operations(emu: Any, sim_nsm: SimulatedNsm, recipient_key: RecipientKey) -> None:
    boto = _boto(emu)
    key_id = boto.create_key(Policy=_policy(PCR0.hex().upper()))["KeyMetadata"]["KeyId"]
    blob = boto.encrypt(KeyId=key_id, Plaintext=b"enclave secret")["CiphertextBlob"]
    with _client(emu, sim_nsm, recipient_key) as client:
        assert client.decrypt(blob).plaintext.reveal() == b"enclave secret"

        data_key = client.generate_data_key(key_id, encryption_context={"app": "e2e"})
        again = client.decrypt(data_key.ciphertext_blob, encryption_context={"app": "e2e"})
        assert again.plaintext.equals(data_key.plaintext)

        pair = client.generate_data_key_pair(key_id, "ECC_NIST_P256")
        private = serialization.load_der_private_key(pair.private_key.reveal(), None)
        assert (
            private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == pair.public_key
        )

        assert len(client.generate_random(32)) == 32

        agreement = boto.create_key(
            Policy=_policy(PCR0.hex()), KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"
        )["KeyMetadata"]["KeyId"]
        kms_public = serialization.load_der_public_key(
            boto.get_public_key(KeyId=agreement)["PublicKey"]
        )
        assert isinstance(kms_public, ec.EllipticCurvePublicKey)
        ours = ec.generate_private_key(ec.SECP256R1())
        shared = client.derive_shared_secret(
            agreement,
            ours.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        assert shared.shared_secret.equals(ours.exchange(ec.ECDH(), kms_public))


def test_a_policy_mismatch_names_the_pcrs(
    emu: Any, sim_nsm: SimulatedNsm, recipient_key: RecipientKey
) -> None:
    boto = _boto(emu)
    other_image = "ee" * 48
    key_id = boto.create_key(Policy=_policy(other_image))["KeyMetadata"]["KeyId"]
    blob = boto.encrypt(KeyId=key_id, Plaintext=b"not for you")["CiphertextBlob"]
    with (
        _client(emu, sim_nsm, recipient_key) as client,
        pytest.raises(KmsAccessDenied) as caught,
    ):
        client.decrypt(blob)
    assert caught.value.attested is True
    assert caught.value.pcrs[0] == PCR0
    assert f"PCR0={PCR0.hex()}" in str(caught.value)


def test_throttling_is_retried_then_surfaces(
    sim_nsm: SimulatedNsm, recipient_key: RecipientKey
) -> None:
    pauses: list[float] = []
    with (
        emulator.KmsEmulator(_config(sim_nsm, throttle_rate=1.0)) as emu,
        _client(
            emu,
            sim_nsm,
            recipient_key,
            retry=RetryPolicy(max_attempts=3),
            sleep=pauses.append,
        ) as client,
        pytest.raises(KmsThrottled) as caught,
    ):
        client.generate_random(16)
    assert caught.value.attempts == 3
    assert len(pauses) == 2
