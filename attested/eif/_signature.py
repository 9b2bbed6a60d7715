"""The EIF signature section: a PCR0 signature under the signing certificate (PCR8).

The section is serde_cbor's encoding of ``Vec<PcrSignature>`` (aws-nitro-enclaves-image-format
``src/defs/mod.rs``)::

    [ {"signing_certificate": [u8, ...],   # the PEM file's bytes
       "signature": [u8, ...]} , ... ]     # an untagged COSE_Sign1

Byte vectors are CBOR *arrays of small unsigned integers*, not byte strings. The
COSE_Sign1 is ``[bstr({1: alg}), {}, bstr(payload), bstr(r || s)]`` with alg ES256,
ES384 or ES512, and the payload is serde_cbor's ``PcrInfo``:
``{"register_index": 0, "register_value": [48 x u8 = PCR0]}``. Only the first entry is
used, as ``nitro-cli describe-eif`` and ``run-enclave`` do.

``describe-eif``'s ``SignatureCheck`` is true when the COSE signature verifies under the
certificate's key and the payload equals the encoding of ``PcrInfo(0, PCR0)`` byte for
byte; this module computes the same. It says nothing about *who* signed: pinning PCR8 in
a policy is what ties an image to a signer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding

from attested import _cbor, _cose, pcr
from attested.errors import MalformedError

__all__ = ["EifSignature", "encode_signature_section", "parse_signature_section"]

_MAX_ENTRIES = 32
_ENTRY_KEYS = frozenset({"signing_certificate", "signature"})
_COSE_SIGN1_TAG = 0xD2
_HEADER_ALG = 1
_PROTECTED_MAX = 64


@dataclass(frozen=True, slots=True)
class _Alg:
    name: str
    cose_id: int
    curve: type[ec.EllipticCurve]
    hash: type[hashes.HashAlgorithm]
    coordinate_size: int


_ALGS = (
    _Alg("ES256", -7, ec.SECP256R1, hashes.SHA256, 32),
    _Alg("ES384", -35, ec.SECP384R1, hashes.SHA384, 48),
    _Alg("ES512", -36, ec.SECP521R1, hashes.SHA512, 66),
)
_BY_ID = {alg.cose_id: alg for alg in _ALGS}


@dataclass(frozen=True, slots=True, kw_only=True)
class EifSignature:
    """The parsed signature section and the result of checking it.

    Attributes:
        certificate: the signing certificate (the first PEM block of the first entry).
        certificate_pem: the certificate bytes as stored in the section.
        pcr8: ``SHA384(zeros48 || SHA384(certificate DER))``: what the enclave reports
            as PCR8 and what ``nitro-cli pcr --signing-certificate`` prints.
        algorithm: the COSE algorithm named in the protected header (``"ES384"``, ...).
        signed_pcr0: the PCR0 value the signature covers, if its payload decodes.
        valid: ``describe-eif``'s ``SignatureCheck``: the signature verifies under the
            certificate's key and covers exactly ``PcrInfo(0, PCR0)`` of this image.
        problem: why ``valid`` is false, or ``None``.
        entries: how many signature entries the section holds (only the first counts).
    """

    certificate: x509.Certificate = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    pcr8: bytes
    algorithm: str
    signed_pcr0: bytes | None
    valid: bool
    problem: str | None
    entries: int


@dataclass(frozen=True, slots=True)
class _Entry:
    certificate_pem: bytes
    signature: bytes


def _byte_vector(value: object, *, what: str) -> bytes:
    """A serde ``Vec<u8>``: a CBOR array of integers 0..255."""
    if not isinstance(value, list):
        raise MalformedError(f"{what} must be a CBOR array of bytes")
    if not all(type(item) is int and 0 <= item <= 255 for item in value):
        raise MalformedError(f"{what} must hold only integers 0..255")
    return bytes(value)


def _entries(section: bytes, *, max_size: int) -> list[_Entry]:
    decoded = _cbor.decode(section, what="EIF signature section", max_size=max_size, max_depth=3)
    if not isinstance(decoded, list) or not decoded:
        raise MalformedError("EIF signature section must be a non-empty CBOR array")
    if len(decoded) > _MAX_ENTRIES:
        raise MalformedError(f"EIF signature section has more than {_MAX_ENTRIES} entries")
    entries = []
    for number, item in enumerate(decoded):
        if not isinstance(item, dict) or set(item) != _ENTRY_KEYS:
            raise MalformedError(
                f"EIF signature entry {number} must be a map of signing_certificate and signature"
            )
        entries.append(
            _Entry(
                certificate_pem=_byte_vector(
                    item["signing_certificate"], what=f"signature entry {number} certificate"
                ),
                signature=_byte_vector(item["signature"], what=f"signature entry {number} COSE"),
            )
        )
    return entries


def _parse_cose(data: bytes, *, max_size: int) -> tuple[bytes, _Alg, bytes, bytes]:
    body = data[1:] if data[:1] == bytes([_COSE_SIGN1_TAG]) else data
    item = _cbor.decode(body, what="EIF PCR0 signature", max_size=max_size, max_depth=2)
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedError("EIF PCR0 signature must be a COSE_Sign1 array of 4 items")
    protected, unprotected, payload, signature = item
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise MalformedError("EIF PCR0 signature is not a COSE_Sign1 (bstr, map, bstr, bstr)")
    header = _cbor.decode(
        protected, what="EIF signature protected header", max_size=_PROTECTED_MAX, max_depth=1
    )
    if not isinstance(header, dict) or _HEADER_ALG not in header:
        raise MalformedError("EIF signature protected header names no algorithm")
    alg_id = header[_HEADER_ALG]
    alg = _BY_ID.get(alg_id) if isinstance(alg_id, int) else None
    if alg is None:
        raise MalformedError(f"EIF signature algorithm {alg_id!r:.20} is not ES256, ES384 or ES512")
    return protected, alg, payload, signature


def pcr_info_payload(pcr0: bytes) -> bytes:
    """serde_cbor's encoding of ``PcrInfo { register_index: 0, register_value: pcr0 }``."""
    return _cbor.encode({"register_index": 0, "register_value": list(pcr0)})


