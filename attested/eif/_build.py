"""Write Enclave Image Files: for tests, benchmarks and simulated enclaves.

Images written here have the layout ``nitro-cli build-enclave`` produces (header, then
sections back to back, offset and size tables filled in, CRC-32 over everything but the
CRC field) but any section contents: they are not bootable.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from attested.eif._format import (
    CRC_OFFSET,
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionType,
    encode_header,
    encode_section_header,
)

__all__ = ["Pattern", "Zeros", "write_eif"]

_ZERO_CHUNK = bytes(1 << 20)


@dataclass(frozen=True, slots=True)
class Zeros:
    """Section data of ``size`` zero bytes, written as a hole where the file system allows."""

    size: int


@dataclass(frozen=True, slots=True)
class Pattern:
    """Section data of ``size`` bytes repeating ``block``, written without holding it all."""

    block: bytes
    size: int


SectionData = bytes | Zeros | Pattern


def _size(data: SectionData) -> int:
    return len(data) if isinstance(data, bytes) else data.size


def write_eif(
    out: BinaryIO,
    sections: Sequence[tuple[SectionType | int, SectionData]],
    *,
    version: int = 4,
    flags: int = 0,
    default_mem: int = 1 << 30,
    default_cpus: int = 2,
) -> int:
    """Write an EIF with the given sections, in that order, to a seekable ``out``.

    Args:
        out: a writable, seekable binary file positioned at 0.
        sections: ``(type, data)`` pairs; the type may be any integer, for negative tests.
        version: the header version.
        flags: the header flags (1: aarch64).
        default_mem: the header's default memory.
        default_cpus: the header's default CPU count.

    Returns:
        The stored CRC-32.
    """
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"an EIF holds at most {MAX_SECTIONS} sections")
    offsets = []
    position = HEADER_SIZE
    for _, data in sections:
        offsets.append(position)
        position += SECTION_HEADER_SIZE + _size(data)
    pad = [0] * (MAX_SECTIONS - len(sections))
    header = encode_header(
        EifHeader(
            version=version,
            flags=flags,
            default_mem=default_mem,
            default_cpus=default_cpus,
            reserved=0,
            num_sections=len(sections),
            section_offsets=(*offsets, *pad),
            section_sizes=(*(_size(d) for _, d in sections), *pad),
            unused=0,
            crc32=0,
        )
    )
    out.write(header)
    crc = zlib.crc32(header[:CRC_OFFSET])
    for kind, data in sections:
        section_header = encode_section_header(int(kind), _size(data))
        out.write(section_header)
        crc = zlib.crc32(section_header, crc)
        if isinstance(data, Zeros):
            remaining = data.size
            while remaining:
                step = min(remaining, len(_ZERO_CHUNK))
                crc = zlib.crc32(memoryview(_ZERO_CHUNK)[:step], crc)
                remaining -= step
            out.seek(data.size, 1)
        elif isinstance(data, Pattern):
            if not data.block:
                raise ValueError("a Pattern needs a non-empty block")
            remaining = data.size
            while remaining:
                piece = data.block[:remaining]
                out.write(piece)
                crc = zlib.crc32(piece, crc)
                remaining -= len(piece)
        else:
            out.write(data)
            crc = zlib.crc32(data, crc)
    out.truncate(position)
    out.seek(CRC_OFFSET)
    out.write(crc.to_bytes(4, "big"))
    out.seek(position)
    return crc
