"""Error codes, messages and answers matched to behaviour recorded against real AWS KMS.

The facts come from LocalStack's KMS snapshot file, which LocalStack records against real
AWS (``tests/aws/services/kms/test_kms.snapshot.json`` in github.com/localstack/localstack;
only the recorded AWS answers are used here, none of LocalStack's code). Each test names
the snapshot case it follows. ``<key-arn>`` in a recorded message stands for the key's ARN.
Where AWS's message is empty (``InvalidCiphertextException``, ``KMSInvalidSignatureException``,
``KMSInvalidMacException``) ours is empty too.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from attested.emulator import KmsEmulator
from tests.emulator.conftest import ACCOUNT, REGION, client

SNAPSHOT = "test_kms.snapshot.json::"


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    error = info.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def key(kms: Any, spec: str = "SYMMETRIC_DEFAULT", usage: str = "ENCRYPT_DECRYPT") -> str:
    return str(kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"])


def arn(key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


# --- request validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "message"),
    [
        # TestKMS::test_generate_random_invalid_number_of_bytes[None]
        (None, "NumberOfBytes is required."),
        # ...[0] and ...[1025]
        (0, "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"),
        (1025, "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy "
               "constraint: Member must have value less than or equal to 1024"),
    ],
)  # fmt: skip
def test_generate_random_invalid_number_of_bytes(
    emulator: KmsEmulator, number: int | None, message: str
) -> None:
    """Snapshot TestKMS::test_generate_random_invalid_number_of_bytes."""
    kms = client(emulator.endpoint_url, parameter_validation=False)  # botocore checks min
    args = {} if number is None else {"NumberOfBytes": number}
    assert error_of(lambda: kms.generate_random(**args)) == ("ValidationException", message)


def test_plaintext_size_for_encrypt(kms: Any) -> None:
    """Snapshot TestKMS::test_plaintext_size_for_encrypt: a blob's value is not shown."""
    key_id = key(kms)
    message = b"test message 123 !%$@ 1234567890"
    assert error_of(
        lambda: kms.encrypt(KeyId=key_id, Plaintext=base64.b64encode(message * 100))
    ) == (
        "ValidationException",
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096",
    )


@pytest.mark.parametrize(
    ("tag", "path", "limit"),
    [
        # TestKMS::test_key_with_long_tag_value_raises_error
        ({"TagKey": "tag1", "TagValue": "v" * 257}, "tags.1.member.tagValue", 256),
        # TestKMS::test_create_key_with_invalid_tag_key[too_long_key]
        ({"TagKey": "a" * 129, "TagValue": "value1"}, "tags.1.member.tagKey", 128),
    ],
)
def test_tag_lengths(kms: Any, tag: dict[str, str], path: str, limit: int) -> None:
    """Snapshots TestKMS::test_key_with_long_tag_value_raises_error and
    TestKMS::test_create_key_with_invalid_tag_key[too_long_key]: the value is echoed whole."""
    value = tag["TagValue"] if path.endswith("tagValue") else tag["TagKey"]
    assert error_of(lambda: kms.create_key(Tags=[tag])) == (
        "ValidationException",
        f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy "
        f"constraint: Member must have length less than or equal to {limit}",
    )


@pytest.mark.parametrize(
    ("args", "member", "values"),
    [
        ({"KeySpec": "HMAC_random"}, "keySpec", None),
        ({"KeySpec": "HMAC_256", "KeyUsage": "RANDOM"}, "keyUsage", None),
    ],
)
def test_hmac_create_key_invalid_enums(
    kms: Any, args: dict[str, str], member: str, values: None
) -> None:
    """Snapshot TestKMS::test_hmac_create_key_invalid_operations (create-hmac-key-invalid-spec,
    -invalid-key-usage). AWS lists the enum in another order; the values are the model's."""
    code, message = error_of(lambda: kms.create_key(**args))
    bad = args.get("KeyUsage", args["KeySpec"])
    assert code == "ValidationException"
    assert message.startswith(
        f"1 validation error detected: Value '{bad}' at '{member}' failed to satisfy "
        "constraint: Member must satisfy enum value set: ["
    )


