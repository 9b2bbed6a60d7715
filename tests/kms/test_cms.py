"""The strict CMS envelope reader: real vectors, one broken envelope per rule, no oracle."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from attested.errors import (
    EnvelopeDecryptionError,
    EnvelopeNotForRecipient,
    MalformedEnvelope,
    MalformedError,
)
from attested.kms import RecipientKey, open_envelope
from attested.kms._cms import MAX_DEPTH, MAX_ENVELOPE_SIZE, UNWRAP_FAILED, parse_envelope
from tests.kit import sidecar
from tests.kms import envelopes as env
from tests.kms.conftest import CMS, KeyedVector

# --- the real vectors ----------------------------------------------------------------


def test_edgebit_vector_opens_to_the_expected_plaintext(edgebit: KeyedVector) -> None:
    assert open_envelope(edgebit.blob, edgebit.key) == edgebit.plaintext
    assert len(edgebit.plaintext) == 32


def test_edgebit_recipient_id_is_sha256_of_the_spki(edgebit: KeyedVector) -> None:
    parsed = parse_envelope(edgebit.blob)
    assert parsed.recipient_key_id == hashlib.sha256(edgebit.key.spki_der()).digest()
    assert parsed.recipient_key_id.hex() == sidecar(edgebit.path)["subject_key_identifier_hex"]
    assert parsed.iv.hex() == sidecar(edgebit.path)["iv_hex"]


@pytest.mark.parametrize(
    "name", ["kms_recipient_sdkc_constructed_nokey", "kms_recipient_sdkc_primctx_nokey"]
)
def test_aws_c_sdk_vectors_parse_to_what_the_sdk_test_expects(name: str) -> None:
    path = CMS / f"{name}.der"
    expected = sidecar(path)
    parsed = parse_envelope(path.read_bytes())
    assert parsed.iv.hex() == expected["expected_iv_hex"]
    assert parsed.encrypted_content.hex() == expected["expected_ciphertext_hex"]
    assert parsed.encrypted_key.hex() == expected["expected_encrypted_key_hex"]
    assert parsed.recipient_key_id.hex() == expected["subject_key_identifier_hex"]


def test_sdkc_vectors_are_for_another_key(recipient_key: RecipientKey) -> None:
    blob = (CMS / "kms_recipient_sdkc_primctx_nokey.der").read_bytes()
    with pytest.raises(EnvelopeNotForRecipient) as caught:
        open_envelope(blob, recipient_key)
    assert parse_envelope(blob).recipient_key_id.hex() in str(caught.value)


def test_the_oaep_sha1_vector_is_refused_by_name() -> None:
    blob = (CMS / "kms_recipient_brody_oaepsha1_nokey.der").read_bytes()
    with pytest.raises(MalformedEnvelope, match="SHA-1"):
        parse_envelope(blob)


def test_trailing_bytes_after_a_real_vector_are_refused(edgebit: KeyedVector) -> None:
    for extra in (b"\x00", b"\x00\x00", b"\x05\x00"):
        with pytest.raises(MalformedEnvelope, match="after the envelope"):
            parse_envelope(edgebit.blob + extra)


def test_every_truncation_of_a_real_vector_is_malformed(edgebit: KeyedVector) -> None:
    for cut in range(len(edgebit.blob)):
        with pytest.raises(MalformedEnvelope):
            parse_envelope(edgebit.blob[:cut])


# --- what KMS may send: every accepted form round-trips ---------------------------------


@pytest.mark.parametrize(
    ("content", "chunk_size", "definite"),
    [
        ("chunks", 1000, False),  # what every real blob looks like
        ("primitive", 1000, False),  # the AWS C SDK's second vector
        ("chunks", 16, False),  # several chunks (large Decrypt answers)
        ("definite-chunks", 32, False),
        ("nested", 16, False),  # constructed OCTET STRING inside [0]
        ("chunks", 1000, True),  # definite lengths everywhere (DER-like)
    ],
)
def test_accepted_shapes_round_trip(
    recipient_key: RecipientKey,
    rsa_key: rsa.RSAPrivateKey,
    content: str,
    chunk_size: int,
    definite: bool,
) -> None:
    plaintext = os.urandom(100)
    blob = env.build(
        plaintext, rsa_key.public_key(), content=content, chunk_size=chunk_size, definite=definite
    )
    assert open_envelope(blob, recipient_key) == plaintext


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
def test_plaintext_sizes_round_trip(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey, size: int
) -> None:
    plaintext = os.urandom(size)
    assert open_envelope(env.build(plaintext, rsa_key.public_key()), recipient_key) == plaintext


def test_explicit_default_label_and_absent_hash_parameters_are_accepted(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    params = env.oaep_params(env.SHA256_ID_NO_NULL, env.SHA256_ID_NO_NULL)
    empty_label = env.tlv(
        0xA2, env.tlv(0x30, bytes.fromhex("06092a864886f70d010109") + env.tlv(0x04, b""))
    )
    params = env.tlv(0x30, params[2:] + empty_label)
    kea = env.tlv(0x30, env.OID_RSAES_OAEP + params)
    assert open_envelope(env.build(b"x", rsa_key.public_key(), kea=kea), recipient_key) == b"x"


# --- one broken envelope per rule: all MalformedEnvelope --------------------------------


def _kea(params: bytes) -> bytes:
    return env.tlv(0x30, env.OID_RSAES_OAEP + params)


def _label(value: bytes) -> bytes:
    return env.tlv(
        0xA2, env.tlv(0x30, bytes.fromhex("06092a864886f70d010109") + env.tlv(0x04, value))
    )


BROKEN: dict[str, Callable[[rsa.RSAPublicKey, bytes], dict[str, Any]]] = {
    "two recipients": lambda pk, ktri: {"recipients": [ktri, ktri]},
    "no recipient": lambda pk, ktri: {"recipients": []},
    "EnvelopedData version 0": lambda pk, ktri: {"enveloped_version": b"\x02\x01\x00"},
    "EnvelopedData version 3": lambda pk, ktri: {"enveloped_version": b"\x02\x01\x03"},
    "non-minimal INTEGER": lambda pk, ktri: {"enveloped_version": b"\x02\x02\x00\x02"},
    "recipient version 0": lambda pk, ktri: {"ri_version": b"\x02\x01\x00"},
    "rid of 20 bytes": lambda pk, ktri: {"rid": env.tlv(0x80, bytes(20))},
    "rid constructed": lambda pk, ktri: {"rid": env.tlv(0xA0, env.tlv(0x04, bytes(32)))},
    "rid issuerAndSerialNumber": lambda pk, ktri: {
        "rid": env.tlv(0x30, env.tlv(0x30, b"") + b"\x02\x01\x01")
    },
    "originatorInfo": lambda pk, ktri: {"before_recipients": env.tlv(0xA0, b"")},
    "unprotectedAttrs": lambda pk, ktri: {"extra_in_enveloped": env.tlv(0xA1, b"")},
    "extra element in EnvelopedData": lambda pk, ktri: {"extra_in_enveloped": b"\x05\x00"},
    "PKCS#1 v1.5 key transport": lambda pk, ktri: {
        "kea": env.tlv(0x30, bytes.fromhex("06092a864886f70d0101010500"))
    },
    "OAEP without parameters": lambda pk, ktri: {"kea": env.tlv(0x30, env.OID_RSAES_OAEP)},
    "OAEP with empty parameters (SHA-1 defaults)": lambda pk, ktri: {
        "kea": _kea(b"\x30\x00"),
        "oaep_hash": hashes.SHA1(),  # noqa: S303 - the envelope KMS must not send
    },
    "OAEP hash SHA-1": lambda pk, ktri: {"kea": _kea(env.oaep_params(hash_id=env.SHA1_ID))},
    "MGF1 with SHA-1": lambda pk, ktri: {"kea": _kea(env.oaep_params(mgf_hash_id=env.SHA1_ID))},
    "OAEP hash parameters not NULL": lambda pk, ktri: {
        "kea": _kea(env.oaep_params(hash_id=bytes.fromhex("301006096086480165030402010403000000")))
    },
    "OAEP with a label": lambda pk, ktri: {
        "kea": _kea(env.tlv(0x30, env.oaep_params()[2:] + _label(b"label")))
    },
    "AES-128-CBC": lambda pk, ktri: {"cipher_oid": env.OID_AES128_CBC, "cek": os.urandom(16)},
    "IV of 8 bytes": lambda pk, ktri: {"iv_element": env.tlv(0x04, bytes(8))},
    "IV missing": lambda pk, ktri: {"iv_element": b""},
    "no encryptedContent": lambda pk, ktri: {"content": "absent"},
    "contentType signedData": lambda pk, ktri: {
        "content_type": bytes.fromhex("06092a864886f70d010702")
    },
    "non-minimal OID": lambda pk, ktri: {"content_type": bytes.fromhex("060a2a80864886f70d010703")},
    "inner contentType not id-data": lambda pk, ktri: {
        "inner_type": bytes.fromhex("06092a864886f70d010702")
    },
    "trailing bytes": lambda pk, ktri: {"trailing": b"\x00"},
    "trailing bytes (definite)": lambda pk, ktri: {"definite": True, "trailing": b"\x30\x00"},
}


REASONS = {
    "two recipients": "exactly one recipient",
    "no recipient": "exactly one recipient",
    "EnvelopedData version 0": "version must be 2",
    "EnvelopedData version 3": "version must be 2",
    "non-minimal INTEGER": "version must be 2",
    "recipient version 0": "KeyTransRecipientInfo version",
    "rid of 20 bytes": "20 bytes, expected 32",
    "rid constructed": "subjectKeyIdentifier",
    "rid issuerAndSerialNumber": "subjectKeyIdentifier",
    "originatorInfo": "no originatorInfo",
    "unprotectedAttrs": "no unprotectedAttrs",
    "extra element in EnvelopedData": "encryptedContentInfo only",
    "PKCS#1 v1.5 key transport": "not RSAES-OAEP",
    "OAEP without parameters": "means SHA-1",
    "OAEP with empty parameters (SHA-1 defaults)": "SHA-1 default",
    "OAEP hash SHA-1": "hashFunc is sha1",
    "MGF1 with SHA-1": "MGF1 hash is sha1",
    "OAEP hash parameters not NULL": "NULL or absent",
    "OAEP with a label": "label must be empty",
    "AES-128-CBC": "aes128-CBC",
    "IV of 8 bytes": "IV is 8 bytes",
    "IV missing": "has 1 elements",
    "no encryptedContent": "has 2 elements",
    "contentType signedData": "not id-envelopedData",
    "non-minimal OID": "not id-envelopedData",
    "inner contentType not id-data": "not id-data",
    "trailing bytes": "after the envelope",
    "trailing bytes (definite)": "after the envelope",
}


def test_every_broken_rule_has_a_reason() -> None:
    assert set(REASONS) == set(BROKEN)


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_is_enforced(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey, rule: str
) -> None:
    public = rsa_key.public_key()
    ktri = env.tlv(
        0x30,
        b"\x02\x01\x02"
        + env.tlv(0x80, hashlib.sha256(env.spki(public)).digest())
        + env.tlv(0x30, env.OID_RSAES_OAEP + env.OAEP_SHA256)
        + env.tlv(0x04, bytes(256)),
    )
    blob = env.build(b"secret", public, **BROKEN[rule](public, ktri))
    with pytest.raises(MalformedEnvelope, match=re.escape(REASONS[rule])):
        open_envelope(blob, recipient_key)


def test_ber_rules_are_enforced(recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey) -> None:
    good = env.build(b"secret", rsa_key.public_key(), content="primitive")
    oid = bytes.fromhex("06092a864886f70d010703")
    cases = {
        # the outer containers are indefinite, so one element can change its length form
        "non-minimal length": (
            good.replace(oid, bytes.fromhex("068109") + oid[2:], 1),
            "non-minimal length",
        ),
        "leading zero length": (
            good.replace(oid, bytes.fromhex("06820009") + oid[2:], 1),
            "non-minimal length",
        ),
        "indefinite primitive": (good.replace(b"\x06\x09", b"\x06\x80", 1), "indefinite"),
        "multi-octet tag": (good.replace(b"\x02\x01\x02", b"\x1f\x02\x01\x02", 1), "tag"),
        "EOC where an element belongs": (b"\x30\x03\x00\x00\x00", "end-of-contents"),
        "length beyond its container": (b"\x30\x03\x04\x05\x00\x00\x00", "only 1 remain"),
        "five length octets": (b"\x30\x85\x00\x00\x00\x00\x10", "too large"),
        "unterminated indefinite": (b"\x30\x80\x05\x00", "truncated"),
        "empty": (b"", "empty"),
    }
    for name, (blob, reason) in cases.items():
        with pytest.raises(MalformedEnvelope, match=reason):
            open_envelope(blob, recipient_key)
        assert name


def test_ciphertext_chunks_must_be_octet_strings(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    blob = env.build(b"secret", rsa_key.public_key(), chunk_size=1000)
    # the single chunk: a0 80 04 10 ... -> a0 80 02 10 ... (an INTEGER)
    at = blob.index(b"\xa0\x80\x04\x10")
    broken = blob[:at] + b"\xa0\x80\x02\x10" + blob[at + 4 :]
    with pytest.raises(MalformedEnvelope, match="not an OCTET STRING"):
        open_envelope(broken, recipient_key)


def test_nesting_is_capped(recipient_key: RecipientKey) -> None:
    deep = b"\x30\x80" * (MAX_DEPTH + 2) + b"\x00\x00" * (MAX_DEPTH + 2)
    with pytest.raises(MalformedEnvelope, match="nesting deeper"):
        open_envelope(deep, recipient_key)


def test_size_is_capped(recipient_key: RecipientKey) -> None:
    with pytest.raises(MalformedEnvelope, match="at most"):
        open_envelope(b"\x30\x80" + bytes(MAX_ENVELOPE_SIZE), recipient_key)


def test_many_small_chunks_are_capped(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    blob = env.build(os.urandom(1000), rsa_key.public_key(), chunk_size=1)
    with pytest.raises(MalformedEnvelope, match="more than"):
        open_envelope(blob, recipient_key)


def test_non_bytes_is_a_type_error(recipient_key: RecipientKey) -> None:
    with pytest.raises(TypeError):
        open_envelope(bytearray(b"\x30\x80"), recipient_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        open_envelope(b"", "not a key")  # type: ignore[arg-type]


def test_malformed_envelope_is_a_malformed_error() -> None:
    assert issubclass(MalformedEnvelope, MalformedError)


# --- decryption failures: one type, one message -----------------------------------------


def test_every_unwrap_failure_is_the_same_error(
    recipient_key: RecipientKey,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    public = rsa_key.public_key()
    ours = hashlib.sha256(env.spki(public)).digest()
    cek = os.urandom(32)
    iv = os.urandom(16)
    cases = {
        # wrapped for another key but labelled with ours: the RSA-OAEP unwrap fails
        "OAEP failure": env.build(b"s", other_rsa_key.public_key(), key_id=ours),
        "wrapped key too short": env.build(b"s", public, wrapped_key=bytes(255)),
        "wrapped key too long": env.build(b"s", public, wrapped_key=bytes(257)),
        "content key of 16 bytes": env.build(b"s", public, cek=os.urandom(16)),
        "padding byte 0": env.build(b"s", public, padded=bytes(16)),
        "padding byte 17": env.build(b"s", public, padded=b"a" * 15 + b"\x11"),
        "inconsistent padding": env.build(b"s", public, padded=b"a" * 13 + b"\x02\x03\x03"),
        "ciphertext not whole blocks": env.build(
            b"s", public, cek=cek, iv=iv, ciphertext=os.urandom(17)
        ),
        "empty ciphertext": env.build(b"s", public, ciphertext=b"", content="primitive"),
    }
    messages = set()
    for name, blob in cases.items():
        with pytest.raises(EnvelopeDecryptionError) as caught:
            open_envelope(blob, recipient_key)
        assert type(caught.value) is EnvelopeDecryptionError, name
        messages.add(str(caught.value))
    assert messages == {UNWRAP_FAILED}


def test_a_corrupted_wrapped_key_is_the_uniform_error(
    edgebit: KeyedVector,
) -> None:
    parsed = parse_envelope(edgebit.blob)
    at = edgebit.blob.index(parsed.encrypted_key)
    flipped = bytearray(edgebit.blob)
    flipped[at + 100] ^= 0x01
    with pytest.raises(EnvelopeDecryptionError, match="could not be decrypted"):
        open_envelope(bytes(flipped), edgebit.key)


# --- recipient key rotation --------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_envelope_for_the_previous_key_still_opens_after_one_rotation() -> None:
    clock = FakeClock()
    key = RecipientKey(max_age=timedelta(minutes=10), clock=clock)
    first = key.spki_der()
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    first_public = load_der_public_key(first)
    assert isinstance(first_public, rsa.RSAPublicKey)
    blob = env.build(b"before", first_public)

    clock.now += 9 * 60
    assert key.spki_der() == first  # not yet due
    clock.now += 2 * 60
    second = key.spki_der()
    assert second != first
    assert open_envelope(blob, key) == b"before"

    clock.now += 11 * 60
    assert key.spki_der() not in (first, second)
    with pytest.raises(EnvelopeNotForRecipient):
        open_envelope(blob, key)
