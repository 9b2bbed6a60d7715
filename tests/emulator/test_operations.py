"""Key management and cryptographic operations, errors and their codes, with real boto3."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

from attested.emulator import DEV_ARN, EmulatorConfig, KmsEmulator
from attested.emulator._sigv4 import Caller
from attested.kms._wire import ApiError
from tests.emulator.conftest import ACCOUNT, REGION, ROOT_ARN, Enclave, client


def code_of(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def test_create_and_describe_a_symmetric_key(kms: Any) -> None:
    meta = kms.create_key(Description="test key")["KeyMetadata"]
    assert meta["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{meta['KeyId']}"
    assert meta["AWSAccountId"] == ACCOUNT
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["KeyState"] == "Enabled"
    assert meta["Enabled"] is True
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert abs(meta["CreationDate"] - datetime.now(UTC)) < timedelta(minutes=1)
    for ref in (meta["KeyId"], meta["Arn"]):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"] == meta


def test_default_key_policy_is_kms_default(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    answer = kms.get_key_policy(KeyId=key_id)
    assert answer["PolicyName"] == "default"
    (statement,) = json.loads(answer["Policy"])["Statement"]
    assert statement["Principal"] == {"AWS": ROOT_ARN}
    assert statement["Action"] == "kms:*"


def test_aliases(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == key_id
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/app"
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == key_id
    blob = kms.encrypt(KeyId="alias/app", Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    (entry,) = kms.list_aliases(KeyId=key_id)["Aliases"]
    assert entry["AliasName"] == "alias/app"
    assert entry["AliasArn"] == alias_arn
    assert code_of(lambda: kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)) == (
        "AlreadyExistsException"
    )
    assert code_of(lambda: kms.create_alias(AliasName="alias/aws/x", TargetKeyId=key_id)) == (
        "InvalidAliasNameException"
    )
    assert code_of(lambda: kms.describe_key(KeyId="alias/none")) == "NotFoundException"
    assert code_of(lambda: kms.disable_key(KeyId="alias/app")) == "NotFoundException"
    kms.delete_alias(AliasName="alias/app")
    assert kms.list_aliases()["Aliases"] == []


def test_list_keys_pages(kms: Any) -> None:
    ids = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)]
    first = kms.list_keys(Limit=2)
    assert first["Truncated"] is True
    seen = [k["KeyId"] for k in first["Keys"]]
    marker = first["NextMarker"]
    while marker:
        page = kms.list_keys(Limit=2, Marker=marker)
        seen += [k["KeyId"] for k in page["Keys"]]
        marker = page.get("NextMarker")
    assert seen == ids
    assert code_of(lambda: kms.list_keys(Marker="garbage")) == "InvalidMarkerException"


def test_encrypt_decrypt_reencrypt(kms: Any) -> None:
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=a, Plaintext=b"hello", EncryptionContext={"k": "v"})["CiphertextBlob"]
    answer = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})
    assert answer["Plaintext"] == b"hello"
    assert answer["KeyId"].endswith(a)
    moved = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"k": "v"},
        DestinationKeyId=b,
        DestinationEncryptionContext={"n": "1"},
    )
    assert moved["SourceKeyId"].endswith(a)
    assert moved["KeyId"].endswith(b)
    answer = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"n": "1"})
    assert answer["Plaintext"] == b"hello"
    assert answer["KeyId"].endswith(b)
    assert code_of(
        lambda: kms.decrypt(CiphertextBlob=blob, KeyId=b, EncryptionContext={"k": "v"})
    ) == ("IncorrectKeyException")
    assert code_of(lambda: kms.decrypt(CiphertextBlob=b"\x01" + bytes(60))) == (
        "InvalidCiphertextException"
    )


def test_generate_data_keys(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    answer = kms.generate_data_key(KeyId=key_id, NumberOfBytes=24)
    assert len(answer["Plaintext"]) == 24
    assert kms.decrypt(CiphertextBlob=answer["CiphertextBlob"])["Plaintext"] == answer["Plaintext"]
    bare = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_128")
    assert "Plaintext" not in bare
    assert len(kms.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 16
    assert code_of(lambda: kms.generate_data_key(KeyId=key_id)) == "ValidationException"
    assert (
        code_of(lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32))
        == "ValidationException"
    )
    pair = kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="ECC_NIST_P384")
    private = load_der_private_key(pair["PrivateKeyPlaintext"], None)
    opened = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert opened == pair["PrivateKeyPlaintext"]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    bare_pair = kms.generate_data_key_pair_without_plaintext(
        KeyId=key_id, KeyPairSpec="ECC_NIST_EDWARDS25519"
    )
    assert "PrivateKeyPlaintext" not in bare_pair
    assert bare_pair["PublicKey"]
    assert code_of(lambda: kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="SM2")) == (
        "UnsupportedOperationException"
    )


def test_generate_random_validation(kms: Any) -> None:
    assert len(kms.generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024
    assert code_of(lambda: kms.generate_random()) == "ValidationException"


def test_disable_enable_and_deletion(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert code_of(lambda: kms.decrypt(CiphertextBlob=blob)) == "DisabledException"
    assert code_of(lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x")) == "DisabledException"
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert (
        code_of(lambda: kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=3))
        == "ValidationException"
    )
    answer = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingDeletion"
    assert answer["PendingWindowInDays"] == 7
    assert code_of(lambda: kms.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"
    assert code_of(lambda: kms.enable_key(KeyId=key_id)) == "KMSInvalidStateException"
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["PendingDeletionWindowInDays"] == 7
    assert "DeletionDate" in meta
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_keys_are_gone_after_their_deletion_date(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    clock = [datetime.now(UTC)]
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, clock=lambda: clock[0]))
    kms = client(emu.endpoint_url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    caller = Caller(access_key_id="AKIA", arn=DEV_ARN, principal_arn=DEV_ARN, account=ACCOUNT)
    # Requests over HTTP would fail SigV4 against a clock a week ahead, so ask in process.
    later = clock[0] + timedelta(days=6, hours=23)
    assert emu.service.call("DescribeKey", {"KeyId": key_id}, caller, later)
    later = clock[0] + timedelta(days=7, seconds=1)
    with pytest.raises(ApiError) as info:
        emu.service.call("DescribeKey", {"KeyId": key_id}, caller, later)
    assert info.value.code == "NotFoundException"
    assert emu.service.store.get_key(key_id) is None
    assert emu.service.store.get_alias("alias/doomed") is None


def test_not_found_and_wrong_account(kms: Any) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    assert code_of(lambda: kms.describe_key(KeyId=missing)) == "NotFoundException"
    other = f"arn:aws:kms:{REGION}:444455556666:key/{missing}"
    assert code_of(lambda: kms.describe_key(KeyId=other)) == "NotFoundException"
    assert code_of(lambda: kms.describe_key(KeyId="not-a-uuid")) == "NotFoundException"


def test_put_key_policy_lockout_check_and_malformed_policy(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    lockout = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                }
            ]
        }
    )
    assert code_of(lambda: kms.put_key_policy(KeyId=key_id, Policy=lockout)) == (
        "MalformedPolicyDocumentException"
    )
    kms.put_key_policy(KeyId=key_id, Policy=lockout, BypassPolicyLockoutSafetyCheck=True)
    assert code_of(lambda: kms.describe_key(KeyId=key_id)) == "AccessDeniedException"
    assert code_of(lambda: kms.create_key(Policy='{"Statement": 1}')) == (
        "MalformedPolicyDocumentException"
    )
    lowercase = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"stringequals": {"kms:x": "1"}},
                }
            ]
        }
    )
    with pytest.raises(ClientError) as info:
        kms.create_key(Policy=lowercase)
    assert "did you mean StringEquals?" in info.value.response["Error"]["Message"]


def test_rsa_encryption_keys(kms: Any) -> None:
    meta = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    assert meta["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    public = load_der_public_key(kms.get_public_key(KeyId=meta["KeyId"])["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    # Encrypted offline with the public key, decrypted by KMS: the usual asymmetric flow.
    blob = public.encrypt(
        b"offline",
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    answer = kms.decrypt(
        CiphertextBlob=blob, KeyId=meta["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_256"
    )
    assert answer["Plaintext"] == b"offline"
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_1")[
        "CiphertextBlob"
    ]
    assert len(blob) == 256
    assert code_of(lambda: kms.decrypt(CiphertextBlob=blob)) == "InvalidCiphertextException"
    assert (
        code_of(lambda: kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x"))
        == "InvalidKeyUsageException"
    )
    assert (
        code_of(
            lambda: kms.encrypt(
                KeyId=meta["KeyId"], Plaintext=bytes(300), EncryptionAlgorithm="RSAES_OAEP_SHA_256"
            )
        )
        == "ValidationException"
    )
    assert code_of(lambda: kms.generate_data_key(KeyId=meta["KeyId"], NumberOfBytes=8)) == (
        "InvalidKeyUsageException"
    )


@pytest.mark.parametrize(
    ("spec", "usage", "code"),
    [
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY", "ValidationException"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT", "ValidationException"),
        ("ECC_NIST_P256", None, "ValidationException"),
        ("RSA_2048", None, "ValidationException"),
        ("HMAC_256", "ENCRYPT_DECRYPT", "ValidationException"),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "UnsupportedOperationException"),
        ("ML_DSA_44", "SIGN_VERIFY", "UnsupportedOperationException"),
    ],
)
def test_key_spec_matrix_refusals(kms: Any, spec: str, usage: str | None, code: str) -> None:
    extra = {} if usage is None else {"KeyUsage": usage}
    assert code_of(lambda: kms.create_key(KeySpec=spec, **extra)) == code


def test_signing_keys_can_be_created_and_described(kms: Any) -> None:
    meta = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert meta["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    assert "EncryptionAlgorithms" not in meta
    assert code_of(lambda: kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")) == (
        "InvalidKeyUsageException"
    )


def test_derive_shared_secret_plain_and_curve_mismatch(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"][
        "KeyId"
    ]
    kms_public = load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(kms_public, ec.EllipticCurvePublicKey)
    mine = ec.generate_private_key(ec.SECP384R1())
    spki = mine.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    answer = kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=spki)
    assert answer["SharedSecret"] == mine.exchange(ec.ECDH(), kms_public)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = other.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert (
        code_of(
            lambda: kms.derive_shared_secret(
                KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=wrong
            )
        )
        == "ValidationException"
    )
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    assert (
        code_of(
            lambda: kms.derive_shared_secret(
                KeyId=sym, KeyAgreementAlgorithm="ECDH", PublicKey=spki
            )
        )
        == "InvalidKeyUsageException"
    )


def test_dry_run_on_encrypt_and_ignore_ciphertext(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    assert code_of(lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=True)) == (
        "DryRunOperationException"
    )
    assert (
        code_of(
            lambda: kms.decrypt(
                CiphertextBlob=b"junk",
                KeyId=key_id,
                DryRun=True,
                DryRunModifiers=["IGNORE_CIPHERTEXT"],
            )
        )
        == "DryRunOperationException"
    )
    assert code_of(lambda: kms.decrypt(CiphertextBlob=b"junk", DryRun=True)) == (
        "InvalidCiphertextException"
    )


def test_unimplemented_operation_says_so(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as info:
        kms.create_grant(
            KeyId=key_id, GranteePrincipal="arn:aws:iam::111122223333:root", Operations=["Decrypt"]
        )
    assert info.value.response["Error"]["Code"] == "UnsupportedOperationException"
    message = info.value.response["Error"]["Message"]
    assert "CreateGrant" in message
    assert "grants" in message