def test_hmac_create_key_without_key_usage(kms: Any) -> None:
    """Snapshot TestKMS::test_hmac_create_key_invalid_operations
    (create-hmac-key-without-key-usage)."""
    assert error_of(lambda: kms.create_key(KeySpec="HMAC_256")) == (
        "ValidationException",
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
    )


# --- key identifiers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key_id", ["fake-key-id", "134f2428cec14b25a1ae9048164dba47", "mrk-fake-key-id"]
)
def test_get_key_invalid_uuid(kms: Any, key_id: str) -> None:
    """Snapshot TestKMS::test_get_key_invalid_uuid: a UUID without dashes is not a key id."""
    assert error_of(lambda: kms.describe_key(KeyId=key_id)) == (
        "NotFoundException",
        f"Invalid keyId '{key_id}'",
    )


def test_get_key_does_not_exist(kms: Any) -> None:
    """Snapshot TestKMS::test_get_key_does_not_exist: a well-formed id, ARN, or multi-Region
    key id that names no key."""
    fake = "134f2428-cec1-4b25-a1ae-9048164dba47"
    expected = ("NotFoundException", f"Key '{arn(fake)}' does not exist")
    assert error_of(lambda: kms.describe_key(KeyId=fake)) == expected
    assert error_of(lambda: kms.describe_key(KeyId=arn(fake))) == expected
    mrk = "mrk-d3b95762d3b95762d3b95762d3b95762"
    assert error_of(lambda: kms.describe_key(KeyId=mrk)) == (
        "NotFoundException",
        f"Key '{arn(mrk)}' does not exist",
    )


def test_get_key_in_different_region(kms: Any) -> None:
    """Snapshot TestKMS::test_get_key_in_different_region (describe-key-diff-region-with-arn):
    an ARN of another region names the region."""
    key_id = key(kms)
    other = arn(key_id).replace(REGION, "us-west-2")
    assert error_of(lambda: kms.describe_key(KeyId=other)) == (
        "NotFoundException",
        "Invalid arn us-west-2",
    )


def test_create_alias_without_prefix(kms: Any) -> None:
    """Snapshot TestKMS::test_create_alias."""
    key_id = key(kms)
    assert error_of(lambda: kms.create_alias(AliasName="a1b2c3", TargetKeyId=key_id)) == (
        "ValidationException",
        'Alias must start with the prefix "alias/". Please see '
        "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    )


# --- key usage and key specs ---------------------------------------------------------


def test_error_messaging_for_invalid_keys(kms: Any) -> None:
    """Snapshot TestKMS::test_error_messaging_for_invalid_keys."""
    hmac_key = key(kms, "HMAC_224", "GENERATE_VERIFY_MAC")
    symmetric = key(kms)
    signing = key(kms, "RSA_2048", "SIGN_VERIFY")
    assert error_of(
        lambda: kms.generate_mac(KeyId=symmetric, Message=b"m", MacAlgorithm="HMAC_SHA_224")
    ) == (
        "InvalidKeyUsageException",
        f"{arn(symmetric)} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.",
    )
    assert error_of(
        lambda: kms.sign(
            KeyId=hmac_key, Message=b"m", MessageType="RAW", SigningAlgorithm="RSASSA_PSS_SHA_256"
        )
    ) == (
        "InvalidKeyUsageException",
        f"{arn(hmac_key)} key usage is GENERATE_VERIFY_MAC which is not valid for Sign.",
    )
    assert error_of(
        lambda: kms.verify(
            KeyId=symmetric,
            Message=b"test message",
            MessageType="RAW",
            Signature=b"random text",
            SigningAlgorithm="ECDSA_SHA_256",
        )
    ) == (
        "InvalidKeyUsageException",
        f"{arn(symmetric)} key usage is ENCRYPT_DECRYPT which is not valid for Verify.",
    )
    assert error_of(lambda: kms.encrypt(KeyId=signing, Plaintext=b"m")) == (
        "InvalidKeyUsageException",
        f"{arn(signing)} key usage is SIGN_VERIFY which is not valid for Encrypt.",
    )
    blob = kms.encrypt(KeyId=symmetric, Plaintext=b"test message 123!@#")["CiphertextBlob"]
    assert error_of(lambda: kms.decrypt(CiphertextBlob=blob, KeyId=hmac_key)) == (
        "IncorrectKeyException",
        "The key ID in the request does not identify a CMK that can perform this operation.",
    )


def test_re_encrypt_incorrect_source_key(kms: Any) -> None:
    """Snapshot TestKMS::test_re_encrypt_incorrect_source_key."""
    blob = kms.encrypt(KeyId=key(kms), Plaintext=b"m")["CiphertextBlob"]
    hmac_key = key(kms, "HMAC_224", "GENERATE_VERIFY_MAC")
    assert error_of(
        lambda: kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=hmac_key, DestinationKeyId=hmac_key)
    ) == (
        "IncorrectKeyException",
        "The key ID in the request does not identify a CMK that can perform this operation.",
    )


