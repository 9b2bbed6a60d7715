"""The NSM's request and response messages, as bytes.

The NSM speaks CBOR produced by serde's externally tagged enums
(aws-nitro-enclaves-nsm-api ``src/api/mod.rs``): a request or response without fields
is its variant name as a text string (``"DescribeNSM"``), one with fields is a map of
one entry from the variant name to a map of the fields, in declaration order
(``{"ExtendPCR": {"index": 3, "data": h'..'}}``). Errors come back as
``{"Error": "<ErrorCode variant>"}``.

The request encoders are also how the binding learns the exact size of a request
before sending it (libnsm builds the same bytes and refuses more than 4096).

Response parsing accepts unknown extra fields, as serde does (libnsm ignores them
too), but insists on every field it needs, with the right type and range.
"""

from __future__ import annotations

from nsm import _cbor
from nsm._cbor import CborValue
from nsm.errors import InvalidResponse, error_for_code
from nsm.types import PCR_INDEX_MAX, Description, Digest, ErrorCode

__all__ = [
    "attestation",
    "attestation_reply",
    "attestation_size",
    "describe_nsm",
    "describe_nsm_reply",
    "describe_pcr",
    "describe_pcr_reply",
    "extend_pcr",
    "extend_pcr_reply",
    "extend_pcr_size",
    "get_random",
    "get_random_reply",
    "lock_pcr",
    "lock_pcrs",
    "lock_reply",
]

_ERRORS_BY_WIRE_NAME = {code.wire_name: code for code in ErrorCode if code is not ErrorCode.SUCCESS}

# Requests -------------------------------------------------------------------------------


def describe_nsm() -> bytes:
    """``"DescribeNSM"``."""
    return _cbor.encode("DescribeNSM")


def get_random() -> bytes:
    """``"GetRandom"``."""
    return _cbor.encode("GetRandom")


