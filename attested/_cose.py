"""COSE_Sign1 (RFC 9052) as the Nitro Secure Module uses it: ES384 only.

The Sig_structure is always built from the protected-header and payload bytes exactly
as received; nothing is re-encoded before verification.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from attested import _cbor
from attested.errors import MalformedError, SignatureError

__all__ = [
    "ALG_ES384",
    "PROTECTED_ES384",
    "CoseSign1",
    "encode_sign1",
    "parse_sign1",
    "sig_structure",
    "sign_es384",
    "verify_es384",
]

ALG_ES384 = -35
_COSE_SIGN1_TAG = 0xD2  # tag 18 in its one-byte form
_HEADER_ALG = 1
_ES384_SIGNATURE_SIZE = 96  # raw r || s, 48 bytes each
_HEADER_MAX_SIZE = 64


@dataclass(frozen=True, slots=True)
class CoseSign1:
    """The four parts of a COSE_Sign1 message, as received.

    Attributes:
        protected: the serialized protected header (the bstr's content).
        payload: the payload bytes (the bstr's content).
        signature: raw ``r || s``, 96 bytes.
        tagged: whether the message carried CBOR tag 18.
    """

    protected: bytes
    payload: bytes
    signature: bytes
    tagged: bool

    def sig_structure(self) -> bytes:
        """Return the bytes that are signed: ``["Signature1", protected, h'', payload]``."""
        return sig_structure(self.protected, self.payload)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """Build the COSE Sig_structure for a Sign1 message with empty external AAD."""
    return _cbor.encode(["Signature1", protected, b"", payload])


def parse_sign1(data: bytes, *, max_size: int) -> CoseSign1:
    """Parse a COSE_Sign1 message and check that it claims ES384 in its protected header.

    Args:
        data: the message, tagged (18) or untagged.
        max_size: refuse larger messages before decoding.

    Returns:
        The parts of the message; nothing is verified.

    Raises:
        MalformedError: the bytes are not a COSE_Sign1 message with an ES384 protected
            header, an empty unprotected header, an attached payload and a 96-byte
            signature.
    """
    tagged = data[:1] == bytes([_COSE_SIGN1_TAG])
    body = data[1:] if tagged else data
    item = _cbor.decode(body, what="COSE_Sign1 message", max_size=max_size, max_depth=2)
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedError("COSE_Sign1 message must be an array of 4 items")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes):
        raise MalformedError("COSE protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise MalformedError("COSE unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise MalformedError("COSE payload must be an attached byte string")
    if not isinstance(signature, bytes):
        raise MalformedError("COSE signature must be a byte string")
    if _HEADER_ALG in unprotected:
        raise MalformedError("COSE algorithm must be in the protected header only")
    if unprotected:
        raise MalformedError("COSE unprotected header must be empty")
    _check_protected(protected)
    if len(signature) != _ES384_SIGNATURE_SIZE:
        raise MalformedError(
            f"ES384 signature must be {_ES384_SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return CoseSign1(protected=protected, payload=payload, signature=signature, tagged=tagged)


def _check_protected(protected: bytes) -> None:
    if not protected:
        raise MalformedError("COSE protected header is empty: no algorithm")
    header = _cbor.decode(
        protected, what="COSE protected header", max_size=_HEADER_MAX_SIZE, max_depth=1
    )
    if not isinstance(header, dict):
        raise MalformedError("COSE protected header must be a map")
    if _HEADER_ALG not in header:
        raise MalformedError("COSE protected header has no algorithm")
    alg = header[_HEADER_ALG]
    if alg != ALG_ES384:
        raise MalformedError(f"COSE algorithm must be ES384 (-35), got {alg!r}")
    if set(header) != {_HEADER_ALG}:
        raise MalformedError("COSE protected header has parameters other than the algorithm")


def verify_es384(message: CoseSign1, public_key: object) -> None:
    """Verify the ES384 signature of ``message`` with ``public_key``.

    Raises:
        SignatureError: the key is not a P-384 key or the signature does not verify.
    """
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise SignatureError("signing certificate does not hold a P-384 key")
    r = int.from_bytes(message.signature[:48], "big")
    s = int.from_bytes(message.signature[48:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s), message.sig_structure(), ec.ECDSA(hashes.SHA384())
        )
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("document signature does not verify") from exc


def sign_es384(private_key: ec.EllipticCurvePrivateKey, protected: bytes, payload: bytes) -> bytes:
    """Sign a Sign1 message with a P-384 key and return the raw 96-byte ``r || s``."""
    der = private_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def encode_sign1(
    *,
    protected: bytes,
    payload: bytes,
    signature: bytes,
    unprotected: dict[int, object] | None = None,
    tagged: bool = False,
) -> bytes:
    """Serialize a COSE_Sign1 message (untagged unless asked, as the NSM emits it)."""
    body = _cbor.encode([protected, unprotected or {}, payload, signature])
    return bytes([_COSE_SIGN1_TAG]) + body if tagged else body


PROTECTED_ES384 = _cbor.encode({_HEADER_ALG: ALG_ES384})
"""The protected header every NSM document carries: ``{1: -35}``."""
