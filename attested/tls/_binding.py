"""The binding between a TLS key and an attestation document, and its wire formats.

Pure data, no I/O (see ``docs/adr/0110-attested-tls-binding.md``):

* :func:`key_binding`: the ``user_data`` an enclave asks the NSM for, which names the
  TLS key: a fixed 16-byte label, then SHA-256 of the key's DER SubjectPublicKeyInfo.
* :data:`EVIDENCE_OID` and :func:`encode_evidence` / :func:`evidence_from_certificate`:
  the non-critical X.509 extension that carries the document in the certificate, so
  that one handshake brings both. Its value is a DER OCTET STRING holding the document.
* :func:`parse_fresh_request`: the one request of the well-known path
  (:data:`WELL_KNOWN_PATH`) a client uses to ask for a fresh document with its nonce.

Every parser here caps its input before looking at it and raises only
:class:`~attested.errors.MalformedError`.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested._certs import load_certificate
from attested.errors import MalformedError
from attested.limits import DEFAULT_LIMITS

__all__ = [
    "BINDING_LABEL",
    "EVIDENCE_OID",
    "MAX_CERTIFICATE_SIZE",
    "MAX_NONCE_SIZE",
    "MAX_REQUEST_HEAD",
    "WELL_KNOWN_PATH",
    "FreshRequest",
    "binding_matches",
    "decode_evidence",
    "encode_evidence",
    "evidence_from_certificate",
    "key_binding",
    "parse_fresh_request",
    "spki_of",
]

EVIDENCE_OID = x509.ObjectIdentifier("2.25.276975676805174033309741778647146082946")
"""The extension's OID: a UUID-derived arc (ITU-T X.667), which needs no registration."""

BINDING_LABEL = b"attested-tls/v1\x00"
"""16 bytes that say what ``user_data`` means, so a document made for another purpose
(whose ``user_data`` happens to hold a hash) never passes as a TLS binding."""

MAX_CERTIFICATE_SIZE = 32 * 1024
"""The largest peer certificate (DER) looked at; ours are about 5.5 KB."""

MAX_NONCE_SIZE = 64
"""The largest nonce the well-known path accepts (the NSM takes up to 512)."""

MAX_REQUEST_HEAD = 8192
"""The largest request head (request line and headers) of the well-known path."""

WELL_KNOWN_PATH = "/.well-known/attested-tls/attestation"
"""Where an attested ingress answers ``GET ...?nonce=HEX`` with a fresh document."""

_DIGEST_SIZE = 32
_REQUEST_LINE = re.compile(
    rb"GET (?P<path>/[!-~]*) HTTP/1\.[01]",
)
_NONCE = re.compile(r"nonce=(?P<hex>[0-9a-fA-F]{2,128})")


