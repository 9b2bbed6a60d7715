"""Key administration a key administrator or an SDK keyring uses, through real boto3:
UpdateAlias, ListKeyPolicies, UpdateKeyDescription, tags, rotation settings, grants
listings, and that grant tokens never widen what a key policy allows."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from attested.emulator import DEV_ARN
from tests.emulator.conftest import ACCOUNT, REGION, ROOT_ARN, Enclave, pinned_policy


def code_of(call: Any) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def policy_denying(action: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*",
                 "Resource": "*"},
                {"Effect": "Deny", "Principal": {"AWS": DEV_ARN}, "Action": action,
                 "Resource": "*"},
            ],
        }
    )  # fmt: skip


def test_update_alias_moves_it_to_another_key(kms: Any) -> None:
    old = kms.create_key()["KeyMetadata"]["KeyId"]
    new = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=old)
    (before,) = kms.list_aliases(KeyId=old)["Aliases"]
    kms.update_alias(AliasName="alias/app", TargetKeyId=new)
    assert kms.list_aliases(KeyId=old)["Aliases"] == []
    (after,) = kms.list_aliases(KeyId=new)["Aliases"]
    assert after["TargetKeyId"] == new
    assert after["CreationDate"] == before["CreationDate"]
    assert after["LastUpdatedDate"] >= before["LastUpdatedDate"]
    blob = kms.encrypt(KeyId="alias/app", Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(new)


def test_update_alias_refusals(kms: Any) -> None:
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=symmetric)
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    # Another key type: an alias keeps meaning the same kind of key.
    assert code_of(lambda: kms.update_alias(AliasName="alias/app", TargetKeyId=rsa)) == (
        "ValidationException"
    )
    assert code_of(lambda: kms.update_alias(AliasName="alias/none", TargetKeyId=symmetric)) == (
        "NotFoundException"
    )
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    assert code_of(lambda: kms.update_alias(AliasName="alias/app", TargetKeyId=doomed)) == (
        "KMSInvalidStateException"
    )
    # kms:UpdateAlias is needed on the new key too.
    guarded = kms.create_key(Policy=policy_denying("kms:UpdateAlias"))["KeyMetadata"]["KeyId"]
    assert code_of(lambda: kms.update_alias(AliasName="alias/app", TargetKeyId=guarded)) == (
        "AccessDeniedException"
    )
    (entry,) = kms.list_aliases(KeyId=symmetric)["Aliases"]
    assert entry["AliasName"] == "alias/app"


def test_list_key_policies(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    answer = kms.list_key_policies(KeyId=key_id)
    assert answer["PolicyNames"] == ["default"]
    assert answer["Truncated"] is False
    guarded = kms.create_key(Policy=policy_denying("kms:ListKeyPolicies"))["KeyMetadata"]["KeyId"]
    assert code_of(lambda: kms.list_key_policies(KeyId=guarded)) == "AccessDeniedException"


def test_update_key_description(kms: Any) -> None:
    key_id = kms.create_key(Description="old")["KeyMetadata"]["KeyId"]
    kms.update_key_description(KeyId=key_id, Description="new")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "new"
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert code_of(lambda: kms.update_key_description(KeyId=key_id, Description="x")) == (
        "KMSInvalidStateException"
    )


def test_tags_set_at_creation_update_and_page(kms: Any) -> None:
    key_id = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "team", "TagValue": "b"}, {"TagKey": "env", "TagValue": "dev"}],
    )
    first = kms.list_resource_tags(KeyId=key_id, Limit=1)
    assert first["Tags"] == [{"TagKey": "team", "TagValue": "b"}]
    assert first["Truncated"] is True
    rest = kms.list_resource_tags(KeyId=key_id, Marker=first["NextMarker"])
    assert rest["Tags"] == [{"TagKey": "env", "TagValue": "dev"}]
    assert rest["Truncated"] is False
    guarded = kms.create_key(Policy=policy_denying("kms:TagResource"))["KeyMetadata"]["KeyId"]
    tags = [{"TagKey": "k", "TagValue": "v"}]
    assert code_of(lambda: kms.tag_resource(KeyId=guarded, Tags=tags)) == "AccessDeniedException"


def test_rotation_setting(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
    kms.enable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 365)
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []  # never rotated
    kms.disable_key(KeyId=key_id)
    assert code_of(lambda: kms.disable_key_rotation(KeyId=key_id)) == "DisabledException"
    kms.enable_key(KeyId=key_id)
    # KMS: pending deletion reports false; cancelling the deletion restores the setting.
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    kms.enable_key(KeyId=key_id)
    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id) | {"ResponseMetadata": None} == {
        "KeyRotationEnabled": False,
        "KeyId": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}",
        "ResponseMetadata": None,
    }
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    assert code_of(lambda: kms.enable_key_rotation(KeyId=rsa)) == "UnsupportedOperationException"


def test_grants_do_not_exist_and_grant_tokens_widen_nothing(kms: Any, enclave: Enclave) -> None:
    """Grants are not emulated: none can be created, so the listings are empty, and a
    grant token on a request cannot stand in for the key policy's attestation conditions."""
    key_id = kms.create_key(Policy=pinned_policy())["KeyMetadata"]["KeyId"]
    assert kms.list_grants(KeyId=key_id)["Grants"] == []
    assert kms.list_retirable_grants(RetiringPrincipal=DEV_ARN)["Grants"] == []
    assert (
        code_of(
            lambda: kms.create_grant(KeyId=key_id, GranteePrincipal=DEV_ARN, Operations=["Decrypt"])
        )
        == "UnsupportedOperationException"
    )
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret")["CiphertextBlob"]
    token = "AQpAM2RhZTk1MGMyNTk2ZmZmMzEyYWVhOWViN2I1MWM4Mzc0MWFiYjc0ZDE1ODkyNGFlNTIz"
    assert (
        code_of(lambda: kms.decrypt(CiphertextBlob=blob, GrantTokens=[token]))
        == "AccessDeniedException"
    )
    assert kms.decrypt(CiphertextBlob=blob, GrantTokens=[token], Recipient=enclave.recipient())