def attestation(*, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None) -> bytes:
    """``{"Attestation": {"user_data": .., "nonce": .., "public_key": ..}}``; ``None`` is null."""
    return _cbor.encode(
        {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
    )


def describe_pcr(index: int) -> bytes:
    """``{"DescribePCR": {"index": index}}``."""
    return _cbor.encode({"DescribePCR": {"index": index}})


def extend_pcr(index: int, data: bytes) -> bytes:
    """``{"ExtendPCR": {"index": index, "data": data}}``."""
    return _cbor.encode({"ExtendPCR": {"index": index, "data": data}})


def lock_pcr(index: int) -> bytes:
    """``{"LockPCR": {"index": index}}``."""
    return _cbor.encode({"LockPCR": {"index": index}})


def lock_pcrs(range_: int) -> bytes:
    """``{"LockPCRs": {"range": range_}}``."""
    return _cbor.encode({"LockPCRs": {"range": range_}})


_NULL_SIZE = 1
_ATTESTATION_ENVELOPE = len(attestation(user_data=None, nonce=None, public_key=None)) - 3
_EXTEND_ENVELOPE = len(extend_pcr(0, b"")) - 2  # less index 0 and the empty bstr's head


def _optional_bytes_size(value: bytes | None) -> int:
    return _NULL_SIZE if value is None else _cbor.head_size(len(value)) + len(value)


def attestation_size(
    *, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> int:
    """``len(attestation(...))``, computed without encoding (checked equal by the tests)."""
    return (
        _ATTESTATION_ENVELOPE
        + _optional_bytes_size(user_data)
        + _optional_bytes_size(nonce)
        + _optional_bytes_size(public_key)
    )


def extend_pcr_size(index: int, data: bytes) -> int:
    """``len(extend_pcr(index, data))``, computed without encoding."""
    return _EXTEND_ENVELOPE + _cbor.head_size(index) + _cbor.head_size(len(data)) + len(data)


# Responses ------------------------------------------------------------------------------


def _reply(data: bytes, variant: str, *, unit: bool = False) -> dict[str, CborValue]:
    """Decode a reply, raise the NSM's error if it is one, and return the variant's fields."""
    value = _cbor.decode(data)
    if isinstance(value, dict) and len(value) == 1 and "Error" in value:
        name = value["Error"]
        code = _ERRORS_BY_WIRE_NAME.get(name) if isinstance(name, str) else None
        if code is None:
            raise InvalidResponse(f"NSM answered {variant} with an unknown error {name!r:.40}")
        raise error_for_code(code, f"NSM refused {variant}")
    if unit:
        if value != variant:
            raise InvalidResponse(f"NSM answered {variant} with something else")
        return {}
    if not isinstance(value, dict) or len(value) != 1 or variant not in value:
        raise InvalidResponse(f"NSM answered {variant} with something else")
    fields = value[variant]
    if not isinstance(fields, dict):
        raise InvalidResponse(f"NSM's {variant} reply has no fields")
    return fields


def _field(fields: dict[str, CborValue], variant: str, name: str) -> CborValue:
    if name not in fields:
        raise InvalidResponse(f"NSM's {variant} reply lacks {name!r}")
    return fields[name]


def _bytes(fields: dict[str, CborValue], variant: str, name: str) -> bytes:
    value = _field(fields, variant, name)
    if not isinstance(value, bytes):
        raise InvalidResponse(f"NSM's {variant} reply: {name!r} is not a byte string")
    return value


def _u16(value: CborValue, variant: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= PCR_INDEX_MAX:
        raise InvalidResponse(f"NSM's {variant} reply: {name!r} is not a 16-bit unsigned integer")
    return value


def attestation_reply(data: bytes) -> bytes:
    """The document from ``{"Attestation": {"document": bstr}}``."""
    return _bytes(_reply(data, "Attestation"), "Attestation", "document")


def get_random_reply(data: bytes) -> bytes:
    """The bytes from ``{"GetRandom": {"random": bstr}}``."""
    return _bytes(_reply(data, "GetRandom"), "GetRandom", "random")


def describe_pcr_reply(data: bytes) -> tuple[bool, bytes]:
    """``(lock, data)`` from ``{"DescribePCR": {"lock": bool, "data": bstr}}``."""
    fields = _reply(data, "DescribePCR")
    lock = _field(fields, "DescribePCR", "lock")
    if not isinstance(lock, bool):
        raise InvalidResponse("NSM's DescribePCR reply: 'lock' is not a boolean")
    return lock, _bytes(fields, "DescribePCR", "data")


def extend_pcr_reply(data: bytes) -> bytes:
    """The new PCR value from ``{"ExtendPCR": {"data": bstr}}``."""
    return _bytes(_reply(data, "ExtendPCR"), "ExtendPCR", "data")


def lock_reply(data: bytes, variant: str) -> None:
    """Check a ``"LockPCR"`` or ``"LockPCRs"`` reply."""
    _reply(data, variant, unit=True)


def describe_nsm_reply(data: bytes) -> Description:
    """The :class:`Description` in a ``DescribeNSM`` reply."""
    variant = "DescribeNSM"
    fields = _reply(data, variant)
    version = tuple(
        _u16(_field(fields, variant, f"version_{part}"), variant, f"version_{part}")
        for part in ("major", "minor", "patch")
    )
    module_id = _field(fields, variant, "module_id")
    if not isinstance(module_id, str):
        raise InvalidResponse("NSM's DescribeNSM reply: 'module_id' is not text")
    locked = _field(fields, variant, "locked_pcrs")
    if not isinstance(locked, list):
        raise InvalidResponse("NSM's DescribeNSM reply: 'locked_pcrs' is not an array")
    digest_name = _field(fields, variant, "digest")
    if not isinstance(digest_name, str) or digest_name not in Digest.__members__:
        raise InvalidResponse(f"NSM's DescribeNSM reply: unknown digest {digest_name!r:.20}")
    return Description(
        version=(version[0], version[1], version[2]),
        module_id=module_id,
        max_pcrs=_u16(_field(fields, variant, "max_pcrs"), variant, "max_pcrs"),
        locked_pcrs=tuple(_u16(i, variant, "locked_pcrs") for i in locked),
        digest=Digest[digest_name],
    )