@pytest.mark.parametrize(
    ("spec", "algorithm", "limit"),
    [
        ("RSA_2048", "RSAES_OAEP_SHA_1", 214),
        ("RSA_2048", "RSAES_OAEP_SHA_256", 190),
        ("RSA_3072", "RSAES_OAEP_SHA_1", 342),
        ("RSA_3072", "RSAES_OAEP_SHA_256", 318),
        ("RSA_4096", "RSAES_OAEP_SHA_1", 470),
        ("RSA_4096", "RSAES_OAEP_SHA_256", 446),
    ],
)
def test_encrypt_validate_plaintext_size_per_key_type(
    kms: Any, spec: str, algorithm: str, limit: int
) -> None:
    """Snapshot TestKMS::test_encrypt_validate_plaintext_size_per_key_type[SPEC-ALGORITHM]."""
    key_id = key(kms, spec)
    assert kms.encrypt(KeyId=key_id, Plaintext=bytes(limit), EncryptionAlgorithm=algorithm)
    assert error_of(
        lambda: kms.encrypt(KeyId=key_id, Plaintext=bytes(limit + 1), EncryptionAlgorithm=algorithm)
    ) == (
        "ValidationException",
        f"Algorithm {algorithm} and key spec {spec} cannot encrypt data larger than {limit} bytes.",
    )


def test_derive_shared_secret_errors(kms: Any) -> None:
    """Snapshot TestKMS::test_derive_shared_secret (the response-invalid-* cases)."""
    agreement = key(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = kms.get_public_key(KeyId=key(kms, "ECC_NIST_P256", "KEY_AGREEMENT"))["PublicKey"]
    signing = key(kms, "ECC_NIST_P256", "SIGN_VERIFY")

    def derive(key_id: str, algorithm: str = "ECDH", public: bytes = peer) -> Any:
        return lambda: kms.derive_shared_secret(
            KeyId=key_id, KeyAgreementAlgorithm=algorithm, PublicKey=public
        )

    assert error_of(derive(signing)) == (
        "InvalidKeyUsageException",
        f"{arn(signing)} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret.",
    )
    assert error_of(lambda: kms.create_key(KeySpec="RSA_2048", KeyUsage="KEY_AGREEMENT")) == (
        "ValidationException",
        "KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048",
    )
    assert error_of(derive(agreement, "INVALID")) == (
        "ValidationException",
        "1 validation error detected: Value 'INVALID' at 'keyAgreementAlgorithm' failed to "
        "satisfy constraint: Member must satisfy enum value set: [ECDH]",
    )
    symmetric = key(kms)
    assert error_of(derive(symmetric)) == (
        "InvalidKeyUsageException",
        f"{arn(symmetric)} key usage is ENCRYPT_DECRYPT which is not valid for DeriveSharedSecret.",
    )
    # AWS's message is empty here; ours says what is wrong.
    assert error_of(derive(agreement, public=b"InvalidPublicKey"))[0] == "ValidationException"


# --- ciphertexts ---------------------------------------------------------------------


def test_encrypt_decrypt_encryption_context(kms: Any) -> None:
    """Snapshot TestKMS::test_encrypt_decrypt_encryption_context: the answers' members, and
    an empty message for a missing context or a cut ciphertext."""
    key_id = key(kms)
    context = {"context-key": "context-value"}
    encrypted = kms.encrypt(KeyId=key_id, Plaintext=b"message", EncryptionContext=context)
    assert set(encrypted) - {"ResponseMetadata"} == {
        "CiphertextBlob", "EncryptionAlgorithm", "KeyId",
    }  # fmt: skip
    blob = encrypted["CiphertextBlob"]
    decrypted = kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionContext=context)
    assert set(decrypted) - {"ResponseMetadata"} == {
        "EncryptionAlgorithm", "KeyId", "KeyMaterialId", "Plaintext",
    }  # fmt: skip
    assert error_of(lambda: kms.decrypt(KeyId=key_id, CiphertextBlob=blob)) == (
        "InvalidCiphertextException",
        "",
    )
    assert error_of(
        lambda: kms.decrypt(KeyId=key_id, CiphertextBlob=blob[20:], EncryptionContext=context)
    ) == ("InvalidCiphertextException", "")


