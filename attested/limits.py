"""Size and count caps for everything the library parses.

Every parser takes a :class:`Limits` and refuses input beyond it with
:class:`~attested.errors.MalformedError` before doing any expensive work. The defaults
follow what real Nitro hardware and AWS KMS produce, with head room, and can be
tightened (never loosened past the format's own bounds) by callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DEFAULT_LIMITS", "Limits", "REQUEST_FIELD_SIZES"]

REQUEST_FIELD_SIZES: Mapping[str, int] = MappingProxyType(
    {"nonce": 512, "user_data": 512, "public_key": 1024}
)
"""The largest field an attestation request sends, in bytes: the NSM's own caps, which
the NitroTPM path and the service's ``/v1/attestation`` apply too."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Caps applied while parsing attestation documents.

    Attributes:
        max_document_size: whole COSE_Sign1 document in bytes. The NSM answers at most
            12288 bytes, of which the document is at most 12262; real documents are
            4.4-4.8 KB.
        max_certificate_size: one DER certificate (AWS: 1..1024 bytes).
        max_cabundle_length: certificates in ``cabundle`` (real documents: 4).
        max_field_size: ``public_key``, ``user_data`` and ``nonce`` (AWS: 0..1024).
        max_module_id_size: ``module_id`` in UTF-8 bytes.
        max_pcrs: number of PCR entries (AWS: 1..32).
        max_depth: nesting depth of CBOR containers (real documents: 3).
    """

    max_document_size: int = 16384
    max_certificate_size: int = 1024
    max_cabundle_length: int = 8
    max_field_size: int = 1024
    max_module_id_size: int = 256
    max_pcrs: int = 32
    max_depth: int = 8

    def __post_init__(self) -> None:
        for name in (
            "max_document_size",
            "max_certificate_size",
            "max_cabundle_length",
            "max_field_size",
            "max_module_id_size",
            "max_pcrs",
            "max_depth",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer")
        if self.max_pcrs > 32:
            raise ValueError("max_pcrs cannot exceed 32: the NSM has 32 PCRs")


DEFAULT_LIMITS = Limits()
