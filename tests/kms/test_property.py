"""Property tests: the CMS reader and the credential protocol raise only our errors."""

from __future__ import annotations

import contextlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.errors import (
    CredentialsUnavailable,
    EnvelopeDecryptionError,
    EnvelopeNotForRecipient,
    MalformedEnvelope,
    MalformedError,
)
from attested.kms import RecipientKey, open_envelope
from attested.kms import _credproto as proto
from attested.kms._cms import parse_envelope
from tests.kms import envelopes as env
from tests.kms.conftest import CMS, KeyedVector

OURS = (MalformedEnvelope, EnvelopeNotForRecipient, EnvelopeDecryptionError)
VECTORS = sorted(CMS.glob("*.der"))


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted or the tail cut."""
    blob = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and blob:
            blob[at] = draw(st.sampled_from([0x00, 0x80, 0x81, 0xFF, 0x30, 0xA0, 0x04, 0x24]))
        elif kind == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and blob:
            del blob[at]
        elif kind == "cut":
            del blob[at:]
    return bytes(blob)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_malformed_envelope(data: bytes) -> None:
    with contextlib.suppress(MalformedEnvelope):
        parse_envelope(data)


@given(st.binary(max_size=64).map(lambda tail: b"\x30\x80" + tail))
def test_arbitrary_ber_looking_bytes_raise_only_malformed_envelope(data: bytes) -> None:
    with contextlib.suppress(MalformedEnvelope):
        parse_envelope(data)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda p: p.stem)
@settings(max_examples=150)
@given(data=st.data())
def test_mutated_vectors_raise_only_our_errors(data: st.DataObject, vector, edgebit) -> None:
    blob = data.draw(mutations(vector.read_bytes()))
    try:
        result = open_envelope(blob, edgebit.key)
    except OURS:
        return
    # The envelope is not authenticated: a change to the IV or to the ciphertext can
    # still decrypt (to other bytes). That is why only TLS to KMS is trusted.
    assert isinstance(result, bytes)


@settings(max_examples=60)
@given(
    plaintext=st.binary(max_size=1200),
    chunk=st.integers(1000 // 4, 1000),
    content=st.sampled_from(["chunks", "primitive", "definite-chunks", "nested"]),
    definite=st.booleans(),
)
def test_generated_envelopes_round_trip(
    plaintext: bytes,
    chunk: int,
    content: str,
    definite: bool,
    rsa_key: rsa.RSAPrivateKey,
    recipient_key: RecipientKey,
) -> None:
    blob = env.build(
        plaintext, rsa_key.public_key(), content=content, chunk_size=chunk, definite=definite
    )
    assert open_envelope(blob, recipient_key) == plaintext


@settings(max_examples=150)
@given(data=st.data())
def test_mutated_generated_envelopes_raise_only_our_errors(
    data: st.DataObject, edgebit: KeyedVector
) -> None:
    private = edgebit.key
    blob = env.build(b"p" * 40, _public_of(edgebit), chunk_size=16, content="nested")
    mutated = data.draw(mutations(blob))
    with contextlib.suppress(*OURS):
        open_envelope(mutated, private)


def _public_of(vector: KeyedVector) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(vector.key.spki_der())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


# --- the credential protocol ---------------------------------------------------------------

GOOD = proto.AwsCredentials(
    access_key_id="ASIAEXAMPLEEXAMPLE01",
    secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    session_token="IQoJb3JpZ2luX2VjEXAMPLE+/=",
)


@given(st.binary(max_size=600))
def test_arbitrary_response_payloads_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedError, CredentialsUnavailable):
        proto.decode_response(data)


@given(st.binary(max_size=600))
def test_arbitrary_request_payloads_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        proto.decode_request(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "version",
                "type",
                "access_key_id",
                "secret_access_key",
                "session_token",
                "expiration",
                "message",
                "extra",
            ]
        ),
        json_values,
    )
)
def test_arbitrary_json_objects_raise_only_our_errors(message: dict[str, object]) -> None:
    import json

    payload = json.dumps(message).encode()
    with contextlib.suppress(MalformedError, CredentialsUnavailable):
        proto.decode_response(payload)


@given(data=st.data())
def test_mutated_credential_frames_raise_only_our_errors(data: st.DataObject) -> None:
    frame = proto.encode_credentials(GOOD)
    payload = data.draw(mutations(frame[proto.HEADER_SIZE :]))
    with contextlib.suppress(MalformedError, CredentialsUnavailable):
        proto.decode_response(payload)


@given(st.binary(min_size=4, max_size=4))
def test_frame_headers_are_bounded(header: bytes) -> None:
    (length,) = struct.unpack(">I", header)
    if 2 <= length <= proto.MAX_FRAME:
        assert proto.frame_length(header) == length
    else:
        with pytest.raises(MalformedError):
            proto.frame_length(header)


def _outcome(blob: bytes) -> object:
    try:
        return parse_envelope(blob)
    except MalformedEnvelope as exc:
        return ("refused", str(exc))


@settings(max_examples=200)
@given(data=st.data())
def test_the_kms_encoding_shortcut_decides_like_the_full_path(data: st.DataObject) -> None:
    """The pre-checked keyEncryptionAlgorithm must never change a verdict."""
    from attested.kms import _cms

    vector = data.draw(st.sampled_from(VECTORS))
    blob = data.draw(mutations(vector.read_bytes()))
    fast = _outcome(blob)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_cms, "_KMS_KEY_ALGORITHM", b"")  # disables the shortcut
        slow = _outcome(blob)
    assert fast == slow
