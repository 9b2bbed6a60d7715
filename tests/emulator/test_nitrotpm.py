"""NitroTPM documents in ``Recipient``, over real HTTP with unmodified boto3.

AWS KMS takes an EC2 instance's NitroTPM document in ``Recipient`` as it takes an
enclave's; the condition keys ``kms:RecipientAttestation:NitroTPMPCR<n>`` come from it, and
the enclave keys (``ImageSha384``, ``PCR<n>``) do not, nor the reverse (ADR 0133). The
documents come from :class:`attested.simulator.SimulatedNitroTpm` and
:class:`attested.simulator.SimulatedNsm` sharing one simulated root.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested import pcr
from attested.emulator import DEV_ARN, EmulatorConfig, KmsEmulator
from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm, SimulatedNsm
from tests.emulator.conftest import OAEP, ROOT_ARN, Enclave, client
from tests.emulator.envelope import open_envelope

TPM = "kms:RecipientAttestation:NitroTPMPCR"
AMI_PCR4 = pcr.measure(b"the AMI's unified kernel image")
OTHER_PCR4 = pcr.measure(b"someone else's unified kernel image")
IMAGE_PCR0 = pcr.measure(b"the enclave image")
SECRET = b"the instance's database password"


class Instances:
    """Simulated NitroTPM instances and an enclave under one simulated root."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.spki = self.key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.nsm = SimulatedNsm(pcrs={0: IMAGE_PCR0}, state_dir=state)
        self.opened: list[Any] = [self.nsm]

    def tpm(self, pcr4: bytes = AMI_PCR4) -> SimulatedNitroTpm:
        """An instance whose firmware measured ``pcr4`` (PCR12 zero, Secure Boot off)."""
        tpm = SimulatedNitroTpm(pcrs={**DEFAULT_NITROTPM_PCRS, 4: pcr4}, state_dir=self.state)
        self.opened.append(tpm)
        return tpm

    def instance_recipient(self, pcr4: bytes = AMI_PCR4) -> dict[str, Any]:
        document = self.tpm(pcr4).get_attestation_document(public_key=self.spki)
        return {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": document}

    def enclave_recipient(self) -> dict[str, Any]:
        document = self.nsm.get_attestation_document(public_key=self.spki)
        return {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": document}

    def close(self) -> None:
        for module in self.opened:
            module.close()


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    made = Instances(tmp_path_factory.mktemp("sim"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def running(instances: Instances) -> Iterator[KmsEmulator]:
    with KmsEmulator(EmulatorConfig(trust_root=instances.nsm.trust_root)) as emulator:
        yield emulator


@pytest.fixture
def kms(running: KmsEmulator) -> Iterator[Any]:
    boto = client(running.endpoint_url)
    yield boto
    boto.close()


def policy(condition: dict[str, Any]) -> str:
    """The account administers the key; the caller decrypts with ``condition`` only."""
    actions = ["kms:Decrypt", "kms:GenerateDataKey"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": ROOT_ARN},
                    "NotAction": actions,
                    "Resource": "*",
                },
                {
                    "Sid": "Attested",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": actions,
                    "Resource": "*",
                    "Condition": {"StringEqualsIgnoreCase": condition},
                },
            ],
        }
    )


NITROTPM_PINS = {f"{TPM}4": AMI_PCR4.hex(), f"{TPM}12": pcr.ZERO.hex()}
ENCLAVE_PINS = {"kms:RecipientAttestation:ImageSha384": IMAGE_PCR0.hex()}


def sealed(kms: Any, condition: dict[str, Any]) -> tuple[str, bytes]:
    key = kms.create_key(Policy=policy(condition))["KeyMetadata"]["Arn"]
    return key, kms.encrypt(KeyId=key, Plaintext=SECRET)["CiphertextBlob"]


def denied(call: Callable[[], object]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(info.value.response["Error"]["Message"])


def test_the_measured_instance_decrypts_and_another_pcr4_is_denied(
    kms: Any, instances: Instances
) -> None:
    key, blob = sealed(kms, NITROTPM_PINS)
    answer = kms.decrypt(CiphertextBlob=blob, Recipient=instances.instance_recipient())
    assert "Plaintext" not in answer
    assert open_envelope(answer["CiphertextForRecipient"], instances.key) == SECRET
    other = instances.instance_recipient(OTHER_PCR4)
    message = denied(lambda: kms.decrypt(CiphertextBlob=blob, Recipient=other))
    assert message == (
        f"User: {DEV_ARN} is not authorized to perform: kms:Decrypt on resource: {key} "
        "because no resource-based policy allows the kms:Decrypt action"
    )
    # GenerateDataKey too: the data key comes back only in the envelope.
    data_key = kms.generate_data_key(
        KeyId=key, KeySpec="AES_256", Recipient=instances.instance_recipient()
    )
    assert "Plaintext" not in data_key
    assert len(open_envelope(data_key["CiphertextForRecipient"], instances.key)) == 32
    denied(lambda: kms.decrypt(CiphertextBlob=blob))  # no document: no NitroTPM keys


def test_an_extended_pcr12_is_denied(kms: Any, instances: Instances) -> None:
    """The GHSA case: the pinned image with a command line of someone else's."""
    _, blob = sealed(kms, NITROTPM_PINS)
    tpm = instances.tpm()
    tpm.extend_pcr(12, b"init=/bin/sh")
    recipient = {
        "KeyEncryptionAlgorithm": OAEP,
        "AttestationDocument": tpm.get_attestation_document(public_key=instances.spki),
    }
    denied(lambda: kms.decrypt(CiphertextBlob=blob, Recipient=recipient))


def test_an_enclave_key_refuses_an_instance_and_an_instance_key_refuses_an_enclave(
    kms: Any, instances: Instances
) -> None:
    _, enclave_blob = sealed(kms, ENCLAVE_PINS)
    _, instance_blob = sealed(kms, NITROTPM_PINS)
    # Each kind opens its own key...
    answer = kms.decrypt(CiphertextBlob=enclave_blob, Recipient=instances.enclave_recipient())
    assert open_envelope(answer["CiphertextForRecipient"], instances.key) == SECRET
    answer = kms.decrypt(CiphertextBlob=instance_blob, Recipient=instances.instance_recipient())
    assert open_envelope(answer["CiphertextForRecipient"], instances.key) == SECRET
    # ... and not the other kind's.
    instance = instances.instance_recipient()
    denied(lambda: kms.decrypt(CiphertextBlob=enclave_blob, Recipient=instance))
    enclave = instances.enclave_recipient()
    denied(lambda: kms.decrypt(CiphertextBlob=instance_blob, Recipient=enclave))


def test_enclave_pcr_keys_never_match_an_instance_document(kms: Any, instances: Instances) -> None:
    """Even with the very values the instance's NitroTPM PCRs have."""
    same_values = {"kms:RecipientAttestation:PCR4": AMI_PCR4.hex()}
    _, blob = sealed(kms, same_values)
    instance = instances.instance_recipient()
    denied(lambda: kms.decrypt(CiphertextBlob=blob, Recipient=instance))
    # IfExists on an enclave key holds for an instance document, which has none (IAM).
    lenient = json.loads(policy(NITROTPM_PINS))
    lenient["Statement"][1]["Condition"]["StringEqualsIgnoreCaseIfExists"] = ENCLAVE_PINS
    key = kms.create_key(Policy=json.dumps(lenient))["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=SECRET)["CiphertextBlob"]
    answer = kms.decrypt(CiphertextBlob=blob, Recipient=instances.instance_recipient())
    assert open_envelope(answer["CiphertextForRecipient"], instances.key) == SECRET


def test_secure_boot_off_pcr7_is_what_the_simulator_reports(kms: Any, instances: Instances) -> None:
    """A policy pinning only the Secure-Boot-off PCR7 admits any AMI (the lint rule's case)."""
    _, blob = sealed(kms, {f"{TPM}7": pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex()})
    anyone = instances.instance_recipient(OTHER_PCR4)
    answer = kms.decrypt(CiphertextBlob=blob, Recipient=anyone)
    assert open_envelope(answer["CiphertextForRecipient"], instances.key) == SECRET


def test_a_document_from_another_root_is_refused(
    kms: Any, tmp_path: Path, instances: Instances
) -> None:
    _, blob = sealed(kms, NITROTPM_PINS)
    stranger = SimulatedNitroTpm(
        pcrs={**DEFAULT_NITROTPM_PCRS, 4: AMI_PCR4}, state_dir=tmp_path / "other"
    )
    try:
        document = stranger.get_attestation_document(public_key=instances.spki)
    finally:
        stranger.close()
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": document}
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "certificate chain is not valid" in info.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p.__setitem__("nitrotpm_pcrs", p["pcrs"]), "both 'pcrs' and 'nitrotpm_pcrs'"),
        (lambda p: p.pop("pcrs"), "neither 'pcrs' (a Nitro Enclave's document) nor"),
    ],
    ids=["both", "neither"],
)
def test_a_document_with_both_pcr_maps_or_neither_is_refused(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], change: Any, words: str
) -> None:
    emulator = start_emulator(EmulatorConfig(trust_root=enclave.kit.root))
    boto = client(emulator.endpoint_url)
    try:
        key = boto.create_key(Policy=policy(NITROTPM_PINS))["KeyMetadata"]["Arn"]
        blob = boto.encrypt(KeyId=key, Plaintext=SECRET)["CiphertextBlob"]
        payload = enclave.kit.payload(public_key=enclave.spki)
        change(payload)
        recipient = {
            "KeyEncryptionAlgorithm": OAEP,
            "AttestationDocument": enclave.kit.document(payload),
        }
        with pytest.raises(ClientError) as info:
            boto.decrypt(CiphertextBlob=blob, Recipient=recipient)
    finally:
        boto.close()
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert words in info.value.response["Error"]["Message"]