def test_answers_name_keys_by_their_arn(kms: Any) -> None:
    """The model documents ``KeyId`` in these answers as the key ARN, even when the request
    named the key by id or alias."""

    def arn_of(key_id: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"

    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/named", TargetKeyId=symmetric)
    encrypted = kms.encrypt(KeyId="alias/named", Plaintext=b"x")
    re_encrypted = kms.re_encrypt(
        CiphertextBlob=encrypted["CiphertextBlob"], DestinationKeyId="alias/named"
    )
    answers = [
        encrypted,
        kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"]),
        kms.generate_data_key(KeyId="alias/named", KeySpec="AES_256"),
        kms.generate_data_key_without_plaintext(KeyId=symmetric, NumberOfBytes=16),
        kms.generate_data_key_pair(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256"),
        re_encrypted,
        kms.get_key_rotation_status(KeyId=symmetric),
    ]
    assert re_encrypted["SourceKeyId"] == arn_of(symmetric)
    signing = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    signed = kms.sign(KeyId=signing["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_384")
    answers += [signed, kms.get_public_key(KeyId=signing["KeyId"])]
    mac_key = kms.create_key(KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    answers.append(
        kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_512")
    )
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    answers += [
        kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7),
        kms.cancel_key_deletion(KeyId=doomed),
    ]
    for answer in answers:
        key_id = answer["KeyId"]
        assert key_id.startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/"), answer
    assert signed["KeyId"] == signing["Arn"]


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ],
)
def test_a_forged_blob_naming_a_non_symmetric_key_is_an_invalid_ciphertext(
    kms: Any, spec: str, usage: str
) -> None:
    """A blob in the emulator's symmetric format that names an asymmetric or HMAC key is no
    ciphertext: it never reaches AES-GCM with that key's material (an HMAC_256 key's would
    be a valid AES key)."""
    meta = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    forged = b"\x01" + uuid.UUID(meta["KeyId"]).bytes + bytes(12) + bytes(32)
    assert code_of(lambda: kms.decrypt(CiphertextBlob=forged)) == "InvalidCiphertextException"
    target = kms.create_key()["KeyMetadata"]["KeyId"]
    assert (
        code_of(lambda: kms.re_encrypt(CiphertextBlob=forged, DestinationKeyId=target))
        == "InvalidCiphertextException"
    )
