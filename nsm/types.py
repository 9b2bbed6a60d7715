"""Values the NSM speaks in: its error codes, digests, and typed results.

Pure data, no I/O. The integer values of :class:`ErrorCode` and :class:`Digest` are
libnsm's C ABI (``#[repr(C)]`` enums in aws-nitro-enclaves-nsm-api ``src/api/mod.rs``),
so a return value from the library converts with ``ErrorCode(value)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Description",
    "Digest",
    "ErrorCode",
    "PCR_INDEX_MAX",
    "PcrInfo",
    "REQUEST_MAX_SIZE",
    "RESPONSE_MAX_SIZE",
]

REQUEST_MAX_SIZE = 0x1000
"""Largest request the NSM driver accepts: 4096 bytes of CBOR."""

RESPONSE_MAX_SIZE = 0x3000
"""Largest response the NSM sends: 12288 bytes of CBOR."""

PCR_INDEX_MAX = 0xFFFF
"""Largest PCR index the ABI can carry (``uint16_t``); the NSM itself has 32 PCRs."""


class ErrorCode(enum.IntEnum):
    """libnsm's ``ErrorCode``; the NSM names the same values in its CBOR replies."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_INDEX = 2
    INVALID_RESPONSE = 3
    READ_ONLY_INDEX = 4
    INVALID_OPERATION = 5
    BUFFER_TOO_SMALL = 6
    INPUT_TOO_LARGE = 7
    INTERNAL_ERROR = 8

    @property
    def wire_name(self) -> str:
        """The variant name in the NSM's CBOR (``READ_ONLY_INDEX`` -> ``"ReadOnlyIndex"``)."""
        return self.name.title().replace("_", "")


class Digest(enum.IntEnum):
    """The hash the NSM uses for PCRs (Nitro: always SHA-384)."""

    SHA256 = 0
    SHA384 = 1
    SHA512 = 2

    @property
    def size(self) -> int:
        """Digest (and PCR) size in bytes."""
        return {Digest.SHA256: 32, Digest.SHA384: 48, Digest.SHA512: 64}[self]


@dataclass(frozen=True, slots=True, kw_only=True)
class Description:
    """What ``DescribeNSM`` reports about the module.

    Attributes:
        version: ``(major, minor, patch)`` of the NSM (real hardware: ``(1, 0, 0)``).
        module_id: the enclave's module id, e.g. ``i-00c8...-enc0175...``.
        max_pcrs: number of PCRs (real hardware: 32).
        locked_pcrs: indexes of the locked PCRs, in the order the NSM listed them.
        digest: the PCR hash algorithm.
    """

    version: tuple[int, int, int]
    module_id: str
    max_pcrs: int
    locked_pcrs: tuple[int, ...]
    digest: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class PcrInfo:
    """One PCR as ``DescribePCR`` reports it.

    Attributes:
        index: the PCR index.
        locked: whether the PCR can still be extended (``False``) or not (``True``).
        value: the current value (48 bytes for SHA-384).
    """

    index: int
    locked: bool
    value: bytes
