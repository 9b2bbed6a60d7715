"""Building attestation documents the way the NSM lays them out.

Payload keys come in the real order (module_id, digest, timestamp, pcrs, certificate,
cabundle, public_key, user_data, nonce), absent optional fields are CBOR null, and the
COSE_Sign1 message is untagged with ``{1: -35}`` as its protected header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from attested import _cbor, _cose

__all__ = ["build_payload", "encode_payload", "sign_payload"]


def build_payload(
    *,
    module_id: str,
    timestamp: datetime,
    pcrs: Mapping[int, bytes],
    certificate: bytes,
    pcr_field: str = "pcrs",
    cabundle: Sequence[bytes],
    public_key: bytes | None = None,
    user_data: bytes | None = None,
    nonce: bytes | None = None,
) -> dict[str, object]:
    """The payload map, keys in the NSM's order, ``None`` for absent optional fields.

    ``pcr_field`` is ``"pcrs"`` for an enclave's document, ``"nitrotpm_pcrs"`` for an
    instance's NitroTPM document.
    """
    millis = int(timestamp.astimezone(UTC).timestamp() * 1000)
    return {
        "module_id": module_id,
        "digest": "SHA384",
        "timestamp": millis,
        pcr_field: {int(i): bytes(v) for i, v in sorted(pcrs.items())},
        "certificate": certificate,
        "cabundle": list(cabundle),
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }


def encode_payload(payload: Mapping[Any, Any], *, indefinite: bool = False) -> bytes:
    """Encode the payload map; ``indefinite=True`` gives the 0xbf ... 0xff form of 2025 NSMs."""
    if not indefinite:
        return _cbor.encode(dict(payload))
    items = b"".join(_cbor.encode(k) + _cbor.encode(v) for k, v in payload.items())
    return b"\xbf" + items + b"\xff"


def sign_payload(
    payload: Mapping[Any, Any] | bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    protected: bytes = _cose.PROTECTED_ES384,
    tagged: bool = False,
) -> bytes:
    """Sign a payload (a map, or its encoding as is) into a COSE_Sign1 document."""
    body = payload if isinstance(payload, bytes) else encode_payload(payload)
    signature = _cose.sign_es384(key, protected, body)
    return _cose.encode_sign1(protected=protected, payload=body, signature=signature, tagged=tagged)
