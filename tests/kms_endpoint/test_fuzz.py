"""Arbitrary targets, bodies and headers get KMS-shaped answers: never a 500 or a traceback.

Requests go over real HTTP to a service backed by the in-process emulator, so the bodies
that parse reach KMS too (and are answered by KMS's errors, or succeed).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attested.kms._wire import kms_model
from tests.kms_endpoint.conftest import InProcess
from tests.kms_endpoint.raw import Reply, send

pytestmark = pytest.mark.integration

HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
)
OPERATIONS = sorted(kms_model().operation_names)
TARGETS = st.one_of(
    st.sampled_from(OPERATIONS).map(lambda name: f"TrentService.{name}"),
    HEADER_TEXT,
    HEADER_TEXT.map(lambda text: f"TrentService.{text}"),
)
B64 = st.binary(max_size=300).map(lambda data: base64.b64encode(data).decode())
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=30), B64
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
MEMBERS = st.fixed_dictionaries(
    {},
    optional={
        "KeyId": st.one_of(
            st.sampled_from(["alias/endpoint-aliased", "alias/nope", "*"]), st.text(max_size=80)
        ),
        "CiphertextBlob": B64,
        "Plaintext": B64,
        "NumberOfBytes": st.integers(-5, 1100),
        "KeySpec": st.sampled_from(["AES_256", "AES_128", "RSA_2048", "x"]),
        "KeyPairSpec": st.sampled_from(["ECC_NIST_P256", "RSA_2048", "SM2", ""]),
        "EncryptionContext": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        "GrantTokens": st.lists(st.text(max_size=10), max_size=3),
        "KeyAgreementAlgorithm": st.just("ECDH"),
        "PublicKey": B64,
        "DestinationKeyId": st.text(max_size=40),
        "Recipient": JSON,
        "DryRun": st.booleans(),
    },
)
BODIES = st.one_of(
    st.binary(max_size=400),
    JSON.map(lambda value: json.dumps(value).encode()),
    MEMBERS.map(lambda value: json.dumps(value).encode()),
)
HEADER_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.one_of(st.none(), HEADER_TEXT),
        "X-Amz-Date": st.one_of(st.none(), HEADER_TEXT),
        "Content-Type": st.one_of(st.none(), st.just("application/x-amz-json-1.0"), HEADER_TEXT),
    },
)


class Errors(logging.Handler):
    """Collects ERROR records (a traceback is logged at ERROR by the HTTP server)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def endpoint(in_process: InProcess) -> Iterator[tuple[int, Errors]]:
    service = in_process.start(kms_endpoint_allow_reencrypt=True)
    errors = Errors()
    logging.getLogger("attested").addHandler(errors)
    try:
        yield int(service.listeners["kms_endpoint"].port or 0), errors
    finally:
        logging.getLogger("attested").removeHandler(errors)


def check_kms_shaped(reply: Reply) -> None:
    assert reply.headers["content-type"] == "application/x-amz-json-1.1"
    assert reply.status < 500, reply.body
    if reply.status == 200:
        assert reply.body == b"" or isinstance(json.loads(reply.body), dict)
        return
    doc = json.loads(reply.body)
    assert isinstance(doc, dict), reply.body
    assert isinstance(doc.get("__type"), str), reply.body
    assert doc["__type"].isidentifier(), reply.body
    assert isinstance(doc.get("message", doc.get("Message")), str), reply.body
    assert "Traceback" not in reply.body.decode()


@settings(max_examples=250, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, body=BODIES, changes=HEADER_CHANGES)
def test_arbitrary_requests_get_kms_shaped_answers(
    endpoint: tuple[int, Errors],
    target: str,
    body: bytes,
    changes: dict[str, str | None],
) -> None:
    port, errors = endpoint
    reply = send(port, None, body, changes={"X-Amz-Target": target, **changes})
    check_kms_shaped(reply)
    assert errors.records == [], [r.getMessage() for r in errors.records]