def spki_of(certificate: x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of ``certificate``'s key."""
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def key_binding(spki_der: bytes) -> bytes:
    """The ``user_data`` that binds a document to the TLS key with this SubjectPublicKeyInfo."""
    return BINDING_LABEL + hashlib.sha256(spki_der).digest()


def binding_matches(user_data: bytes | None, spki_der: bytes) -> bool:
    """Whether ``user_data`` binds exactly the key ``spki_der`` (constant time)."""
    if user_data is None or len(user_data) != len(BINDING_LABEL) + _DIGEST_SIZE:
        return False
    return hmac.compare_digest(user_data, key_binding(spki_der))


def encode_evidence(document: bytes) -> bytes:
    """The extension's value: ``document`` as one DER OCTET STRING.

    Raises:
        ValueError: the document is empty or larger than the document cap.
    """
    size = len(document)
    if not 0 < size <= DEFAULT_LIMITS.max_document_size:
        raise ValueError(f"an attestation document is 1-{DEFAULT_LIMITS.max_document_size} bytes")
    if size < 0x80:
        header = bytes([0x04, size])
    elif size < 0x100:
        header = bytes([0x04, 0x81, size])
    else:
        header = bytes([0x04, 0x82]) + size.to_bytes(2, "big")
    return header + document


def decode_evidence(value: bytes) -> bytes:
    """The document inside the extension's value (one DER OCTET STRING, nothing after).

    Raises:
        MalformedError: not a minimally encoded OCTET STRING that fills ``value``
            exactly, or the document is empty or larger than the document cap.
    """
    cap = DEFAULT_LIMITS.max_document_size
    if len(value) > cap + 4:
        raise MalformedError(f"attestation extension: larger than {cap + 4} bytes")
    if len(value) < 2 or value[0] != 0x04:
        raise MalformedError("attestation extension: not an OCTET STRING")
    first = value[1]
    if first < 0x80:
        size, start = first, 2
    elif first in (0x81, 0x82):
        count = first & 0x7F
        if len(value) < 2 + count:
            raise MalformedError("attestation extension: truncated length")
        size = int.from_bytes(value[2 : 2 + count], "big")
        start = 2 + count
        if size < 0x80 or (count == 2 and size < 0x100):
            raise MalformedError("attestation extension: length not minimally encoded")
    else:
        raise MalformedError("attestation extension: length out of range")
    if start + size != len(value):
        raise MalformedError("attestation extension: length does not match its content")
    if not 0 < size <= cap:
        raise MalformedError(f"attestation extension: the document must be 1-{cap} bytes")
    return value[start:]


def evidence_from_certificate(der: bytes) -> tuple[x509.Certificate, bytes | None]:
    """Parse a peer's certificate; return it and the document it carries, if any.

    Returns:
        The certificate, and the attestation document from its extension (``None``
        when the certificate has no such extension).

    Raises:
        MalformedError: the certificate is larger than :data:`MAX_CERTIFICATE_SIZE`,
            is not DER X.509, has the extension twice, or the extension is malformed.
    """
    if not der:
        raise MalformedError("the peer presented no certificate")
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise MalformedError(f"the peer's certificate is larger than {MAX_CERTIFICATE_SIZE} bytes")
    # Parsed whole, as the attestation's own certificates are: anything cryptography
    # only warns about (a non-positive serial number) is malformed here too.
    certificate = load_certificate(der, "the peer's certificate")
    try:
        extension = certificate.extensions.get_extension_for_oid(EVIDENCE_OID)
    except x509.ExtensionNotFound:
        return certificate, None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - our own OID
        raise MalformedError("attestation extension: unexpected type")
    return certificate, decode_evidence(value.value)


class FreshRequest:
    """A parsed request for a fresh document: the client's nonce, and whether to close.

    Attributes:
        nonce: the nonce to put in the document (1-64 bytes).
        close: the client sent ``Connection: close``.
    """

    __slots__ = ("close", "nonce")

    def __init__(self, nonce: bytes, close: bool) -> None:
        self.nonce = nonce
        self.close = close

    def __repr__(self) -> str:
        return f"FreshRequest(nonce={self.nonce.hex()}, close={self.close})"


def parse_fresh_request(head: bytes) -> FreshRequest:
    """Parse the head of ``GET /.well-known/attested-tls/attestation?nonce=HEX``.

    Args:
        head: the request line and headers, without the final empty line.

    Raises:
        MalformedError: larger than :data:`MAX_REQUEST_HEAD`, not that request, or no
            nonce of 1-64 bytes in hex.
    """
    if len(head) > MAX_REQUEST_HEAD:
        raise MalformedError(f"request head larger than {MAX_REQUEST_HEAD} bytes")
    line, _, rest = head.partition(b"\r\n")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise MalformedError("expected 'GET /.well-known/attested-tls/attestation?nonce=HEX'")
    path, _, query = match["path"].decode("ascii").partition("?")
    if path != WELL_KNOWN_PATH:
        raise MalformedError(f"the only path here is {WELL_KNOWN_PATH}")
    found = [m for part in query.split("&") if (m := _NONCE.fullmatch(part))]
    if len(found) != 1 or len(found[0]["hex"]) % 2:
        raise MalformedError("give one nonce=HEX of 1-64 bytes")
    nonce = bytes.fromhex(found[0]["hex"])
    if len(nonce) > MAX_NONCE_SIZE:  # pragma: no cover - the pattern caps it
        raise MalformedError("give one nonce=HEX of 1-64 bytes")
    close = False
    for raw in rest.split(b"\r\n"):
        name, sep, value = raw.partition(b":")
        if sep and name.strip().lower() == b"connection":
            close = close or b"close" in [v.strip() for v in value.lower().split(b",")]
    return FreshRequest(nonce, close)
