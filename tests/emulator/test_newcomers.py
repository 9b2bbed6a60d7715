"""What a newcomer who is not in Python meets: the log says why, and how to fix it.

Unknown access keys keep KMS's ``UnrecognizedClientException`` for the client while the
emulator's log names the key and the way out; failed requests of a known caller name the
caller; a ciphertext that does not open says why in the log (never to the client, as in
KMS); a Recipient document that is really a file name or base64 text gets a hint; and
``accept_any_credentials`` takes unknown callers as the development identity.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, EmulatorConfig, KmsEmulator
from attested.emulator._sigv4 import Identity
from tests.emulator.conftest import ACCOUNT, OAEP, Enclave, client

LOGGER = "attested.emulator"


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


def test_an_unknown_access_key_is_refused_and_the_log_says_how_to_fix_it(
    kms: Any, emulator: KmsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = client(emulator.endpoint_url, access_key="AKIASTRANGER0000000", secret="x")
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
        stranger.list_keys()
    assert _code(error) == "UnrecognizedClientException"
    assert "AKIASTRANGER" not in str(error.value)  # KMS's answer, unchanged
    (line,) = [line for line in _lines(caplog) if "ListKeys" in line]
    assert line.startswith("- ListKeys -> UnrecognizedClientException")
    assert "unknown access key id 'AKIASTRANGER0000000'" in line
    assert DEV_ACCESS_KEY_ID in line
    assert "--identities" in line
    assert "--accept-any-credentials" in line
    assert DEV_SECRET_ACCESS_KEY not in "\n".join(_lines(caplog))


def test_a_failed_request_of_a_known_caller_names_the_caller(
    kms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
        kms.describe_key(KeyId="alias/no-such-alias")
    assert _code(error) == "NotFoundException"
    (line,) = [line for line in _lines(caplog) if "DescribeKey" in line]
    assert line.startswith(f"arn:aws:iam::{ACCOUNT}:role/attested-developer DescribeKey -> ")
    assert "NotFoundException" in line
    assert "alias/no-such-alias" in line  # why, from the message


def test_why_a_ciphertext_does_not_open_is_logged_not_answered(
    kms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s", EncryptionContext={"app": "a"})["CiphertextBlob"]
    cases = {
        "wrong context": (dict(CiphertextBlob=blob, EncryptionContext={"app": "b"}), "context"),
        "no context": (dict(CiphertextBlob=blob), "keys given: none"),
        "not ours": (dict(CiphertextBlob=b"\x07" * 80), "not this emulator's ciphertext"),
        "unknown key": (dict(CiphertextBlob=blob[:1] + b"\x00" * 16 + blob[17:]), "no such key"),
    }
    for name, (arguments, reason) in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
            kms.decrypt(**arguments)
        assert _code(error) == "InvalidCiphertextException", name
        assert error.value.response["Error"].get("Message", "") == "", name  # as KMS
        (line,) = [line for line in _lines(caplog) if "Decrypt" in line]
        assert "InvalidCiphertextException" in line, name
        assert reason in line, (name, line)
        assert "'b'" not in line  # context values are not logged, only keys


@pytest.mark.parametrize(
    ("document", "hint"),
    [
        (b"fileb://doc.cbor", "AttestationDocument@=fileb://doc.cbor"),
        (b"file://doc.cbor", "did you pass a file name?"),
        (None, "It is base64 text"),
    ],
)
def test_a_recipient_document_that_is_a_file_name_or_base64_gets_a_hint(
    kms: Any, enclave: Enclave, document: bytes | None, hint: str
) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s")["CiphertextBlob"]
    if document is None:  # the document's base64, sent as its bytes
        document = base64.b64encode(enclave.document())
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": document}
    with pytest.raises(ClientError) as error:
        kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    assert _code(error) == "ValidationException"
    assert hint in error.value.response["Error"]["Message"]


def test_a_damaged_document_gets_no_hint(kms: Any, enclave: Enclave) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s")["CiphertextBlob"]
    damaged = enclave.document()[:-40]
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": damaged}
    with pytest.raises(ClientError) as error:
        kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    message = error.value.response["Error"]["Message"]
    assert "malformed" in message
    assert "file name" not in message
    assert "base64" not in message


def test_accept_any_credentials_takes_unknown_callers_as_the_developer(
    enclave: Enclave,
    start_emulator: Callable[..., KmsEmulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    known = Identity(secret_access_key="known-secret", arn="arn:aws:iam::444455556666:role/app")
    emulator = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root,
            identities={"AKIAKNOWN0000000000": known},
            accept_any_credentials=True,
        )
    )
    anyone = client(emulator.endpoint_url, access_key="AKIALOCALSTACKTEST", secret="test")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        arn = anyone.create_key()["KeyMetadata"]["Arn"]
        anyone.list_keys()
    assert arn.startswith("arn:aws:kms:us-east-1:444455556666:key/")  # the keys' account
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per access key id
    assert "AKIALOCALSTACKTEST" in warnings[0].getMessage()
    assert "arn:aws:iam::444455556666:role/attested-developer" in warnings[0].getMessage()
    # A key the emulator knows is still checked against its secret.
    wrong = client(emulator.endpoint_url, access_key="AKIAKNOWN0000000000", secret="wrong")
    with pytest.raises(ClientError) as error:
        wrong.list_keys()
    assert _code(error) == "InvalidSignatureException"
    # And everything of SigV4 but the signature: the region of the scope, for one.
    elsewhere = client(emulator.endpoint_url, access_key="AKIAANY", secret="x", region="eu-west-1")
    with pytest.raises(ClientError) as error:
        elsewhere.list_keys()
    assert _code(error) == "InvalidSignatureException"


def test_without_the_flag_unknown_callers_stay_unrecognized(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emulator = start_emulator(EmulatorConfig(trust_root=enclave.kit.root))
    anyone = client(emulator.endpoint_url, access_key="AKIALOCALSTACKTEST", secret="test")
    with pytest.raises(ClientError) as error:
        anyone.list_keys()
    assert _code(error) == "UnrecognizedClientException"
