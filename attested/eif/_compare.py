"""Compare two Enclave Image Files: PCR by PCR, section by section, and say why they differ.

A rebuild that changes PCR0 changes every key policy that pins it, so a CI pipeline wants
to know not only *whether* two images measure alike but *which part* moved. Each PCR is a
hash over concatenated section data, so the PCRs alone cannot say that; this module hashes
every section on its own (:func:`read_sections`, a second streaming pass) and pairs the
sections of the two images by role:

* kernel, cmdline and the first ramdisk (AWS's bootstrap) are measured in PCR0 and PCR1;
* the second and later ramdisks (the application) in PCR0 and PCR2;
* the signature section in PCR8, which measures only its signing *certificate*: a new
  signature by the same certificate leaves PCR8 unchanged;
* the metadata section in no PCR at all: build time, docker information and image name
  may change without changing what an enclave attests.

It compares; it does not judge which image is right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from attested.eif._format import (
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    SectionHeader,
    SectionType,
    parse_header,
    parse_section_header,
)
from attested.eif._reader import CHUNK_SIZE, EifImage, SupportsRead
from attested.errors import MalformedError

__all__ = [
    "EifComparison",
    "PcrDiff",
    "SectionDiff",
    "SectionDigest",
    "compare_eifs",
    "read_sections",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SectionDigest:
    """One section of an image, hashed on its own.

    Attributes:
        header: the section header (type, size, offset).
        ordinal: position among the sections of its type, from 0 (ramdisk 0 is the
            bootstrap ramdisk).
        sha384: SHA-384 of the section data.
    """

    header: SectionHeader
    ordinal: int
    sha384: bytes

    @property
    def name(self) -> str:
        """``kernel``, ``cmdline``, ``ramdisk 1`` (from 1), ``signature``, ``metadata``."""
        if self.header.type is SectionType.RAMDISK:
            return f"ramdisk {self.ordinal + 1}"
        return self.header.type.label


def read_sections(
    stream: SupportsRead, *, chunk_size: int = CHUNK_SIZE
) -> tuple[SectionDigest, ...]:
    """Walk an EIF's sections as :func:`~attested.eif.read_eif` does and hash each one.

    Args:
        stream: the EIF from its first byte.
        chunk_size: bytes read and hashed at a time (memory stays flat).

    Raises:
        MalformedError: the header or a section header is not well formed, there are
            more than 32 sections, or a section runs past the end of the file.
    """
    if chunk_size < 4096:
        raise ValueError("chunk_size must be at least 4096")
    parse_header(_read_exactly(stream, HEADER_SIZE))
    offset = HEADER_SIZE
    found: list[SectionDigest] = []
    counts: dict[SectionType, int] = {}
    while True:
        raw = _read_exactly(stream, SECTION_HEADER_SIZE, allow_end=True)
        if not raw:
            return tuple(found)
        if len(found) >= MAX_SECTIONS:
            raise MalformedError(
                f"more than {MAX_SECTIONS} EIF sections: another starts at offset {offset}"
            )
        header = parse_section_header(raw, offset=offset)
        digest = hashlib.sha384()
        remaining = header.size
        while remaining:
            data = stream.read(min(remaining, chunk_size))
            if not data:
                raise MalformedError(
                    f"{header.type.label} section at offset {offset} declares {header.size} "
                    "bytes of data, but the file ends before them"
                )
            if len(data) > remaining:
                raise MalformedError("the stream returned more bytes than asked for")
            digest.update(data)
            remaining -= len(data)
        ordinal = counts.get(header.type, 0)
        counts[header.type] = ordinal + 1
        found.append(SectionDigest(header=header, ordinal=ordinal, sha384=digest.digest()))
        offset = header.data_offset + header.size


def _read_exactly(stream: SupportsRead, size: int, *, allow_end: bool = False) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    data = b"".join(parts)
    if len(data) > size:
        raise MalformedError("the stream returned more bytes than asked for")
    if len(data) < size and not (allow_end and not data):
        raise MalformedError(f"the EIF ends after {len(data)} of {size} bytes of a header")
    return data


@dataclass(frozen=True, slots=True, kw_only=True)
class PcrDiff:
    """One PCR of both images.

    Attributes:
        index: the PCR index (0, 1, 2 or 8).
        a: its value in the first image, ``None`` when absent (PCR8 of an unsigned image).
        b: its value in the second image, or ``None``.
    """

    index: int
    a: bytes | None
    b: bytes | None

    @property
    def equal(self) -> bool:
        """Both images have the same value (or neither has one)."""
        return self.a == self.b


@dataclass(frozen=True, slots=True, kw_only=True)
class SectionDiff:
    """A section of either image, paired by role with the other's.

    Attributes:
        name: ``kernel``, ``cmdline``, ``ramdisk N``, ``signature`` or ``metadata``.
        measured_in: the PCRs this section's data goes into (PCR8: its certificate only).
        a: the section in the first image, ``None`` when it has none.
        b: the section in the second image, or ``None``.
    """

    name: str
    measured_in: tuple[int, ...]
    a: SectionDigest | None
    b: SectionDigest | None

    @property
    def equal(self) -> bool:
        """Both images hold this section with the same bytes."""
        if self.a is None or self.b is None:
            return self.a is self.b
        return self.a.sha384 == self.b.sha384 and self.a.header.size == self.b.header.size

    @property
    def why(self) -> str:
        """What a difference here means for the PCRs, in one sentence."""
        if self.equal:
            return "same bytes"
        meaning = _BOOT if self.name == "ramdisk 1" else _MEANING[self.name.split()[0]]
        if self.a is None or self.b is None:
            present = "second" if self.a is None else "first"
            return f"only the {present} image has it: {meaning}"
        return meaning


_BOOT = "the bootstrap ramdisk (init, nsm.ko) is measured in PCR0 and PCR1"
_MEANING: Mapping[str, str] = {
    "kernel": "the kernel is measured in PCR0 and PCR1",
    "cmdline": "the kernel command line is measured in PCR0 and PCR1",
    "ramdisk": "an application ramdisk is measured in PCR0 and PCR2",
    "signature": "PCR8 measures the signing certificate only: a new signature by the same "
    "certificate leaves PCR8 equal",
    "metadata": "metadata is not measured: no PCR changes",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class EifComparison:
    """Two images compared.

    Attributes:
        pcrs: PCR0, 1, 2 and 8, in that order.
        sections: every section of either image, in the order kernel, cmdline, ramdisks,
            signature, metadata.
        metadata_fields: top-level metadata fields (and ``BuildMetadata.*``) whose
            values differ; informative only.
    """

    pcrs: tuple[PcrDiff, ...]
    sections: tuple[SectionDiff, ...]
    metadata_fields: tuple[str, ...]

    def differing(self, indexes: Sequence[int] = (0, 1, 2, 8)) -> tuple[int, ...]:
        """The PCRs among ``indexes`` whose values differ."""
        return tuple(d.index for d in self.pcrs if d.index in indexes and not d.equal)


def _measured_in(section: SectionDigest) -> tuple[int, ...]:
    kind = section.header.type
    if kind in (SectionType.KERNEL, SectionType.CMDLINE):
        return (0, 1)
    if kind is SectionType.RAMDISK:
        return (0, 1) if section.ordinal == 0 else (0, 2)
    if kind is SectionType.SIGNATURE:
        return (8,)
    return ()


_ORDER = (
    SectionType.KERNEL,
    SectionType.CMDLINE,
    SectionType.RAMDISK,
    SectionType.SIGNATURE,
    SectionType.METADATA,
)


def _check_same_walk(image: EifImage, sections: Sequence[SectionDigest], label: str) -> None:
    walked = [(s.header.type, s.header.offset, s.header.size) for s in sections]
    measured = [(s.type, s.offset, s.size) for s in image.sections]
    if walked != measured:
        raise MalformedError(f"the {label} image changed between its two reads")


def _metadata_fields(a: EifImage, b: EifImage) -> tuple[str, ...]:
    if a.metadata is None or b.metadata is None:
        return () if a.metadata is b.metadata else ("(the whole section)",)
    pairs = {
        "ImageName": (a.metadata.image_name, b.metadata.image_name),
        "ImageVersion": (a.metadata.image_version, b.metadata.image_version),
        "BuildMetadata.BuildTime": (a.metadata.build_time, b.metadata.build_time),
        "BuildMetadata.BuildTool": (a.metadata.build_tool, b.metadata.build_tool),
        "BuildMetadata.BuildToolVersion": (
            a.metadata.build_tool_version,
            b.metadata.build_tool_version,
        ),
        "BuildMetadata.OperatingSystem": (
            a.metadata.operating_system,
            b.metadata.operating_system,
        ),
        "BuildMetadata.KernelVersion": (a.metadata.kernel_version, b.metadata.kernel_version),
        "DockerInfo": (a.metadata.docker_info, b.metadata.docker_info),
        "CustomMetadata": (a.metadata.custom, b.metadata.custom),
    }
    return tuple(name for name, (left, right) in pairs.items() if left != right)


def compare_eifs(
    a: EifImage,
    a_sections: Sequence[SectionDigest],
    b: EifImage,
    b_sections: Sequence[SectionDigest],
) -> EifComparison:
    """Compare two images measured by :func:`~attested.eif.read_eif` and :func:`read_sections`.

    Raises:
        MalformedError: an image's two reads saw different sections (the file changed).
    """
    _check_same_walk(a, a_sections, "first")
    _check_same_walk(b, b_sections, "second")
    pcrs = tuple(PcrDiff(index=i, a=a.pcrs.get(i), b=b.pcrs.get(i)) for i in (0, 1, 2, 8))
    keyed_a = {(s.header.type, s.ordinal): s for s in a_sections}
    keyed_b = {(s.header.type, s.ordinal): s for s in b_sections}
    keys = sorted(set(keyed_a) | set(keyed_b), key=lambda k: (_ORDER.index(k[0]), k[1]))
    sections = []
    for key in keys:
        left, right = keyed_a.get(key), keyed_b.get(key)
        some = left if left is not None else right
        if some is None:  # pragma: no cover - every key comes from one of the two
            continue
        sections.append(
            SectionDiff(name=some.name, measured_in=_measured_in(some), a=left, b=right)
        )
    return EifComparison(
        pcrs=pcrs, sections=tuple(sections), metadata_fields=_metadata_fields(a, b)
    )