def _signed_pcr0(payload: bytes) -> bytes | None:
    try:
        info = _cbor.decode(payload, what="PcrInfo", max_size=512, max_depth=2)
    except MalformedError:
        return None
    if not isinstance(info, dict) or info.get("register_index") != 0:
        return None
    try:
        return _byte_vector(info.get("register_value"), what="register_value")
    except MalformedError:
        return None


def _verify(
    certificate: x509.Certificate, protected: bytes, alg: _Alg, payload: bytes, signature: bytes
) -> str | None:
    """Return why the COSE signature does not verify, or ``None`` if it does."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the certificate's public key cannot be read"
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, alg.curve):
        return f"the certificate's key does not match {alg.name}"
    size = alg.coordinate_size
    if len(signature) != 2 * size:
        return f"{alg.name} signature must be {2 * size} bytes, got {len(signature)}"
    der = encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    try:
        key.verify(der, _cose.sig_structure(protected, payload), ec.ECDSA(alg.hash()))
    except InvalidSignature:
        return "the signature does not verify under the signing certificate"
    return None


def parse_signature_section(section: bytes, *, pcr0: bytes, max_size: int) -> EifSignature:
    """Parse a signature section and check it against the image's computed PCR0.

    Args:
        section: the section data.
        pcr0: PCR0 computed from the image's sections.
        max_size: refuse larger sections.

    Returns:
        The signature, with ``valid`` telling whether it covers this PCR0 under the
        certificate's key. A signature that does not verify is a result, not an error.

    Raises:
        MalformedError: the section, the certificate or the COSE_Sign1 is not well formed
            (``describe-eif`` fails on these too).
    """
    entries = _entries(section, max_size=max_size)
    first = entries[0]
    try:
        certificate = x509.load_pem_x509_certificate(first.certificate_pem)
    except ValueError as exc:
        raise MalformedError("EIF signing certificate is not a PEM X.509 certificate") from exc
    protected, alg, payload, signature = _parse_cose(first.signature, max_size=max_size)
    problem = _verify(certificate, protected, alg, payload, signature)
    signed = _signed_pcr0(payload)
    if problem is None and payload != pcr_info_payload(pcr0):
        problem = (
            "the signature covers a different PCR0"
            if signed is not None and signed != pcr0
            else "the signed payload is not PcrInfo(0, PCR0) of this image"
        )
    return EifSignature(
        certificate=certificate,
        certificate_pem=first.certificate_pem,
        pcr8=pcr.pcr8_from_certificate(certificate.public_bytes(Encoding.DER)),
        algorithm=alg.name,
        signed_pcr0=signed,
        valid=problem is None,
        problem=problem,
        entries=len(entries),
    )


def encode_signature_section(
    *,
    pcr0: bytes,
    certificate_pem: bytes,
    private_key: ec.EllipticCurvePrivateKey,
    extra_entries: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """Build a signature section as ``nitro-cli build-enclave --private-key`` writes it.

    Args:
        pcr0: the image's PCR0.
        certificate_pem: the signing certificate file (PEM).
        private_key: the certificate's key (P-256, P-384 or P-521).
        extra_entries: further ``(certificate_pem, cose)`` entries, for tests.

    Returns:
        The section data.
    """
    alg = next((a for a in _ALGS if isinstance(private_key.curve, a.curve)), None)
    if alg is None:
        raise ValueError("the signing key must be on P-256, P-384 or P-521")
    protected = _cbor.encode({_HEADER_ALG: alg.cose_id})
    payload = pcr_info_payload(pcr0)
    r, s = decode_dss_signature(
        private_key.sign(_cose.sig_structure(protected, payload), ec.ECDSA(alg.hash()))
    )
    size = alg.coordinate_size
    cose = _cose.encode_sign1(
        protected=protected,
        payload=payload,
        signature=r.to_bytes(size, "big") + s.to_bytes(size, "big"),
    )
    entries = [(certificate_pem, cose), *extra_entries]
    return _cbor.encode(
        [{"signing_certificate": list(cert), "signature": list(sig)} for cert, sig in entries]
    )
