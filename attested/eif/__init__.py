"""Enclave Image Files: parse, measure (PCR0, 1, 2, 8) and check them, streaming.

>>> with open("app.eif", "rb") as f:               # doctest: +SKIP
...     image = read_eif(f)
>>> image.pcr0.hex(), image.crc_ok, image.intact   # doctest: +SKIP

:func:`read_eif` computes what ``nitro-cli describe-eif`` computes: the PCRs an enclave
booted from this image reports (outside debug mode), the CRC check and the signature
check. It reads the file once and keeps memory flat. It does not decide whether an image
is trustworthy: that is what pinning its PCRs in a verification or key policy is for.
Metadata is unmeasured and only informative.
"""

from __future__ import annotations

from attested.eif._format import EifHeader, SectionHeader, SectionType
from attested.eif._metadata import EifMetadata
from attested.eif._reader import DEFAULT_EIF_LIMITS, EifImage, EifLimits, SupportsRead, read_eif
from attested.eif._signature import EifSignature

__all__ = [
    "DEFAULT_EIF_LIMITS",
    "EifHeader",
    "EifImage",
    "EifLimits",
    "EifMetadata",
    "EifSignature",
    "SectionHeader",
    "SectionType",
    "SupportsRead",
    "read_eif",
]
