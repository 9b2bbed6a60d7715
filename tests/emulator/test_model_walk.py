"""Every operation of botocore's KMS model, called through a real boto3 client.

Each operation gets a minimal request built from the model (its required members, with
values a caller would send) and must get a real answer, or ``UnsupportedOperationException``
naming it: never ``UnknownOperationException`` and never a 500. Successful answers are
checked member by member against the model by the client's hook (``conftest.client``).
The expected outcome of every operation is listed, so a change shows up here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.model import Shape
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested.emulator import EmulatorConfig, KmsEmulator
from attested.kms._wire import kms_model
from tests.emulator.conftest import ROOT_ARN, Enclave, client
from tests.emulator.modelcheck import answer_problems

MODEL = kms_model()

# Operations the emulator does not emulate: UnsupportedOperationException naming them.
UNSUPPORTED = {
    "ConnectCustomKeyStore", "CreateCustomKeyStore", "CreateGrant", "Decapsulate",
    "DeleteCustomKeyStore", "DescribeCustomKeyStores", "DisconnectCustomKeyStore",
    "Encapsulate", "GetKeyLastUsage", "RetireGrant", "RevokeGrant", "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
}  # fmt: skip
# Implemented operations whose minimal request earns an error (what AWS answers too).
EXPECTED_ERRORS = {
    # The minimal request has no CiphertextBlob, no NumberOfBytes/KeySpec.
    "Decrypt": "ValidationException",
    "GenerateDataKey": "ValidationException",
    "GenerateDataKeyWithoutPlaintext": "ValidationException",
    "GenerateRandom": "ValidationException",
    "ReEncrypt": "ValidationException",
    # The minimal request's Signature/Mac is b"x": not valid.
    "Verify": "KMSInvalidSignatureException",
    "VerifyMac": "KMSInvalidMacException",
    # The key is not pending deletion.
    "CancelKeyDeletion": "KMSInvalidStateException",
    # The alias exists already (the walk makes it for UpdateAlias and DeleteAlias).
    "CreateAlias": "AlreadyExistsException",
    # What AWS answers for a key with Origin AWS_KMS that is not multi-Region.
    "DeleteImportedKeyMaterial": "UnsupportedOperationException",
    "GetParametersForImport": "UnsupportedOperationException",
    "ImportKeyMaterial": "UnsupportedOperationException",
    "ReplicateKey": "UnsupportedOperationException",
    # The emulator never rotates key material.
    "RotateKeyOnDemand": "UnsupportedOperationException",
}
# Which kind of key an operation's KeyId names (default: symmetric encryption).
KEY_FOR = {
    "Sign": ("ECC_NIST_P256", "SIGN_VERIFY"),
    "Verify": ("ECC_NIST_P256", "SIGN_VERIFY"),
    "GetPublicKey": ("ECC_NIST_P256", "SIGN_VERIFY"),
    "DeriveSharedSecret": ("ECC_NIST_P256", "KEY_AGREEMENT"),
    "GenerateMac": ("HMAC_256", "GENERATE_VERIFY_MAC"),
    "VerifyMac": ("HMAC_256", "GENERATE_VERIFY_MAC"),
}


@pytest.fixture(scope="module")
def walk_emulator(enclave: Enclave) -> Iterator[KmsEmulator]:
    emulator = KmsEmulator(EmulatorConfig(trust_root=enclave.kit.root)).start()
    yield emulator
    emulator.stop()


def _peer_spki() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _policy() -> str:
    statement = {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [{**statement, "Resource": "*"}]})


def _sample(shape: Shape, name: str, overrides: dict[str, Any]) -> Any:
    """A value for one member: an override by name, else the smallest the model allows."""
    if name in overrides:
        return overrides[name]
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        members = shape.members  # type: ignore[attr-defined]
        return {m: _sample(members[m], m, overrides) for m in shape.required_members}
    if kind == "list":
        return [_sample(shape.member, name, overrides)] * max(meta.get("min", 1), 1)  # type: ignore[attr-defined]
    if kind == "map":
        return {}
    if kind == "string":
        return meta["enum"][0] if meta.get("enum") else "x" * max(meta.get("min", 1), 1)
    if kind == "blob":
        return b"x" * max(meta.get("min", 1), 1)
    if kind in ("integer", "long"):
        return meta.get("min", 1)
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return datetime.now(UTC)
    raise AssertionError(f"no sample for {kind}")  # pragma: no cover


@pytest.mark.parametrize("operation", sorted(MODEL.operation_names))
def test_every_model_operation_gets_a_real_answer_or_unsupported(
    walk_emulator: KmsEmulator, operation: str
) -> None:
    kms = client(walk_emulator.endpoint_url)
    spec, usage = KEY_FOR.get(operation, ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"))
    key_id = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    alias = f"alias/walk-{operation}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    overrides: dict[str, Any] = {
        "KeyId": key_id,
        "TargetKeyId": kms.create_key()["KeyMetadata"]["KeyId"],
        "DestinationKeyId": key_id,
        "AliasName": alias,
        "Policy": _policy(),
        "SigningAlgorithm": "ECDSA_SHA_256",
        "MacAlgorithm": "HMAC_SHA_256",
        "KeyAgreementAlgorithm": "ECDH",
        "PublicKey": _peer_spki(),
        "ReplicaRegion": "eu-west-1",
        "PrimaryRegion": "eu-west-1",
        "Tags": [{"TagKey": "team", "TagValue": "walk"}],
        "TagKeys": ["team"],
    }
    input_shape = MODEL.operation_model(operation).input_shape
    params = {} if input_shape is None else _sample(input_shape, "", overrides)
    try:
        getattr(kms, xform_name(operation))(**params)
        outcome = "OK"
    except ClientError as exc:
        outcome = exc.response["Error"]["Code"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        message = exc.response["Error"]["Message"]
        assert status < 500, (operation, outcome, message)
    if operation in UNSUPPORTED:
        assert outcome == "UnsupportedOperationException"
        assert operation in message
        assert operation not in walk_emulator.service.operations
    else:
        assert outcome == EXPECTED_ERRORS.get(operation, "OK"), message
        assert operation in walk_emulator.service.operations


def test_every_model_operation_is_implemented_or_known_unsupported(
    walk_emulator: KmsEmulator,
) -> None:
    implemented = walk_emulator.service.operations
    assert implemented | UNSUPPORTED == set(MODEL.operation_names)
    assert not implemented & UNSUPPORTED


def test_the_answer_check_sees_members_the_model_does_not_define(
    walk_emulator: KmsEmulator,
) -> None:
    """The hook every test client carries fails a call whose raw answer has an extra
    member (botocore's parser would drop it silently)."""
    decrypt = MODEL.operation_model("Decrypt")
    assert answer_problems(decrypt, 200, b'{"KeyId": "k", "Plaintext": "AA=="}') == []
    assert answer_problems(decrypt, 200, b'{"KeyId": "k", "Extra": 1}') == [
        "Decrypt.Extra: not a member of DecryptResponse in the model"
    ]
    describe = MODEL.operation_model("DescribeKey")
    assert answer_problems(describe, 200, b'{"KeyMetadata": {"KeyId": "k", "Nope": 1}}')
    assert answer_problems(describe, 200, b'{"KeyMetadata": {"KeyState": "Sleeping"}}')
    assert answer_problems(describe, 400, b'{"__type": "NotFoundException"}')

    kms = client(walk_emulator.endpoint_url)

    def add_member(response_dict: dict[str, Any], **_: Any) -> None:
        response_dict["body"] = response_dict["body"][:-1] + b',"Surplus":true}'

    kms.meta.events.register_first("before-parse.kms.ListKeys", add_member)
    with pytest.raises(AssertionError, match="Surplus"):
        kms.list_keys()
