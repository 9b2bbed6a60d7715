"""Enclave Image Files: parse, measure (PCR0, 1, 2, 8) and check them, streaming.

>>> with open("app.eif", "rb") as f:               # doctest: +SKIP
...     image = read_eif(f)
>>> image.pcr0.hex(), image.crc_ok, image.intact   # doctest: +SKIP

:func:`read_eif` computes what ``nitro-cli describe-eif`` computes: the PCRs an enclave
booted from this image reports (outside debug mode), the CRC check and the signature
check. It reads the file once and keeps memory flat. It does not decide whether an image
is trustworthy: that is what pinning its PCRs in a verification or key policy is for.
Metadata is unmeasured and only informative.

:func:`compare_eifs` tells, PCR by PCR and section by section, how two images differ (with
:func:`read_sections`, which hashes each section on its own).
"""

from __future__ import annotations

from attested.eif._compare import (
    EifComparison,
    PcrDiff,
    SectionDiff,
    SectionDigest,
    compare_eifs,
    read_sections,
)
from attested.eif._format import EifHeader, SectionHeader, SectionType
from attested.eif._metadata import EifMetadata
from attested.eif._reader import DEFAULT_EIF_LIMITS, EifImage, EifLimits, SupportsRead, read_eif
from attested.eif._signature import EifSignature
from attested.eif._sizing import minimum_memory_mib

__all__ = [
    "DEFAULT_EIF_LIMITS",
    "EifComparison",
    "EifHeader",
    "EifImage",
    "EifLimits",
    "EifMetadata",
    "EifSignature",
    "PcrDiff",
    "SectionDiff",
    "SectionDigest",
    "SectionHeader",
    "SectionType",
    "SupportsRead",
    "compare_eifs",
    "minimum_memory_mib",
    "read_eif",
    "read_sections",
]
