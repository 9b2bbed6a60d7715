"""Read an Enclave Image File in one streaming pass: sections, CRC, PCR0/1/2/8.

Every EIF PCR is ``SHA384(zeros48 || SHA384(content))`` over section *data* in file order
(aws-nitro-enclaves-image-format ``eif_reader.rs``):

* PCR0: kernel, cmdline and every ramdisk;
* PCR1: kernel, cmdline and the first ramdisk (AWS's bootstrap: init and nsm.ko);
* PCR2: the second and later ramdisks (the application);
* PCR8: the signing certificate's DER, when a signature section exists.

Like ``nitro-cli describe-eif`` the reader walks section headers back to back from offset
548 to the end of the file; like QEMU's loader it also reads the header's offset and
size tables, and it reports every place where the two disagree. The CRC-32 of the whole
file (except the CRC field) is computed in the same pass.

Memory stays flat: section data goes straight into the hashes through a small ring of
fixed buffers. Only the cmdline, metadata and signature sections, each under a cap, are
kept.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import queue
import threading
import types
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from attested import pcr
from attested.eif import _crc
from attested.eif._format import (
    CRC_OFFSET,
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionHeader,
    SectionType,
    parse_header,
    parse_section_header,
)
from attested.eif._metadata import EifMetadata, parse_metadata
from attested.eif._signature import EifSignature, parse_signature_section
from attested.errors import MalformedError

__all__ = ["DEFAULT_EIF_LIMITS", "EifImage", "EifLimits", "SupportsRead", "read_eif"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read and hashed at a time."""
_PARALLEL_DEPTH = 8
"""Chunks in flight in parallel mode (and buffers held): 8 MiB with the default chunks."""


