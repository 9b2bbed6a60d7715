"""The fixed-size parts of an Enclave Image File: the 548-byte header and section headers.

All integers are big-endian; there is no padding (aws-nitro-enclaves-image-format
``src/defs/mod.rs``)::

    offset size field
         0    4 magic ".eif"
         4    2 version (2, 3 or 4)
         6    2 flags (bit 0: aarch64)
         8    8 default_mem
        16    8 default_cpus
        24    2 reserved
        26    2 num_sections
        28  256 section_offsets[32] (offset of each section *header*)
       284  256 section_sizes[32] (data size, header excluded)
       540    4 unused
       544    4 eif_crc32 (zlib CRC-32 of the whole file except these 4 bytes)

A section header is 12 bytes: u16 type, u16 flags (reserved, 0), u64 data size.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from attested.errors import MalformedError

__all__ = [
    "CRC_OFFSET",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_SECTIONS",
    "SECTION_HEADER_SIZE",
    "EifHeader",
    "SectionHeader",
    "SectionType",
    "encode_header",
    "encode_section_header",
    "parse_header",
    "parse_section_header",
]

MAGIC = b".eif"
MAX_SECTIONS = 32
HEADER_SIZE = 548
CRC_OFFSET = 544
SECTION_HEADER_SIZE = 12
ARCH_AARCH64 = 0x1
SUPPORTED_VERSIONS = frozenset({2, 3, 4})

_HEAD = struct.Struct(">4sHHQQHH")  # magic .. num_sections: 28 bytes
_TABLE = struct.Struct(f">{MAX_SECTIONS}Q")
_TAIL = struct.Struct(">II")
_SECTION = struct.Struct(">HHQ")
if _HEAD.size + 2 * _TABLE.size + _TAIL.size != HEADER_SIZE or _SECTION.size != 12:
    raise ImportError("EIF header layout constants disagree")  # pragma: no cover


class SectionType(enum.IntEnum):
    """EIF section types (0 is "invalid" and, like anything above 5, refused)."""

    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5

    @property
    def label(self) -> str:
        """Lowercase name, as ``describe`` prints it."""
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class EifHeader:
    """The EIF header as stored in the file.

    Attributes:
        version: format version (2, 3 or 4).
        flags: header flags; bit 0 set means an aarch64 image.
        default_mem: memory the builder suggested, in bytes (unused by Nitro).
        default_cpus: CPU count the builder suggested (unused by Nitro).
        reserved: the reserved u16 (0 in every image a known tool writes).
        num_sections: how many entries of the offset and size tables are in use.
        section_offsets: the offset table, all 32 entries.
        section_sizes: the size table, all 32 entries.
        unused: the unused u32 before the CRC (0 in known images).
        crc32: the stored CRC-32.
    """

    version: int
    flags: int
    default_mem: int
    default_cpus: int
    reserved: int
    num_sections: int
    section_offsets: tuple[int, ...]
    section_sizes: tuple[int, ...]
    unused: int
    crc32: int

    @property
    def arch(self) -> str:
        """``"aarch64"`` or ``"x86_64"``, from flag bit 0."""
        return "aarch64" if self.flags & ARCH_AARCH64 else "x86_64"


@dataclass(frozen=True, slots=True, kw_only=True)
class SectionHeader:
    """A 12-byte section header and where it was found.

    Attributes:
        type: the section type.
        flags: the reserved flags field (0 in every image a known tool writes).
        size: the size of the section data that follows the header.
        offset: file offset of this header.
    """

    type: SectionType
    flags: int
    size: int
    offset: int

    @property
    def data_offset(self) -> int:
        """File offset of the section data."""
        return self.offset + SECTION_HEADER_SIZE


def parse_header(data: bytes) -> EifHeader:
    """Parse the 548-byte EIF header.

    Raises:
        MalformedError: wrong size, magic, version, flags, or section count.
    """
    if len(data) != HEADER_SIZE:
        raise MalformedError(
            f"EIF header is {HEADER_SIZE} bytes, the file has only {len(data)} at offset 0"
        )
    magic, version, flags, mem, cpus, reserved, count = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise MalformedError(f"not an EIF: magic at offset 0 is {magic!r}, expected b'.eif'")
    if version not in SUPPORTED_VERSIONS:
        raise MalformedError(f"EIF version {version} at offset 4 is not supported (2, 3 and 4 are)")
    if flags & ~ARCH_AARCH64:
        raise MalformedError(f"EIF header flags 0x{flags:04x} at offset 6 set reserved bits")
    if not 1 <= count <= MAX_SECTIONS:
        raise MalformedError(
            f"EIF header at offset 26 declares {count} sections; 1..{MAX_SECTIONS} are allowed"
        )
    offsets = _TABLE.unpack_from(data, _HEAD.size)
    sizes = _TABLE.unpack_from(data, _HEAD.size + _TABLE.size)
    unused, crc = _TAIL.unpack_from(data, CRC_OFFSET - 4)
    return EifHeader(
        version=version,
        flags=flags,
        default_mem=mem,
        default_cpus=cpus,
        reserved=reserved,
        num_sections=count,
        section_offsets=offsets,
        section_sizes=sizes,
        unused=unused,
        crc32=crc,
    )


def parse_section_header(data: bytes, *, offset: int) -> SectionHeader:
    """Parse a 12-byte section header found at ``offset``.

    Raises:
        MalformedError: short input or an unknown section type.
    """
    if len(data) != SECTION_HEADER_SIZE:
        raise MalformedError(
            f"truncated EIF section header at offset {offset}: "
            f"{len(data)} of {SECTION_HEADER_SIZE} bytes"
        )
    kind, flags, size = _SECTION.unpack(data)
    try:
        section_type = SectionType(kind)
    except ValueError:
        raise MalformedError(f"unknown EIF section type {kind} at offset {offset}") from None
    return SectionHeader(type=section_type, flags=flags, size=size, offset=offset)


def encode_header(header: EifHeader) -> bytes:
    """Serialize a header (used by the image builder)."""
    if len(header.section_offsets) != MAX_SECTIONS or len(header.section_sizes) != MAX_SECTIONS:
        raise ValueError(f"offset and size tables must have {MAX_SECTIONS} entries")
    return (
        _HEAD.pack(
            MAGIC,
            header.version,
            header.flags,
            header.default_mem,
            header.default_cpus,
            header.reserved,
            header.num_sections,
        )
        + _TABLE.pack(*header.section_offsets)
        + _TABLE.pack(*header.section_sizes)
        + _TAIL.pack(header.unused, header.crc32)
    )


def encode_section_header(section_type: int, size: int, flags: int = 0) -> bytes:
    """Serialize a section header (used by the image builder)."""
    return _SECTION.pack(section_type, flags, size)
