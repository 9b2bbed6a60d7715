"""Attestation-gated operations over real HTTP with unmodified boto3.

A key policy pins PCR0 (also as ImageSha384) and PCR8 of a simulated enclave; documents
from that enclave are honoured with a CMS envelope, everything else is refused the way
KMS refuses it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
)

from attested.emulator import DEV_ARN, EmulatorConfig, KmsEmulator
from attested.trust import TrustRoot
from tests.emulator.conftest import OAEP, Enclave, client, pinned_policy
from tests.emulator.envelope import open_envelope, split
from tests.kit import PCR0, PCR8


def error_code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


@pytest.fixture
def pinned_key(kms: Any) -> str:
    key_id: str = kms.create_key(Policy=pinned_policy())["KeyMetadata"]["KeyId"]
    return key_id


@pytest.fixture
def secret_blob(kms: Any, pinned_key: str) -> bytes:
    blob: bytes = kms.encrypt(
        KeyId=pinned_key, Plaintext=b"the database password", EncryptionContext={"app": "db"}
    )["CiphertextBlob"]
    return blob


def test_decrypt_with_matching_document_returns_only_an_envelope(
    kms: Any, enclave: Enclave, pinned_key: str, secret_blob: bytes
) -> None:
    answer = kms.decrypt(
        CiphertextBlob=secret_blob,
        EncryptionContext={"app": "db"},
        Recipient=enclave.recipient(),
    )
    assert "Plaintext" not in answer
    assert answer["KeyId"].endswith(pinned_key)
    assert answer["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    # The model: "This field is omitted if the request includes the Recipient parameter."
    assert "KeyMaterialId" not in answer
    envelope = answer["CiphertextForRecipient"]
    assert envelope[:2] == b"\x30\x80"
    assert open_envelope(envelope, enclave.key) == b"the database password"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_opens_the_envelope_from_the_wire(
    kms: Any, enclave: Enclave, secret_blob: bytes, tmp_path: Path
) -> None:
    answer = kms.decrypt(
        CiphertextBlob=secret_blob, EncryptionContext={"app": "db"}, Recipient=enclave.recipient()
    )
    (tmp_path / "env.der").write_bytes(answer["CiphertextForRecipient"])
    (tmp_path / "key.pem").write_bytes(
        enclave.key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    )
    result = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-in", "env.der", "-inkey", "key.pem"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"the database password"


def test_generate_data_key_for_recipient(kms: Any, enclave: Enclave, pinned_key: str) -> None:
    answer = kms.generate_data_key(
        KeyId=pinned_key,
        KeySpec="AES_256",
        EncryptionContext={"app": "db"},
        Recipient=enclave.recipient(),
    )
    assert "Plaintext" not in answer
    # The model: KeyMaterialId "is omitted if the request includes the Recipient parameter".
    assert "KeyMaterialId" not in answer
    data_key = open_envelope(answer["CiphertextForRecipient"], enclave.key)
    assert len(data_key) == 32
    # The CiphertextBlob decrypts (for this enclave) to the same data key.
    again = kms.decrypt(
        CiphertextBlob=answer["CiphertextBlob"],
        EncryptionContext={"app": "db"},
        Recipient=enclave.recipient(),
    )
    assert open_envelope(again["CiphertextForRecipient"], enclave.key) == data_key


def test_generate_data_key_pair_for_recipient(kms: Any, enclave: Enclave, pinned_key: str) -> None:
    answer = kms.generate_data_key_pair(
        KeyId=pinned_key, KeyPairSpec="ECC_NIST_P256", Recipient=enclave.recipient()
    )
    assert "PrivateKeyPlaintext" not in answer
    assert len(answer["KeyMaterialId"]) == 64  # documented with no omission for Recipient
    private = load_der_private_key(
        open_envelope(answer["CiphertextForRecipient"], enclave.key), None
    )
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert public == answer["PublicKey"]


def test_generate_data_key_pair_rsa_envelope_spans_several_chunks(
    kms: Any, enclave: Enclave, pinned_key: str
) -> None:
    answer = kms.generate_data_key_pair(
        KeyId=pinned_key, KeyPairSpec="RSA_2048", Recipient=enclave.recipient()
    )
    envelope = answer["CiphertextForRecipient"]
    assert len(split(envelope).chunks) == 2  # a ~1.2 KB PKCS#8 key: 1000 + the rest
    private = load_der_private_key(open_envelope(envelope, enclave.key), None)
    assert isinstance(private, rsa.RSAPrivateKey)


def test_generate_random_for_recipient(kms: Any, enclave: Enclave) -> None:
    answer = kms.generate_random(NumberOfBytes=64, Recipient=enclave.recipient())
    assert "Plaintext" not in answer
    assert len(open_envelope(answer["CiphertextForRecipient"], enclave.key)) == 64


def test_derive_shared_secret_for_recipient(kms: Any, enclave: Enclave) -> None:
    key_id = kms.create_key(
        KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT", Policy=pinned_policy()
    )["KeyMetadata"]["KeyId"]
    kms_public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(kms_public, ec.EllipticCurvePublicKey)
    mine = ec.generate_private_key(ec.SECP256R1())
    answer = kms.derive_shared_secret(
        KeyId=key_id,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=mine.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        Recipient=enclave.recipient(),
    )
    assert "SharedSecret" not in answer
    assert answer["KeyOrigin"] == "AWS_KMS"
    secret = open_envelope(answer["CiphertextForRecipient"], enclave.key)
    assert secret == mine.exchange(ec.ECDH(), kms_public)


# --- refusals ----------------------------------------------------------------------------


def _decrypt(kms: Any, blob: bytes, recipient: dict[str, Any] | None) -> Any:
    extra = {} if recipient is None else {"Recipient": recipient}
    return kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "db"}, **extra)


def test_another_image_is_denied_like_kms_denies(
    kms: Any, enclave: Enclave, pinned_key: str, secret_blob: bytes
) -> None:
    other = enclave.recipient(pcrs={0: bytes(range(48))})
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, other)
    assert error_code(info) == "AccessDeniedException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert info.value.response["Error"]["Message"] == (
        f"User: {DEV_ARN} is not authorized to perform: kms:Decrypt on resource: "
        f"{kms.describe_key(KeyId=pinned_key)['KeyMetadata']['Arn']} because no "
        "resource-based policy allows the kms:Decrypt action"
    )


def test_another_pcr8_is_denied(kms: Any, enclave: Enclave, secret_blob: bytes) -> None:
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, enclave.recipient(pcrs={8: bytes(48)}))
    assert error_code(info) == "AccessDeniedException"


def test_no_recipient_means_no_attestation_keys(kms: Any, secret_blob: bytes) -> None:
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, None)
    assert error_code(info) == "AccessDeniedException"
    with pytest.raises(ClientError) as info:
        kms.generate_data_key(KeyId=kms.list_keys()["Keys"][0]["KeyId"], NumberOfBytes=32)
    assert error_code(info) == "AccessDeniedException"


def test_expired_leaf_is_refused(kms: Any, enclave: Enclave, secret_blob: bytes) -> None:
    now = datetime.now(UTC)
    leaf = enclave.kit.pki.issue_leaf(enclave_id="expired", not_before=now - timedelta(hours=4))
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, enclave.recipient(leaf=leaf))
    assert error_code(info) == "ValidationException"
    assert "certificate chain" in info.value.response["Error"]["Message"]


def test_document_from_a_foreign_root_is_refused(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(EmulatorConfig(trust_root=TrustRoot.aws_nitro()))
    kms = client(emu.endpoint_url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]  # default policy: allows everything
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=blob, Recipient=enclave.recipient())
    assert error_code(info) == "ValidationException"
    assert "AWS Nitro Enclaves Root-G1" in info.value.response["Error"]["Message"]


def test_bad_signature_is_refused(kms: Any, enclave: Enclave, secret_blob: bytes) -> None:
    document = bytearray(enclave.document())
    document[-1] ^= 0x01  # the last byte of the ES384 signature
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": bytes(document)}
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, recipient)
    assert error_code(info) == "ValidationException"
    assert "signature" in info.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("recipient", "words"),
    [
        ({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1"}, "enum value set"),
        ({}, "KeyEncryptionAlgorithm"),
        ({"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": None}, "AttestationDocument"),
        ({"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": b"\x84garbage"}, "malformed"),
    ],
)
def test_malformed_recipients_are_validation_errors(
    kms: Any, enclave: Enclave, secret_blob: bytes, recipient: dict[str, Any], words: str
) -> None:
    recipient = dict(recipient)
    if "AttestationDocument" not in recipient:
        recipient["AttestationDocument"] = enclave.document()
    elif recipient["AttestationDocument"] is None:
        del recipient["AttestationDocument"]
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, recipient)
    assert error_code(info) == "ValidationException"
    assert words in info.value.response["Error"]["Message"]


@pytest.mark.parametrize("public_key", ["rsa3072", "ec", "garbage"])
def test_recipient_key_must_be_rsa_2048(
    kms: Any, enclave: Enclave, secret_blob: bytes, public_key: str
) -> None:
    if public_key == "rsa3072":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    elif public_key == "ec":
        key = ec.generate_private_key(ec.SECP384R1()).public_key()
    spki = (
        b"\x30\x03\x02\x01\x00"
        if public_key == "garbage"
        else key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ClientError) as info:
        _decrypt(kms, secret_blob, enclave.recipient(public_key=spki))
    assert error_code(info) == "ValidationException"
    assert "public_key" in info.value.response["Error"]["Message"]


def test_deny_beats_allow(kms: Any, enclave: Enclave) -> None:
    deny = {
        "Sid": "NoDebugEnclaves",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:RecipientAttestation:PCR8": PCR8.hex()}},
    }
    key_id = kms.create_key(Policy=pinned_policy(extra=(deny,)))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"app": "db"})[
        "CiphertextBlob"
    ]
    with pytest.raises(ClientError) as info:
        _decrypt(kms, blob, enclave.recipient())
    assert error_code(info) == "AccessDeniedException"
    assert info.value.response["Error"]["Message"].endswith(
        "with an explicit deny in a resource-based policy"
    )


def test_wrong_encryption_context_is_invalid_ciphertext(
    kms: Any, enclave: Enclave, secret_blob: bytes
) -> None:
    for context in ({}, {"app": "other"}, {"app": "db", "extra": "1"}):
        with pytest.raises(ClientError) as info:
            kms.decrypt(
                CiphertextBlob=secret_blob, EncryptionContext=context, Recipient=enclave.recipient()
            )
        assert error_code(info) == "InvalidCiphertextException"


def test_dry_run_checks_everything_then_refuses(
    kms: Any, enclave: Enclave, pinned_key: str, secret_blob: bytes
) -> None:
    with pytest.raises(ClientError) as info:
        kms.decrypt(
            CiphertextBlob=secret_blob,
            EncryptionContext={"app": "db"},
            Recipient=enclave.recipient(),
            DryRun=True,
        )
    assert error_code(info) == "DryRunOperationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as info:
        kms.decrypt(
            CiphertextBlob=secret_blob,
            EncryptionContext={"app": "db"},
            Recipient=enclave.recipient(pcrs={0: bytes(range(48))}),
            DryRun=True,
        )
    assert error_code(info) == "AccessDeniedException"


def test_policy_allows_only_what_it_names(kms: Any, enclave: Enclave) -> None:
    policy = json.loads(pinned_policy())
    policy["Statement"][1]["Action"] = "kms:Decrypt"  # the admin statement excludes both
    key_id = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as info:
        kms.generate_data_key(KeyId=key_id, NumberOfBytes=32, Recipient=enclave.recipient())
    assert error_code(info) == "AccessDeniedException"
    assert "kms:GenerateDataKey " in info.value.response["Error"]["Message"]
    assert json.loads(kms.get_key_policy(KeyId=key_id)["Policy"]) == policy


def test_pcr_values_are_compared_as_kms_does(kms: Any, enclave: Enclave) -> None:
    """StringEquals is case-sensitive: an upper-case PCR pinned with it never matches."""
    policy = json.loads(pinned_policy())
    policy["Statement"][1]["Condition"] = {
        "StringEquals": {"kms:RecipientAttestation:PCR0": PCR0.hex().upper()}
    }
    key_id = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as info:
        kms.generate_data_key(KeyId=key_id, NumberOfBytes=16, Recipient=enclave.recipient())
    assert error_code(info) == "AccessDeniedException"
