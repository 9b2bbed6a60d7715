"""Issue 20's "done when" for NitroTPM key policies, end to end with real processes.

``attested keypolicy generate --nitrotpm`` (run as the CLI) turns an Attestable AMI's
``tpm_pcr.json`` into a key policy; ``attested keypolicy lint`` finds it clean; the KMS
emulator (a real HTTP server) enforces it: a simulated NitroTPM instance at the measured
PCRs decrypts, one whose PCR4 differs is denied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested import emulator, pcr
from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm
from tests.emulator.envelope import open_envelope
from tests.kit import kms_client

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "111122223333"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/key-admin"
INSTANCE = f"arn:aws:iam::{ACCOUNT}:role/app-instance"
PRODUCER = f"arn:aws:iam::{ACCOUNT}:role/data-producer"
ADMIN_KEY, ADMIN_SECRET = "AKIAADMINEXAMPLE0001", "admin/secret/EXAMPLE0000000000000000"
INSTANCE_KEY, INSTANCE_SECRET = "AKIAINSTANCEEXAMPLE1", "instance/secret/EXAMPLE0000000000000"
PRODUCER_KEY, PRODUCER_SECRET = "AKIAPRODUCEREXAMPLE1", "producer/secret/EXAMPLE0000000000000"
SECRET = b"the instance's database password"
ROOT = Path(__file__).resolve().parents[2]


def attested(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "attested", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tpm_pcr_json(path: Path) -> Path:
    """The AMI build's measurements for the simulator's default AMI."""
    measurements = {
        "HashAlgorithm": "SHA384",
        **{f"PCR{i}": DEFAULT_NITROTPM_PCRS[i].hex() for i in (4, 7, 12)},
    }
    path.write_text(json.dumps({"Measurements": measurements}, indent=2))
    return path


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("simulated-nitrotpm")


@pytest.fixture(scope="module")
def instances(state: Path) -> Iterator[list[SimulatedNitroTpm]]:
    made: list[SimulatedNitroTpm] = []
    yield made
    for tpm in made:
        tpm.close()


def instance(state: Path, made: list[SimulatedNitroTpm], **pcrs: bytes) -> SimulatedNitroTpm:
    """An instance of the measured AMI, with ``pcrs`` (``pcr4=...``) changed."""
    values = dict(DEFAULT_NITROTPM_PCRS)
    for name, value in pcrs.items():
        values[int(name.removeprefix("pcr"))] = value
    tpm = SimulatedNitroTpm(pcrs=values, state_dir=state)
    made.append(tpm)
    return tpm


@pytest.fixture(scope="module")
def emu(state: Path, instances: list[SimulatedNitroTpm]) -> Iterator[emulator.KmsEmulator]:
    root = instance(state, instances).trust_root
    config = emulator.EmulatorConfig(
        host="127.0.0.1",
        port=0,
        region=REGION,
        account_id=ACCOUNT,
        trust_root=root,
        identities={
            ADMIN_KEY: emulator.Identity(secret_access_key=ADMIN_SECRET, arn=ADMIN),
            INSTANCE_KEY: emulator.Identity(secret_access_key=INSTANCE_SECRET, arn=INSTANCE),
            PRODUCER_KEY: emulator.Identity(secret_access_key=PRODUCER_SECRET, arn=PRODUCER),
        },
    )
    with emulator.KmsEmulator(config) as running:
        yield running


def boto(emu: emulator.KmsEmulator, key: str, secret: str) -> Any:
    return kms_client(emu.endpoint_url, key, secret, region=REGION)


def test_generated_nitrotpm_policy_lints_clean_and_the_emulator_enforces_it(
    tmp_path: Path, state: Path, instances: list[SimulatedNitroTpm], emu: emulator.KmsEmulator
) -> None:
    measurements = tpm_pcr_json(tmp_path / "tpm_pcr.json")
    policy_file = tmp_path / "policy.json"
    generated = attested(
        "keypolicy", "generate", "--nitrotpm",
        "--measurements", str(measurements),
        "--account", ACCOUNT,
        "--instance-role", INSTANCE,
        "--admin-role", ADMIN,
        "--encryptor", PRODUCER,
        "--deny-without-attestation",
        "--output", str(policy_file),
        cwd=ROOT,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr == ""
    policy = json.loads(policy_file.read_text())
    (attested_statement,) = [
        s for s in policy["Statement"] if s["Sid"] == "InstanceAttestedOperations"
    ]
    assert attested_statement["Condition"] == {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:NitroTPMPCR4": DEFAULT_NITROTPM_PCRS[4].hex(),
            "kms:RecipientAttestation:NitroTPMPCR12": pcr.ZERO.hex(),
        }
    }

    linted = attested("keypolicy", "lint", str(policy_file), "--json", cwd=ROOT)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert json.loads(linted.stdout)["findings"] == []

    admin = boto(emu, ADMIN_KEY, ADMIN_SECRET)
    producer = boto(emu, PRODUCER_KEY, PRODUCER_SECRET)
    app = boto(emu, INSTANCE_KEY, INSTANCE_SECRET)
    try:
        key = admin.create_key(Policy=policy_file.read_text())["KeyMetadata"]["Arn"]
        blob = producer.encrypt(KeyId=key, Plaintext=SECRET)["CiphertextBlob"]
        recipient_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = recipient_key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )

        def recipient(tpm: SimulatedNitroTpm) -> dict[str, Any]:
            return {
                "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                "AttestationDocument": tpm.get_attestation_document(public_key=spki),
            }

        # The measured AMI: the secret comes back, only in the envelope.
        measured = instance(state, instances)
        answer = app.decrypt(CiphertextBlob=blob, Recipient=recipient(measured))
        assert "Plaintext" not in answer
        assert open_envelope(answer["CiphertextForRecipient"], recipient_key) == SECRET

        # Another AMI (PCR4 differs): denied as KMS words it.
        other = instance(state, instances, pcr4=pcr.measure(b"another AMI's kernel image"))
        with pytest.raises(ClientError) as info:
            app.decrypt(CiphertextBlob=blob, Recipient=recipient(other))
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"
        message = info.value.response["Error"]["Message"]
        assert message.endswith(
            f"is not authorized to perform: kms:Decrypt on resource: {key} because no "
            "resource-based policy allows the kms:Decrypt action"
        )
        # No document at all: the explicit Deny.
        with pytest.raises(ClientError) as info:
            app.decrypt(CiphertextBlob=blob)
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    finally:
        for client in (admin, producer, app):
            client.close()
