"""Argument checks made before any request reaches the NSM.

Shared by :class:`nsm.NsmDevice` and the simulated NSM in ``attested.simulator`` (same
distribution), so that both refuse exactly the same calls. A refused argument is a bug
in the caller, so it raises :class:`TypeError` or :class:`ValueError`, not an
:class:`~nsm.errors.NsmError`: retrying cannot help.

What is left to the NSM: whether an index names one of its PCRs (32 on Nitro), and
whether a PCR is locked. Those come back as :class:`~nsm.errors.InvalidIndex` and
:class:`~nsm.errors.ReadOnlyIndex`.
"""

from __future__ import annotations

from nsm import _messages
from nsm.types import PCR_INDEX_MAX, REQUEST_MAX_SIZE

__all__ = [
    "RANDOM_MAX",
    "attestation_arguments",
    "extend_arguments",
    "optional_bytes",
    "pcr_index",
    "random_count",
    "request_fits",
]

RANDOM_MAX = 1 << 20
"""Most random bytes one :meth:`get_random` call returns (the NSM gives 256 per request)."""


def pcr_index(index: object, *, name: str = "index") -> int:
    """An integer that fits the ABI's ``uint16_t``.

    Raises:
        TypeError: not an ``int`` (``bool`` is refused).
        ValueError: outside ``[0, 65535]``.
    """
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"{name} must be an int, not {type(index).__name__}")
    if not 0 <= index <= PCR_INDEX_MAX:
        raise ValueError(f"{name} must be in [0, {PCR_INDEX_MAX}], got {index}")
    return index


def _to_bytes(value: object, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def optional_bytes(value: object, name: str) -> bytes | None:
    """``None`` (field absent) or a bytes-like value, as ``bytes``.

    Raises:
        TypeError: anything else (``str`` included).
    """
    return None if value is None else _to_bytes(value, name)


def request_fits(size: int, what: str) -> None:
    """Refuse a request the NSM would refuse for its size.

    Args:
        size: the exact size of the encoded request.
        what: the request's name, for the message.

    Raises:
        ValueError: the encoded request is over 4096 bytes.
    """
    if size > REQUEST_MAX_SIZE:
        raise ValueError(
            f"{what} request would be {size} bytes of CBOR; the NSM accepts at most "
            f"{REQUEST_MAX_SIZE}"
        )


def attestation_arguments(
    user_data: object, nonce: object, public_key: object
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Check the three optional fields of an attestation request, together.

    Returns:
        ``(user_data, nonce, public_key)`` as ``bytes`` or ``None``.

    Raises:
        TypeError: a field is neither bytes-like nor ``None``.
        ValueError: the request would exceed 4096 bytes.
    """
    fields = (
        optional_bytes(user_data, "user_data"),
        optional_bytes(nonce, "nonce"),
        optional_bytes(public_key, "public_key"),
    )
    size = _messages.attestation_size(user_data=fields[0], nonce=fields[1], public_key=fields[2])
    request_fits(size, "Attestation")
    return fields


def extend_arguments(index: object, data: object) -> tuple[int, bytes]:
    """Check the arguments of an extension.

    Raises:
        TypeError: wrong types.
        ValueError: index out of range, or a request over 4096 bytes.
    """
    checked_index = pcr_index(index)
    checked_data = _to_bytes(data, "data")
    request_fits(_messages.extend_pcr_size(checked_index, checked_data), "ExtendPCR")
    return checked_index, checked_data


def random_count(count: object) -> int:
    """A number of random bytes to return.

    Raises:
        TypeError: not an ``int``.
        ValueError: negative or over :data:`RANDOM_MAX`.
    """
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if not 0 <= count <= RANDOM_MAX:
        raise ValueError(f"count must be in [0, {RANDOM_MAX}], got {count}")
    return count
