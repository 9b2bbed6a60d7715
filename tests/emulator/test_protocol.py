"""Request validation from botocore's KMS model, and robustness against any body."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attested.emulator import DEV_ARN, KmsEmulator
from attested.emulator._service import KmsService
from attested.emulator._sigv4 import Caller
from attested.emulator._store import KeyStore
from attested.kms._wire import ApiError
from tests.emulator.conftest import ACCOUNT, Enclave
from tests.emulator.rawhttp import call, post, sign

CALLER = Caller(access_key_id="AKIA", arn=DEV_ARN, principal_arn=DEV_ARN, account=ACCOUNT)
OPERATIONS = sorted(
    [
        "CancelKeyDeletion", "CreateAlias", "CreateKey", "Decrypt", "DeleteAlias",
        "DeleteImportedKeyMaterial", "DeriveSharedSecret", "DescribeKey", "DisableKey",
        "DisableKeyRotation", "EnableKey", "EnableKeyRotation", "Encrypt", "GenerateDataKey",
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext", "GenerateMac", "GenerateRandom", "GetKeyPolicy",
        "GetKeyRotationStatus", "GetParametersForImport", "GetPublicKey", "ImportKeyMaterial",
        "ListAliases", "ListGrants", "ListKeyPolicies", "ListKeyRotations", "ListKeys",
        "ListResourceTags", "ListRetirableGrants", "PutKeyPolicy", "ReEncrypt", "ReplicateKey",
        "RotateKeyOnDemand", "ScheduleKeyDeletion", "Sign", "TagResource", "UntagResource",
        "UpdateAlias", "UpdateKeyDescription", "Verify", "VerifyMac",
    ]
)  # fmt: skip
# Client errors an arbitrary request may earn; anything else (a 500) is a bug.
ALLOWED = {
    "SerializationException",
    "ValidationException",
    "InvalidCiphertextException",
    "NotFoundException",
    "IncorrectKeyException",
    "InvalidKeyUsageException",
    "AccessDeniedException",
    "UnsupportedOperationException",
    "MalformedPolicyDocumentException",
    "InvalidAliasNameException",
    "AlreadyExistsException",
    "InvalidMarkerException",
    "KMSInvalidStateException",
    "DisabledException",
    "DryRunOperationException",
    "LimitExceededException",
    "TagException",
    "KMSInvalidSignatureException",
    "KMSInvalidMacException",
}


@pytest.fixture(scope="module")
def service(enclave: Enclave) -> KmsService:
    svc = KmsService(
        region="us-east-1",
        account_id=ACCOUNT,
        trust_root=enclave.kit.root,
        store=KeyStore(None, region="us-east-1", account_id=ACCOUNT),
    )
    svc.call("CreateKey", {}, CALLER, datetime.now(UTC))
    return svc


def test_service_implements_the_documented_operations(service: KmsService) -> None:
    assert sorted(service.operations) == OPERATIONS


def test_validation_messages_follow_kms(emulator: KmsEmulator) -> None:
    url = emulator.endpoint_url
    status, answer = call(url, "GenerateRandom", b'{"NumberOfBytes": 2000}')
    assert status == 400
    assert answer == {
        "__type": "ValidationException",
        "message": "1 validation error detected: Value '2000' at 'numberOfBytes' failed to "
        "satisfy constraint: Member must have value less than or equal to 1024",
    }
    status, answer = call(url, "Encrypt", b'{"KeyId": "", "Plaintext": ""}')
    assert answer["__type"] == "ValidationException"
    assert answer["message"] == (
        "2 validation errors detected: Value '' at 'keyId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; Value at 'plaintext' "
        "failed to satisfy constraint: Member must have length greater than or equal to 1"
    )
    status, answer = call(url, "DescribeKey", b"{}")
    assert (
        "Value null at 'keyId' failed to satisfy constraint: Member must not be null"
        in (answer["message"])
    )
    big = base64.b64encode(bytes(5000)).decode()
    status, answer = call(url, "Encrypt", json.dumps({"KeyId": "k", "Plaintext": big}).encode())
    assert "Member must have length less than or equal to 4096" in answer["message"]
    assert big[:20] not in answer["message"]  # blobs are never echoed


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"NumberOfBytes": "8"}', b'{"NumberOfBytes": true}',
     b'{"NumberOfBytes": 1.5}', b'{"NumberOfBytes": NaN}', b"[" * 100000,
     b'{"Recipient": {"AttestationDocument": "***"}}', b'{"Recipient": 5}', b"\xff\xfe"],
)  # fmt: skip
def test_bodies_that_are_not_kms_json(emulator: KmsEmulator, body: bytes) -> None:
    status, answer = call(emulator.endpoint_url, "GenerateRandom", body)
    assert (status, answer["__type"]) == (400, "SerializationException")


def test_unknown_and_unimplemented_operations(emulator: KmsEmulator) -> None:
    status, answer = call(emulator.endpoint_url, "FlyToTheMoon", b"{}")
    assert (status, answer["__type"]) == (400, "UnknownOperationException")
    body = b'{"KeyId": "x", "GranteePrincipal": "p", "Operations": ["Decrypt"]}'
    status, answer = call(emulator.endpoint_url, "CreateGrant", body)
    assert (status, answer["__type"]) == (400, "UnsupportedOperationException")


def _check(service: KmsService, operation: str, body: bytes) -> None:
    error: ApiError | None = None
    try:
        answer = service.handle(operation, body, CALLER, datetime.now(UTC))
    except ApiError as exc:
        error = exc
    else:
        json.loads(answer or b"{}")
    if error is not None:
        assert error.code in ALLOWED, (error.code, str(error))
        assert error.status < 500


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPERATIONS), st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(service: KmsService, operation: str, body: bytes) -> None:
    _check(service, operation, body)


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["AQID", "alias/x", "SYMMETRIC_DEFAULT", "RSA_2048", "AES_256", "ECDH"])
)
_values = st.recursive(
    _leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    max_leaves=10,
)
_members = st.sampled_from(
    ["KeyId", "Plaintext", "CiphertextBlob", "EncryptionContext", "NumberOfBytes", "KeySpec",
     "Recipient", "DryRun", "DryRunModifiers", "Policy", "AliasName", "TargetKeyId", "Limit",
     "Marker", "KeyPairSpec", "PublicKey", "KeyAgreementAlgorithm", "DestinationKeyId",
     "EncryptionAlgorithm", "PendingWindowInDays", "KeyUsage", "GrantTokens", "Tags",
     "TagKeys", "Message", "MessageType", "Signature", "SigningAlgorithm", "Mac",
     "MacAlgorithm", "Description", "RotationPeriodInDays"]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPERATIONS), st.dictionaries(_members, _values, max_size=5))
def test_arbitrary_members_never_crash(
    service: KmsService, operation: str, params: dict[str, Any]
) -> None:
    _check(service, operation, json.dumps(params).encode())


def test_an_empty_body_is_an_empty_object(emulator: KmsEmulator) -> None:
    """Smithy awsJson1_1, "Empty body serialization": "Server implementations MUST also
    accept empty request bodies." An empty body means no members, exactly as ``{}``."""
    url = emulator.endpoint_url
    status, answer = call(url, "ListKeys", b"")
    assert status == 200
    assert answer["Keys"] == []
    assert answer["Truncated"] is False
    status, answer = call(url, "CreateKey", b"")
    assert status == 200
    assert answer["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    # Required members are still required.
    status, answer = call(url, "DescribeKey", b"")
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert "Value null at 'keyId'" in answer["message"]


def test_an_answer_without_members_is_an_empty_body(emulator: KmsEmulator) -> None:
    """Smithy awsJson1_1: with no output, "server implementations SHOULD send an empty
    response body" and still send the protocol's Content-Type."""
    url = emulator.endpoint_url
    status, answer = call(url, "CreateKey", b"{}")
    key_id = answer["KeyMetadata"]["KeyId"]
    body = json.dumps({"KeyId": key_id}).encode()
    status, raw, headers = post(url, body, sign(url, "DisableKey", body))
    assert (status, raw) == (200, {})
    assert headers["content-length"] == "0"
    assert headers["content-type"] == "application/x-amz-json-1.1"