def test_generate_data_key_pair_dry_run(kms: Any) -> None:
    """Snapshot TestKMSGenerateKeys::test_generate_data_key_pair_dry_run."""
    key_id = key(kms)
    assert error_of(
        lambda: kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="RSA_2048", DryRun=True)
    ) == (
        "DryRunOperationException",
        "The request would have succeeded, but the DryRun option is set.",
    )


# --- signatures and MACs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
        ("RSA_2048", "RSASSA_PSS_SHA_384"),
        ("RSA_2048", "RSASSA_PSS_SHA_512"),
        ("RSA_4096", "RSASSA_PKCS1_V1_5_SHA_256"),
        ("RSA_4096", "RSASSA_PKCS1_V1_5_SHA_512"),
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_NIST_P384", "ECDSA_SHA_384"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
    ],
)
def test_sign_verify(kms: Any, spec: str, algorithm: str) -> None:
    """Snapshot TestKMS::test_sign_verify[SPEC-ALGORITHM]: the answers' members, a digest of
    the wrong length, and a signature that does not verify (empty message)."""
    key_id = key(kms, spec, "SIGN_VERIFY")
    plaintext = b"test message !%$@ 1234567890"
    digest = hashlib.new("sha" + algorithm[-3:], plaintext).digest()
    args = {"KeyId": key_id, "SigningAlgorithm": algorithm}
    bad = kms.sign(MessageType="RAW", Message=b"bad", **args)["Signature"]
    signed = kms.sign(MessageType="RAW", Message=plaintext, **args)
    assert set(signed) - {"ResponseMetadata"} == {"KeyId", "Signature", "SigningAlgorithm"}
    assert (signed["KeyId"], signed["SigningAlgorithm"]) == (arn(key_id), algorithm)
    verified = kms.verify(
        MessageType="RAW", Message=plaintext, Signature=signed["Signature"], **args
    )
    assert set(verified) - {"ResponseMetadata"} == {"KeyId", "SignatureValid", "SigningAlgorithm"}
    assert verified["SignatureValid"] is True
    by_digest = kms.sign(MessageType="DIGEST", Message=digest, **args)["Signature"]
    assert kms.verify(MessageType="DIGEST", Message=digest, Signature=by_digest, **args)[
        "SignatureValid"
    ]
    assert kms.verify(MessageType="RAW", Message=plaintext, Signature=by_digest, **args)[
        "SignatureValid"
    ]
    assert error_of(lambda: kms.sign(MessageType="DIGEST", Message=plaintext, **args)) == (
        "ValidationException",
        f"Digest is invalid length for algorithm {algorithm}.",
    )
    invalid = ("KMSInvalidSignatureException", "")
    assert (
        error_of(lambda: kms.verify(MessageType="RAW", Message=plaintext, Signature=bad, **args))
        == invalid
    )
    assert (
        error_of(
            lambda: kms.verify(
                MessageType="RAW", Message=b"bad message 321", Signature=signed["Signature"], **args
            )
        )
        == invalid
    )


