"""The binding and its wire formats: exact encodings, size caps, and arbitrary input."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.errors import MalformedError
from attested.limits import DEFAULT_LIMITS
from attested.tls._binding import (
    BINDING_LABEL,
    EVIDENCE_OID,
    MAX_CERTIFICATE_SIZE,
    MAX_REQUEST_HEAD,
    WELL_KNOWN_PATH,
    binding_matches,
    decode_evidence,
    encode_evidence,
    evidence_from_certificate,
    key_binding,
    parse_fresh_request,
)
from tests.tls.support import self_signed

CAP = DEFAULT_LIMITS.max_document_size


def test_the_binding_is_a_label_and_the_sha256_of_the_spki() -> None:
    assert key_binding(b"spki") == b"attested-tls/v1\x00" + hashlib.sha256(b"spki").digest()
    assert len(BINDING_LABEL) == 16
    assert binding_matches(key_binding(b"spki"), b"spki")
    assert not binding_matches(key_binding(b"spki"), b"other")
    assert not binding_matches(hashlib.sha256(b"spki").digest(), b"spki")  # no label
    assert not binding_matches(None, b"spki")


@pytest.mark.parametrize("size", [1, 0x7F, 0x80, 0xFF, 0x100, 4800, CAP])
def test_evidence_round_trips_at_every_length_form(size: int) -> None:
    document = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert decode_evidence(encode_evidence(document)) == document


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "not an OCTET STRING"),
        (b"\x30\x01\x00", "not an OCTET STRING"),
        (b"\x04\x00", "1-"),
        (b"\x04\x02\x00", "does not match"),
        (b"\x04\x01\x00\x00", "does not match"),
        (b"\x04\x81\x05" + b"\x00" * 5, "minimally"),
        (b"\x04\x82\x00\x90" + b"\x00" * 0x90, "minimally"),
        (b"\x04\x83\x00\x00\x01\x00", "out of range"),
        (b"\x04\x80\x00\x00", "out of range"),
        (b"\x04\x82\x40\x01" + b"\x00" * 0x4001, "larger than"),
        (b"\x04\x82", "truncated"),
    ],
)
def test_malformed_evidence_is_refused(value: bytes, why: str) -> None:
    with pytest.raises(MalformedError, match=why):
        decode_evidence(value)


def test_encode_refuses_documents_beyond_the_cap() -> None:
    with pytest.raises(ValueError, match="bytes"):
        encode_evidence(b"\x00" * (CAP + 1))
    with pytest.raises(ValueError, match="bytes"):
        encode_evidence(b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_extension_values_raise_only_malformed(value: bytes) -> None:
    try:
        document = decode_evidence(value)
    except MalformedError:
        return
    assert encode_evidence(document) == value  # what is accepted is exactly the DER form


_WITH_EVIDENCE = x509.Extension(
    EVIDENCE_OID, False, x509.UnrecognizedExtension(EVIDENCE_OID, encode_evidence(b"\xd2" * 300))
)
_GOOD = x509.load_pem_x509_certificate(self_signed(extensions=[_WITH_EVIDENCE])[0]).public_bytes(
    Encoding.DER
)


def _mutated(edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(_GOOD)
    for where, value in edits:
        data[where % len(data)] = value
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4).map(
            _mutated
        ),
        st.integers(0, len(_GOOD)).map(lambda n: _GOOD[:n]),
    )
)
def test_arbitrary_certificates_raise_only_malformed(der: bytes) -> None:
    """Random bytes, and a real certificate carrying evidence with bytes changed or cut."""
    with contextlib.suppress(MalformedError):
        evidence_from_certificate(der)


def test_certificate_size_is_capped_before_parsing() -> None:
    with pytest.raises(MalformedError, match="larger than"):
        evidence_from_certificate(b"\x30" * (MAX_CERTIFICATE_SIZE + 1))
    with pytest.raises(MalformedError, match="no certificate"):
        evidence_from_certificate(b"")


def test_a_certificate_without_the_extension_has_no_evidence() -> None:
    cert_pem, _ = self_signed()
    _, document = evidence_from_certificate(_der(cert_pem))
    assert document is None


def test_a_certificate_with_a_bad_extension_value_is_malformed() -> None:
    bad = x509.Extension(EVIDENCE_OID, False, x509.UnrecognizedExtension(EVIDENCE_OID, b"\x05\x00"))
    cert_pem, _ = self_signed(extensions=[bad])
    with pytest.raises(MalformedError, match="OCTET STRING"):
        evidence_from_certificate(_der(cert_pem))


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_fresh_request_parsing() -> None:
    nonce = bytes(range(32))
    request = parse_fresh_request(
        f"GET {WELL_KNOWN_PATH}?nonce={nonce.hex()} HTTP/1.1\r\nHost: x\r\n"
        "Connection: keep-alive, close".encode()
    )
    assert request.nonce == nonce
    assert request.close
    assert not parse_fresh_request(f"GET {WELL_KNOWN_PATH}?nonce=00 HTTP/1.0".encode()).close


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"POST /.well-known/attested-tls/attestation?nonce=00 HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation?nonce=0 HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation?nonce=zz HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation?nonce=00&nonce=01 HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation?nonce=" + b"00" * 65 + b" HTTP/1.1",
        b"GET /.well-known/attested-tls/attestationX?nonce=00 HTTP/1.1",
        b"GET /.well-known/attested-tls/attestation?nonce=00 HTTP/2.0",
        b"GET /.well-known/attested-tls/attestation?nonce=00 HTTP/1.1\r\n"
        + b"a" * MAX_REQUEST_HEAD,
    ],
)
def test_bad_fresh_requests_are_refused(head: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_fresh_request(head)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(lambda tail: f"GET {WELL_KNOWN_PATH}".encode() + tail, st.binary(max_size=300)),
    )
)
def test_arbitrary_request_heads_raise_only_malformed(head: bytes) -> None:
    try:
        request = parse_fresh_request(head)
    except MalformedError:
        return
    assert 1 <= len(request.nonce) <= 64


def test_a_certificate_with_a_negative_serial_number_is_malformed() -> None:
    # Found by the property test above: cryptography only warns about it (an error in a
    # coming release), which escaped as a CryptographyDeprecationWarning.
    version_then_serial = b"\xa0\x03\x02\x01\x02\x02"
    at = _GOOD.index(version_then_serial) + len(version_then_serial) + 1  # the first byte
    negative = _GOOD[:at] + bytes([_GOOD[at] | 0x80]) + _GOOD[at + 1 :]
    with pytest.raises(MalformedError, match="the peer's certificate"):
        evidence_from_certificate(negative)
