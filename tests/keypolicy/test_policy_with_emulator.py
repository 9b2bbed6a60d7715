"""Generated key policies, enforced by the KMS emulator, against simulated enclaves.

The policy comes from `generate_policy` with the simulated enclave's measurements; the
emulator evaluates its `kms:RecipientAttestation:*` conditions on verified documents;
the enclave side is the real KmsClient with real boto3 over loopback.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attested import emulator, pcr
from attested.errors import ConfigurationError, KmsAccessDenied
from attested.keypolicy import (
    MeasurementSet,
    Severity,
    generate_policy,
    lint_policy,
    parse_policy,
    render_policy,
)
from attested.kms import KmsClient, NetworkSettings, RecipientKey
from attested.kms.credentials import StaticCredentials
from attested.simulator import SimulatedNsm
from tests.kit import kms_client

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "111122223333"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/key-admin"
ENCLAVE = f"arn:aws:iam::{ACCOUNT}:role/enclave-parent"
ADMIN_KEY, ADMIN_SECRET = "AKIAADMINEXAMPLE0001", "admin/secret/EXAMPLE0000000000000000"
ENCLAVE_KEY, ENCLAVE_SECRET = "AKIAENCLAVEEXAMPLE01", "enclave/secret/EXAMPLE00000000000000"
PRODUCER = f"arn:aws:iam::{ACCOUNT}:role/data-producer"
PRODUCER_KEY, PRODUCER_SECRET = "AKIAPRODUCEREXAMPLE1", "producer/secret/EXAMPLE0000000000000"

IMAGE = {
    0: pcr.measure(b"image"),
    1: pcr.measure(b"kernel"),
    2: pcr.measure(b"application"),
    8: pcr.measure(b"signing certificate"),
}


def _nsm(state: Path, **changes: bytes) -> SimulatedNsm:
    """A simulated enclave; all of them share one root through the state directory."""
    pcrs = dict(IMAGE)
    for name, value in changes.items():
        pcrs[int(name.removeprefix("pcr"))] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SimulatedNsm(pcrs=pcrs, state_dir=state)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("simulated-nsm")


@pytest.fixture(scope="module")
def good(state: Path) -> SimulatedNsm:
    return _nsm(state)


@pytest.fixture(scope="module")
def emu(good: SimulatedNsm) -> Iterator[emulator.KmsEmulator]:
    config = emulator.EmulatorConfig(
        host="127.0.0.1",
        port=0,
        region=REGION,
        trust_root=good.trust_root,
        identities={
            ADMIN_KEY: emulator.Identity(secret_access_key=ADMIN_SECRET, arn=ADMIN),
            ENCLAVE_KEY: emulator.Identity(secret_access_key=ENCLAVE_SECRET, arn=ENCLAVE),
            PRODUCER_KEY: emulator.Identity(secret_access_key=PRODUCER_SECRET, arn=PRODUCER),
        },
    )
    with emulator.KmsEmulator(config) as running:
        yield running


@pytest.fixture(scope="module")
def key_arn(emu: emulator.KmsEmulator) -> str:
    policy = generate_policy(
        account=ACCOUNT,
        enclave_role=ENCLAVE,
        admin_role=ADMIN,
        measurements=[MeasurementSet(pcrs=IMAGE, source="test image")],
        encryptors=[PRODUCER],
        deny_without_attestation=True,
    )
    findings = lint_policy(parse_policy(policy))
    assert not [f for f in findings if f.severity is Severity.ERROR], findings
    admin = _boto(emu, ADMIN_KEY, ADMIN_SECRET)
    arn: str = admin.create_key(Policy=render_policy(policy))["KeyMetadata"]["Arn"]
    admin.close()
    return arn


def _boto(emu: emulator.KmsEmulator, key: str, secret: str) -> Any:
    return kms_client(emu.endpoint_url, key, secret, region=REGION)


def _client(emu: emulator.KmsEmulator, nsm: SimulatedNsm) -> KmsClient:
    return KmsClient(
        region=REGION,
        attestation=nsm,
        credentials=StaticCredentials(access_key_id=ENCLAVE_KEY, secret_access_key=ENCLAVE_SECRET),
        recipient_key=RecipientKey.process_default(),
        network=NetworkSettings(endpoint_url=emu.endpoint_url),
    )


def test_generated_policy_pins_every_image_pcr(key_arn: str) -> None:
    policy = generate_policy(
        account=ACCOUNT,
        enclave_role=ENCLAVE,
        admin_role=ADMIN,
        measurements=[MeasurementSet(pcrs=IMAGE)],
    )
    text = json.dumps(policy)
    for index in (0, 1, 2, 8):
        assert f"kms:RecipientAttestation:PCR{index}" in text
    assert "kms:RecipientAttestation:ImageSha384" in text


def test_the_measured_enclave_gets_its_data_key(emu, key_arn, good) -> None:
    with _client(emu, good) as client:
        data_key = client.generate_data_key(key_arn)
        again = client.decrypt(data_key.ciphertext_blob)
    assert again.plaintext.equals(data_key.plaintext)
    assert len(data_key.plaintext) == 32


@pytest.mark.parametrize(
    "changes",
    [
        {"pcr0": pcr.measure(b"another image")},
        {"pcr8": pcr.measure(b"another signer")},
        {"pcr2": pcr.measure(b"another application")},
        {"pcr0": pcr.ZERO, "pcr1": pcr.ZERO, "pcr2": pcr.ZERO},  # debug mode
    ],
    ids=["other-pcr0", "other-pcr8", "other-pcr2", "debug-mode"],
)
def test_other_enclaves_are_denied(emu, key_arn, good, state, changes) -> None:
    with _client(emu, good) as client:
        blob = client.generate_data_key(key_arn).ciphertext_blob
    with _client(emu, _nsm(state, **changes)) as client, pytest.raises(KmsAccessDenied) as info:
        client.decrypt(blob)
    assert info.value.attested is True
    assert info.value.pcrs[0] == (changes.get("pcr0") or IMAGE[0])


def test_a_producer_encrypts_only_the_enclave_decrypts(emu, key_arn, good) -> None:
    producer = _boto(emu, PRODUCER_KEY, PRODUCER_SECRET)
    blob = producer.encrypt(KeyId=key_arn, Plaintext=b"card 4111")["CiphertextBlob"]
    with pytest.raises(producer.exceptions.ClientError) as info:
        producer.decrypt(CiphertextBlob=blob)
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    producer.close()
    with _client(emu, good) as client:
        assert client.decrypt(blob).plaintext.equals(b"card 4111")


def test_no_attestation_is_denied(emu, key_arn) -> None:
    plain = _boto(emu, ENCLAVE_KEY, ENCLAVE_SECRET)
    with pytest.raises(plain.exceptions.ClientError) as info:
        plain.generate_data_key(KeyId=key_arn, KeySpec="AES_256")
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "explicit deny" in info.value.response["Error"]["Message"]
    plain.close()


def test_debug_values_are_refused_by_the_generator() -> None:
    debug = dict(IMAGE) | {0: pcr.ZERO, 1: pcr.ZERO, 2: pcr.ZERO}
    with pytest.raises(ConfigurationError, match=r"(?i)debug|zero"):
        generate_policy(
            account=ACCOUNT,
            enclave_role=ENCLAVE,
            admin_role=ADMIN,
            measurements=[MeasurementSet(pcrs=debug)],
        )