@pytest.mark.parametrize("bits", [224, 256, 384, 512])
def test_generate_and_verify_mac(kms: Any, bits: int) -> None:
    """Snapshot TestKMS::test_generate_and_verify_mac[HMAC_N-HMAC_SHA_N]: the answers'
    members, and an id that is not a key id."""
    key_id = key(kms, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{bits}"
    made = kms.generate_mac(KeyId=key_id, Message=b"some important message", MacAlgorithm=algorithm)
    assert set(made) - {"ResponseMetadata"} == {"KeyId", "Mac", "MacAlgorithm"}
    checked = kms.verify_mac(
        KeyId=key_id, Message=b"some important message", MacAlgorithm=algorithm, Mac=made["Mac"]
    )
    assert set(checked) - {"ResponseMetadata"} == {"KeyId", "MacAlgorithm", "MacValid"}
    assert checked["MacValid"] is True
    assert error_of(
        lambda: kms.generate_mac(KeyId="key_id", Message=b"m", MacAlgorithm=algorithm)
    ) == ("NotFoundException", "Invalid keyId 'key_id'")
    assert error_of(
        lambda: kms.verify_mac(KeyId="key_id", Message=b"m", MacAlgorithm=algorithm, Mac=b"x")
    ) == ("NotFoundException", "Invalid keyId 'key_id'")


def test_invalid_generate_and_verify_mac(kms: Any) -> None:
    """Snapshots TestKMS::test_invalid_generate_mac[HMAC_224-HMAC_SHA_256] and
    TestKMS::test_invalid_verify_mac[...]."""
    small = key(kms, "HMAC_224", "GENERATE_VERIFY_MAC")
    assert error_of(
        lambda: kms.generate_mac(KeyId=small, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    ) == (
        "InvalidKeyUsageException",
        "Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.",
    )
    key_id = key(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    mac = kms.generate_mac(
        KeyId=key_id, Message=b"some important message", MacAlgorithm="HMAC_SHA_256"
    )["Mac"]
    assert error_of(
        lambda: kms.verify_mac(
            KeyId=key_id,
            Message=b"some different important message",
            MacAlgorithm="HMAC_SHA_256",
            Mac=mac,
        )
    ) == ("KMSInvalidMacException", "")
    assert error_of(
        lambda: kms.verify_mac(
            KeyId=key_id, Message=b"some important message", MacAlgorithm="HMAC_SHA_512", Mac=mac
        )
    ) == (
        "InvalidKeyUsageException",
        "Algorithm HMAC_SHA_512 is incompatible with key spec HMAC_256.",
    )
    code, message = error_of(
        lambda: kms.verify_mac(KeyId=key_id, Message=b"m", MacAlgorithm="INVALID", Mac=mac)
    )
    assert code == "ValidationException"
    assert message.startswith(
        "1 validation error detected: Value 'INVALID' at 'macAlgorithm' failed to satisfy "
        "constraint: Member must satisfy enum value set: ["
    )


def test_hmac_create_key_answer(kms: Any) -> None:
    """Snapshot TestKMS::test_hmac_create_key: an HMAC key's metadata (MacAlgorithms; no
    CurrentKeyMaterialId, no EncryptionAlgorithms)."""
    meta = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    assert set(meta) == {
        "AWSAccountId", "Arn", "CreationDate", "CustomerMasterKeySpec", "Description",
        "Enabled", "KeyId", "KeyManager", "KeySpec", "KeyState", "KeyUsage", "MacAlgorithms",
        "MultiRegion", "Origin",
    }  # fmt: skip
    assert meta["MacAlgorithms"] == ["HMAC_SHA_256"]


def test_create_key_answer(kms: Any) -> None:
    """Snapshot TestKMS::test_create_key: a symmetric key's metadata."""
    meta = kms.create_key(Description="test key 123", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    assert set(meta) == {
        "AWSAccountId", "Arn", "CreationDate", "CurrentKeyMaterialId", "CustomerMasterKeySpec",
        "Description", "Enabled", "EncryptionAlgorithms", "KeyId", "KeyManager", "KeySpec",
        "KeyState", "KeyUsage", "MultiRegion", "Origin",
    }  # fmt: skip


# --- tags ----------------------------------------------------------------------------


def test_tag_errors(kms: Any) -> None:
    """Snapshots TestKMS::test_tag_key_with_duplicate_tag_keys_raises_error,
    ::test_create_key_with_too_many_tags_raises_error,
    ::test_tag_existing_key_with_invalid_tag_key and
    ::test_create_key_with_invalid_tag_key[lowercase_prefix|uppercase_prefix]."""
    key_id = key(kms)
    duplicate = [{"TagKey": "tag1", "TagValue": "value1"}, {"TagKey": "tag1", "TagValue": "v"}]
    assert error_of(lambda: kms.tag_resource(KeyId=key_id, Tags=duplicate)) == (
        "TagException",
        "Duplicate tag keys",
    )
    many = [{"TagKey": f"key{i}", "TagValue": f"value{i}"} for i in range(51)]
    assert error_of(lambda: kms.create_key(Tags=many)) == ("TagException", "Too many tags")
    reserved = ("TagException", "Tags beginning with aws: are reserved")
    for prefix in ("aws:", "AWS:"):
        tags = [{"TagKey": f"{prefix}key1", "TagValue": "value1"}]
        assert error_of(lambda t=tags: kms.tag_resource(KeyId=key_id, Tags=t)) == reserved  # type: ignore[misc]
        assert error_of(lambda t=tags: kms.create_key(Tags=t)) == reserved  # type: ignore[misc]


def test_tag_existing_key_and_untag(kms: Any) -> None:
    """Snapshots TestKMS::test_tag_existing_key_and_untag and ::test_untag_key_partially:
    the tags in the order set, then none."""
    key_id = key(kms)
    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "tag1", "TagValue": "value1"}, {"TagKey": "tag2", "TagValue": "value2"}],
    )
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "tag1", "TagValue": "value1"},
        {"TagKey": "tag2", "TagValue": "value2"},
    ]
    kms.untag_resource(KeyId=key_id, TagKeys=["tag1"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "tag2", "TagValue": "value2"}
    ]
    kms.untag_resource(KeyId=key_id, TagKeys=["tag2"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == []


# --- rotation, imported material, replicas -------------------------------------------


@pytest.mark.parametrize("days", [90, 180])
def test_key_enable_rotation_status(kms: Any, days: int) -> None:
    """Snapshot TestKMS::test_key_enable_rotation_status[DAYS] (the emulator never rotates,
    so it gives no NextRotationDate)."""
    key_id = key(kms)
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=days)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == days
    assert status["KeyId"] == arn(key_id)


def test_rotate_key_on_demand_errors(kms: Any) -> None:
    """Snapshots TestKMS::test_rotate_key_on_demand_raises_error_given_key_is_disabled,
    ::..._given_key_that_does_not_exist and ::..._given_non_symmetric_key."""
    disabled = key(kms, "RSA_4096")
    kms.disable_key(KeyId=disabled)
    assert error_of(lambda: kms.rotate_key_on_demand(KeyId=disabled)) == (
        "DisabledException",
        f"{arn(disabled)} is disabled.",
    )
    missing = "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert error_of(lambda: kms.rotate_key_on_demand(KeyId=missing)) == (
        "NotFoundException",
        f"Key '{arn(missing)}' does not exist",
    )
    rsa_key = key(kms, "RSA_4096")
    assert error_of(lambda: kms.rotate_key_on_demand(KeyId=rsa_key)) == (
        "UnsupportedOperationException",
        "",
    )


def test_get_parameters_for_import_raises_for_non_external_kms_keys(kms: Any) -> None:
    """Snapshots TestKMS::test_get_parameters_for_import_raises_for_non_external_kms_keys and
    TestKMS::test_get_parameters_for_import (response-error)."""
    key_id = key(kms)
    assert error_of(
        lambda: kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
    ) == (
        "UnsupportedOperationException",
        f"{arn(key_id)} origin is AWS_KMS which is not valid for this operation.",
    )


def test_replicate_key_of_a_single_region_key(kms: Any, emulator: KmsEmulator) -> None:
    """Follows the form of snapshot TestKMS::test_replicate_replica_key_should_fail
    (``<arn> is not a multi-region primary key.``): no emulator key is multi-Region."""
    key_id = key(kms)
    assert error_of(lambda: kms.replicate_key(KeyId=key_id, ReplicaRegion="us-west-2")) == (
        "UnsupportedOperationException",
        f"{arn(key_id)} is not a multi-region primary key.",
    )
