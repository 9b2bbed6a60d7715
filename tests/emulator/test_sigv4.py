"""Authentication: SigV4 checked with botocore's signer, as AWS checks it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from attested.emulator import EmulatorConfig, Identity, KmsEmulator
from tests.emulator.conftest import Enclave, client
from tests.emulator.rawhttp import call, post, sign, sign_only

ROLE = "arn:aws:iam::111122223333:role/parent"


def code_of(kms: Any) -> str:
    with pytest.raises(ClientError) as info:
        kms.list_keys()
    return str(info.value.response["Error"]["Code"])


@pytest.fixture
def identities_emulator(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> KmsEmulator:
    identities = {
        "AKIDPERMANENT": Identity(secret_access_key="permanent-secret", arn=ROLE),
        "ASIATEMPORARY": Identity(
            secret_access_key="temporary-secret",
            session_token="the-session-token",
            arn="arn:aws:sts::111122223333:assumed-role/parent/i-0123",
        ),
    }
    return start_emulator(EmulatorConfig(trust_root=enclave.kit.root, identities=identities))


def test_known_identities_authenticate(identities_emulator: KmsEmulator) -> None:
    url = identities_emulator.endpoint_url
    assert "Keys" in client(url, access_key="AKIDPERMANENT", secret="permanent-secret").list_keys()
    temporary = client(
        url, access_key="ASIATEMPORARY", secret="temporary-secret", token="the-session-token"
    )
    meta = temporary.create_key()["KeyMetadata"]
    # The session's role is the account's: the default policy lets it describe the key.
    assert temporary.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Arn"] == meta["Arn"]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"access_key": "AKIDUNKNOWN", "secret": "x"}, "UnrecognizedClientException"),
        ({"access_key": "AKIDPERMANENT", "secret": "wrong"}, "InvalidSignatureException"),
        (
            {"access_key": "AKIDPERMANENT", "secret": "permanent-secret", "token": "t"},
            "UnrecognizedClientException",
        ),
        (
            {"access_key": "ASIATEMPORARY", "secret": "temporary-secret"},
            "UnrecognizedClientException",
        ),
        (
            {"access_key": "ASIATEMPORARY", "secret": "temporary-secret", "token": "other"},
            "UnrecognizedClientException",
        ),
        (
            {"access_key": "AKIDPERMANENT", "secret": "permanent-secret", "region": "eu-west-1"},
            "InvalidSignatureException",
        ),
    ],
)
def test_bad_credentials_are_refused(
    identities_emulator: KmsEmulator, kwargs: dict[str, Any], code: str
) -> None:
    assert code_of(client(identities_emulator.endpoint_url, **kwargs)) == code


@pytest.mark.parametrize("offset", [timedelta(minutes=6), timedelta(minutes=-6)])
def test_clock_skew_beyond_five_minutes_is_refused(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], offset: timedelta
) -> None:
    emu = start_emulator(
        EmulatorConfig(trust_root=enclave.kit.root, clock=lambda: datetime.now(UTC) + offset)
    )
    with pytest.raises(ClientError) as info:
        client(emu.endpoint_url).list_keys()
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "Signature" in info.value.response["Error"]["Message"]


def test_skew_within_five_minutes_is_accepted(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root, clock=lambda: datetime.now(UTC) + timedelta(minutes=4)
        )
    )
    assert "Keys" in client(emu.endpoint_url).list_keys()


def test_a_body_changed_after_signing_is_refused(emulator: KmsEmulator) -> None:
    url = emulator.endpoint_url
    headers = sign(url, "GenerateRandom", b'{"NumberOfBytes": 8}')
    status, answer, _ = post(url, b'{"NumberOfBytes": 9}', headers)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    status, answer, _ = post(url, b'{"NumberOfBytes": 8}', headers)
    assert status == 200
    assert answer["Plaintext"]


def test_a_changed_operation_is_refused(emulator: KmsEmulator) -> None:
    url = emulator.endpoint_url
    headers = sign(url, "GenerateRandom", b'{"NumberOfBytes": 8}')
    headers["X-Amz-Target"] = "TrentService.ListKeys"
    status, answer, _ = post(url, b'{"NumberOfBytes": 8}', headers)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda h: h.pop("Authorization"), "MissingAuthenticationTokenException"),
        (
            lambda h: h.update(Authorization="AWS4-HMAC-SHA256 Credential=x"),
            "IncompleteSignatureException",
        ),
        (
            lambda h: h.update(Authorization=h["Authorization"].replace("/kms/", "/s3/")),
            "InvalidSignatureException",
        ),
        (lambda h: h.update({"X-Amz-Date": "yesterday"}), "IncompleteSignatureException"),
    ],
)
def test_malformed_authorization(
    emulator: KmsEmulator, change: Callable[[dict[str, str]], object], code: str
) -> None:
    url = emulator.endpoint_url
    headers = sign(url, "ListKeys", b"{}")
    change(headers)
    status, answer, _ = post(url, b"{}", headers)
    assert (status, answer["__type"]) == (400, code)


def test_secrets_never_appear_in_reprs_or_answers(identities_emulator: KmsEmulator) -> None:
    config = identities_emulator.config
    assert "permanent-secret" not in repr(config)
    assert "the-session-token" not in repr(config.identities)
    status, answer = call(
        identities_emulator.endpoint_url,
        "ListKeys",
        b"{}",
        access_key="AKIDPERMANENT",
        secret="wrong",
    )
    assert status == 400
    assert "permanent-secret" not in json.dumps(answer)
    assert "wrong" not in json.dumps(answer)


@pytest.mark.parametrize("unsigned", ["x-amz-target", "x-amz-date"])
def test_headers_aws_requires_signed_must_be_signed(emulator: KmsEmulator, unsigned: str) -> None:
    """A signature that leaves X-Amz-Target (or X-Amz-Date) out of SignedHeaders is refused:
    otherwise a captured request could be replayed as another operation (or at another time).
    AWS requires both signed; botocore and every AWS SDK sign them."""
    url = emulator.endpoint_url
    signed = {"host", "content-type", "x-amz-target", "x-amz-date"} - {unsigned}
    headers = sign_only(url, "GenerateRandom", b'{"NumberOfBytes": 8}', signed=signed)
    status, answer, _ = post(url, b'{"NumberOfBytes": 8}', headers)
    assert (status, answer["__type"]) == (400, "IncompleteSignatureException")
    assert unsigned in answer["message"].lower()
    # The replay the issue describes: the same signature, another operation.
    replay = {**headers, "X-Amz-Target": "TrentService.ListKeys"}
    status, answer, _ = post(url, b'{"NumberOfBytes": 8}', replay)
    assert (status, answer["__type"]) == (400, "IncompleteSignatureException")


def test_the_same_request_with_every_required_header_signed_is_accepted(
    emulator: KmsEmulator,
) -> None:
    url = emulator.endpoint_url
    signed = {"host", "content-type", "x-amz-target", "x-amz-date"}
    headers = sign_only(url, "GenerateRandom", b'{"NumberOfBytes": 8}', signed=signed)
    status, answer, _ = post(url, b'{"NumberOfBytes": 8}', headers)
    assert status == 200
    assert len(base64.b64decode(answer["Plaintext"])) == 8