class SupportsRead(Protocol):
    """A binary stream: an open file, ``io.BytesIO``, a pipe."""

    def read(self, size: int = ..., /) -> bytes:
        """Read up to ``size`` bytes; ``b""`` at the end."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EifLimits:
    """Caps applied while reading an EIF.

    Attributes:
        max_sections: sections in the file (the format's own bound is 32).
        max_cmdline_size: the kernel command line (Linux accepts 2048 to 4096 bytes).
        max_metadata_size: the metadata JSON (nitro-cli's includes ``docker inspect``).
        max_signature_size: the signature section (the format's README: 32768).
    """

    max_sections: int = MAX_SECTIONS
    max_cmdline_size: int = 16 * 1024
    max_metadata_size: int = 1024 * 1024
    max_signature_size: int = 32 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_sections",
            "max_cmdline_size",
            "max_metadata_size",
            "max_signature_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer")
        if self.max_sections > MAX_SECTIONS:
            raise ValueError(f"max_sections cannot exceed {MAX_SECTIONS}: the header holds 32")


DEFAULT_EIF_LIMITS = EifLimits()


@dataclass(frozen=True, slots=True, kw_only=True)
class EifImage:
    """What an EIF holds and measures to. Nothing here says who built it.

    Attributes:
        header: the 548-byte header as stored.
        sections: every section header in file order (the walk, not the offset table).
        size: the file size in bytes.
        computed_crc32: the CRC-32 computed over the file (compare ``header.crc32``).
        pcr0: PCR0 (``kms:RecipientAttestation:ImageSha384``).
        pcr1: PCR1.
        pcr2: PCR2.
        cmdline: the kernel command line section, as stored (no NUL terminator).
        metadata: the metadata section (version 4), unmeasured; ``None`` if absent.
        signature: the signature section and its check; ``None`` for unsigned images.
        inconsistencies: every disagreement between the header's tables and the walk,
            and every reserved field that is not zero, each naming its offset.
    """

    header: EifHeader
    sections: tuple[SectionHeader, ...]
    size: int
    computed_crc32: int
    pcr0: bytes
    pcr1: bytes
    pcr2: bytes
    cmdline: bytes
    metadata: EifMetadata | None
    signature: EifSignature | None
    inconsistencies: tuple[str, ...]

    @property
    def crc_ok(self) -> bool:
        """``describe-eif``'s ``CheckCRC``: the stored CRC matches the file."""
        return self.header.crc32 == self.computed_crc32

    @property
    def pcr8(self) -> bytes | None:
        """PCR8 (the signing certificate), or ``None`` when the image is unsigned."""
        return None if self.signature is None else self.signature.pcr8

    @property
    def pcrs(self) -> Mapping[int, bytes]:
        """PCR0, 1, 2 and (when signed) 8, read-only."""
        values = {0: self.pcr0, 1: self.pcr1, 2: self.pcr2}
        if self.signature is not None:
            values[8] = self.signature.pcr8
        return types.MappingProxyType(values)

    @property
    def intact(self) -> bool:
        """CRC matches, tables agree with the walk, and any signature checks out."""
        return (
            self.crc_ok
            and not self.inconsistencies
            and (self.signature is None or self.signature.valid)
        )


class _Source:
    """Reads from a stream, tracks the offset, and hands out a ring of reusable buffers."""

    def __init__(
        self,
        stream: SupportsRead,
        chunk_size: int,
        buffers: int,
        before_chunk: Callable[[], object],
    ) -> None:
        self._stream = stream
        self._readinto: Callable[[memoryview], int | None] | None = getattr(
            stream, "readinto", None
        )
        self._ring = (
            [memoryview(bytearray(chunk_size)) for _ in range(buffers)]
            if self._readinto is not None
            else []
        )
        self._next = 0
        self._before_chunk = before_chunk
        self.chunk_size = chunk_size
        self.offset = 0

    def read(self, size: int) -> bytes:
        """Read exactly ``size`` bytes, or fewer only at the end of the stream."""
        parts = []
        remaining = size
        while remaining:
            part = self._stream.read(min(remaining, self.chunk_size))
            if not part:
                break
            if len(part) > remaining:
                raise MalformedError("the stream returned more bytes than asked for")
            parts.append(part)
            remaining -= len(part)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def chunk(self, size: int) -> memoryview | bytes:
        """Read up to ``min(size, chunk_size)`` bytes into the next buffer of the ring.

        ``before_chunk`` is called first: in parallel mode it waits until the helper
        thread is done with the buffer about to be reused.
        """
        self._before_chunk()
        want = min(size, self.chunk_size)
        if not self._ring or self._readinto is None:
            return self.read(want)
        view = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        got = 0
        while got < want:
            count = self._readinto(view[got:want])
            if not count:
                break
            got += count
        self.offset += got
        return view[:got]


_Cell = list[int]  # [crc32 of one piece, its length, done flag]
_Item = tuple[bytes | memoryview, "hashlib._Hash | None", bool, "_Cell | None"]


class _Hashes:
    """The PCR0/1/2 hashes and the CRC, fed in file order.

    PCR1's content is a prefix of PCR0's as long as no application ramdisk has been seen,
    so PCR1 shares PCR0's hash object until then and is forked off with ``copy()``: the
    boot sections are hashed once.

    In parallel mode one helper thread computes the second hash (PCR2, or PCR1 after the
    fork) while the calling thread reads and computes PCR0; hashlib and zlib release the
    GIL on large buffers, so the two run on separate cores. The CRC-32 of each chunk is
    computed as a separate piece, two in three by the helper (the reading thread also
    copies the data in), and the pieces are folded in file order with
    :func:`~attested.eif._crc.combine`, so the work splits about evenly. The
    helper takes items from a FIFO queue; a semaphore with one permit per ring buffer
    makes the reader wait before reusing a buffer the helper has not finished with.
    """

    def __init__(self, *, parallel: bool, depth: int) -> None:
        self._pcr0 = hashlib.sha384()
        self._pcr1: hashlib._Hash | None = None  # None: same content as PCR0 so far
        self._pcr2 = hashlib.sha384()
        self.crc = 0
        self._pieces: collections.deque[_Cell] = collections.deque()
        self._chunks = 0
        self._free = threading.Semaphore(depth)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._helper = (
            threading.Thread(target=self._run, name="attested-eif-hash", daemon=True)
            if parallel
            else None
        )
        if self._helper is not None:
            self._helper.start()

    def before_chunk(self) -> None:
        """Wait for a free ring buffer (parallel mode only)."""
        if self._helper is not None:
            self._free.acquire()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            data, second, ring, cell = item
            try:
                if cell is not None:
                    cell[0] = zlib.crc32(data)
                    cell[2] = 1
                if second is not None:
                    second.update(data)
            except BaseException as exc:  # pragma: no cover - hashlib and zlib do not raise
                self._failure = exc
            finally:
                if ring:
                    self._free.release()

    def _fold(self) -> None:
        pieces = self._pieces
        while pieces and pieces[0][2]:
            value, length, _ = pieces.popleft()
            self.crc = _crc.combine(self.crc, value, length)

    def crc_only(self, data: bytes) -> None:
        if self._helper is None:
            self.crc = zlib.crc32(data, self.crc)
            return
        self._pieces.append([zlib.crc32(data), len(data), 1])
        self._fold()

    def feed(self, data: bytes | memoryview, *, application: bool, ring: bool = True) -> None:
        """Hash boot (kernel, cmdline, first ramdisk) or application data.

        ``ring``: the data is a chunk from the source, for which ``before_chunk`` was
        called; the helper frees its buffer when done.
        """
        if application and self._pcr1 is None:
            self._pcr1 = self._pcr0.copy()  # PCR0 is only ever updated by this thread
        second = self._pcr2 if application else self._pcr1
        if self._helper is None:
            self.crc = zlib.crc32(data, self.crc)
            self._pcr0.update(data)
            if second is not None:
                second.update(data)
            return
        cell = [0, len(data), 0]
        self._pieces.append(cell)
        # The reading thread also copies the data in: it takes one CRC piece in three.
        helper_crc = self._chunks % 3 != 0
        self._chunks += 1
        self._queue.put((data, second, ring, cell if helper_crc else None))
        if not helper_crc:
            cell[0] = zlib.crc32(data)
            cell[2] = 1
        self._pcr0.update(data)
        self._fold()

    def finish(self) -> tuple[bytes, bytes, bytes]:
        self.close()
        if self._failure is not None:  # pragma: no cover - see _run
            raise self._failure
        self._fold()
        if self._pieces:  # pragma: no cover - every piece is done once the helper stopped
            raise RuntimeError("CRC pieces left after the helper stopped")
        pcr1 = self._pcr1 if self._pcr1 is not None else self._pcr0
        return (
            pcr.extend(pcr.ZERO, self._pcr0.digest()),
            pcr.extend(pcr.ZERO, pcr1.digest()),
            pcr.extend(pcr.ZERO, self._pcr2.digest()),
        )

    def close(self) -> None:
        """Stop the helper after it has drained its queue. Idempotent."""
        if self._helper is not None and self._helper.is_alive():
            self._queue.put(None)
            self._helper.join()


@dataclass(slots=True)
class _Walk:
    sections: list[SectionHeader]
    cmdline: bytes | None = None
    metadata: tuple[bytes, int] | None = None
    signature: bytes | None = None
    ramdisks: int = 0
    kernels: int = 0


def read_eif(
    stream: SupportsRead,
    *,
    limits: EifLimits = DEFAULT_EIF_LIMITS,
    parallel: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> EifImage:
    """Read an EIF from ``stream``, measure it and check its CRC, tables and signature.

    The stream is read once, front to back; it need not be seekable. Memory use does not
    grow with the file: section data passes through one ``chunk_size`` buffer (eight in
    parallel mode).

    Args:
        stream: the EIF, positioned at its start (an open file, ``io.BytesIO``, a pipe).
        limits: caps on section count and on the sections that are kept in memory.
        parallel: compute the PCR2 (or PCR1) hash and half of the CRC on one helper
            thread, started and joined inside this call, while this thread reads and
            hashes PCR0. Application ramdisks are hashed twice (for PCR0 and PCR2), so on two
            free cores this nearly halves the time; on one core it only adds overhead.
        chunk_size: bytes per read.

    Returns:
        The image's sections, PCRs, metadata and check results. A CRC mismatch, a table
        disagreement or a signature that does not verify is reported in the result
        (see :attr:`EifImage.intact`), as ``describe-eif`` reports them.

    Raises:
        MalformedError: the file is not a well-formed EIF; the message names the offset.
            Nothing is verified about who built the image: pin its PCRs (and PCR8 for
            signed images) to decide that.
    """
    if chunk_size < 4096:
        raise ValueError("chunk_size must be at least 4096")
    depth = _PARALLEL_DEPTH if parallel else 1
    hashes = _Hashes(parallel=parallel, depth=depth)
    source = _Source(stream, chunk_size, depth, hashes.before_chunk)
    try:
        header, walk = _walk(source, hashes, limits)
        pcr0, pcr1, pcr2 = hashes.finish()
    finally:
        hashes.close()
    _require_sections(header, walk, end=source.offset)
    metadata = None
    if walk.metadata is not None:
        data, offset = walk.metadata
        metadata = parse_metadata(data, offset=offset, max_size=limits.max_metadata_size)
    signature = None
    if walk.signature is not None:
        signature = parse_signature_section(
            walk.signature, pcr0=pcr0, max_size=limits.max_signature_size
        )
    image = EifImage(
        header=header,
        sections=tuple(walk.sections),
        size=source.offset,
        computed_crc32=hashes.crc,
        pcr0=pcr0,
        pcr1=pcr1,
        pcr2=pcr2,
        cmdline=walk.cmdline or b"",
        metadata=metadata,
        signature=signature,
        inconsistencies=_inconsistencies(header, walk.sections),
    )
    logger.debug(
        "read EIF v%d: %d bytes, %d sections, crc %s, signed %s",
        header.version,
        image.size,
        len(image.sections),
        "ok" if image.crc_ok else "MISMATCH",
        signature is not None,
    )
    return image


_KEPT_LIMIT = {
    SectionType.CMDLINE: "max_cmdline_size",
    SectionType.METADATA: "max_metadata_size",
    SectionType.SIGNATURE: "max_signature_size",
}
_SINGLE = {
    SectionType.KERNEL: "kernel",
    SectionType.CMDLINE: "cmdline",
    SectionType.METADATA: "metadata",
    SectionType.SIGNATURE: "signature",
}
_SINCE_VERSION = {SectionType.SIGNATURE: 3, SectionType.METADATA: 4}


def _walk(source: _Source, hashes: _Hashes, limits: EifLimits) -> tuple[EifHeader, _Walk]:
    raw = source.read(HEADER_SIZE)
    header = parse_header(raw)
    hashes.crc_only(raw[:CRC_OFFSET])
    walk = _Walk(sections=[])
    seen: set[SectionType] = set()
    while True:
        offset = source.offset
        raw = source.read(SECTION_HEADER_SIZE)
        if not raw:
            return header, walk
        section = parse_section_header(raw, offset=offset)
        if len(walk.sections) >= limits.max_sections:
            raise MalformedError(
                f"more than {limits.max_sections} EIF sections: another starts at offset {offset}"
            )
        kind = section.type
        if kind in _SINGLE and kind in seen:
            raise MalformedError(f"second {_SINGLE[kind]} section at offset {offset}")
        if header.version < _SINCE_VERSION.get(kind, 0):
            raise MalformedError(
                f"{kind.label} section at offset {offset} in a version {header.version} EIF "
                f"(introduced in version {_SINCE_VERSION[kind]})"
            )
        cap_name = _KEPT_LIMIT.get(kind)
        if cap_name is not None and section.size > getattr(limits, cap_name):
            raise MalformedError(
                f"{kind.label} section at offset {offset} is {section.size} bytes, more than "
                f"the limit of {getattr(limits, cap_name)}"
            )
        seen.add(kind)
        walk.sections.append(section)
        hashes.crc_only(raw)
        if kind is SectionType.KERNEL:
            walk.kernels += 1
        if kind in (SectionType.KERNEL, SectionType.RAMDISK):
            application = kind is SectionType.RAMDISK and walk.ramdisks > 0
            _stream_section(source, hashes, section, application=application)
            if kind is SectionType.RAMDISK:
                walk.ramdisks += 1
            continue
        data = _read_section(source, section)
        if kind is SectionType.CMDLINE:
            hashes.feed(data, application=False, ring=False)
            walk.cmdline = data
        else:
            hashes.crc_only(data)
            if kind is SectionType.METADATA:
                walk.metadata = (data, section.data_offset)
            else:
                walk.signature = data


def _truncated(section: SectionHeader, end: int) -> MalformedError:
    return MalformedError(
        f"{section.type.label} section at offset {section.offset} declares {section.size} "
        f"bytes of data, but the file ends at offset {end}"
    )


def _read_section(source: _Source, section: SectionHeader) -> bytes:
    data = source.read(section.size)
    if len(data) != section.size:
        raise _truncated(section, source.offset)
    return data


def _stream_section(
    source: _Source, hashes: _Hashes, section: SectionHeader, *, application: bool
) -> None:
    remaining = section.size
    while remaining:
        data = source.chunk(remaining)
        if not data:
            raise _truncated(section, source.offset)
        hashes.feed(data, application=application)
        remaining -= len(data)


def _require_sections(header: EifHeader, walk: _Walk, *, end: int) -> None:
    missing = []
    if not walk.kernels:
        missing.append("kernel")
    if walk.cmdline is None:
        missing.append("cmdline")
    if not walk.ramdisks:
        missing.append("ramdisk")
    if header.version >= 4 and walk.metadata is None:
        missing.append("metadata (mandatory in version 4)")
    if missing:
        raise MalformedError(f"EIF has no {', no '.join(missing)} section (walked to offset {end})")


def _inconsistencies(header: EifHeader, sections: list[SectionHeader]) -> tuple[str, ...]:
    found = []
    if header.reserved:
        found.append(f"reserved header field at offset 24 is {header.reserved}, not 0")
    if header.unused:
        found.append(f"unused header field at offset 540 is {header.unused}, not 0")
    if header.num_sections != len(sections):
        found.append(
            f"header (offset 26) declares {header.num_sections} sections, "
            f"the file holds {len(sections)}"
        )
    for index in range(MAX_SECTIONS):
        table_offset = header.section_offsets[index]
        table_size = header.section_sizes[index]
        where = f"section table entry {index} (at offsets {28 + 8 * index} and {284 + 8 * index})"
        if index >= header.num_sections:
            if table_offset or table_size:
                found.append(f"{where} is unused but not zero")
            continue
        if index >= len(sections):
            found.append(f"{where} points at offset {table_offset}, where no section was found")
            continue
        section = sections[index]
        if table_offset != section.offset:
            found.append(
                f"{where} says offset {table_offset}, "
                f"the section header is at offset {section.offset}"
            )
        if table_size != section.size:
            found.append(
                f"{where} says {table_size} bytes, "
                f"the section header at offset {section.offset} says {section.size}"
            )
    for section in sections:
        if section.flags:
            found.append(
                f"{section.type.label} section header at offset {section.offset} has "
                f"reserved flags 0x{section.flags:04x}"
            )
    return tuple(found)
