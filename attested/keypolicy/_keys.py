"""What KMS means by its attestation condition keys and operations.

Sources: AWS KMS Developer Guide "Condition keys for AWS Nitro Enclaves" and the IAM
service authorization reference for KMS (``kms:RecipientAttestation:ImageSha384``,
``kms:RecipientAttestation:PCR<0..31>``, ``kms:RecipientAttestation:NitroTPMPCR<n>``);
botocore's KMS model for the five operations that take a ``Recipient``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from attested.keypolicy._operators import glob_matches

__all__ = [
    "ATTESTED_OPERATIONS",
    "DEBUG_ZEROED_PCRS",
    "IMAGE_KEY",
    "KeyKind",
    "ParsedKey",
    "action_matches",
    "is_all_zero",
    "parse_key",
    "pcr_key",
    "pcr_value_problem",
]

ATTESTED_OPERATIONS = (
    "kms:Decrypt",
    "kms:DeriveSharedSecret",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateRandom",
)
"""The KMS operations that accept a ``Recipient`` (an attestation document), sorted."""

IMAGE_KEY = "kms:RecipientAttestation:ImageSha384"
_PREFIX = "kms:recipientattestation"
MAX_ENCLAVE_PCR = 31
MAX_NITROTPM_PCR = 23  # a TPM 2.0 PCR bank has 24 registers

DEBUG_ZEROED_PCRS = frozenset({0, 1, 2, 8})
"""Enclave PCRs that read all zero in debug mode (PCR0-2 per AWS; PCR8 in real documents)."""

_HEX96 = re.compile(r"[0-9a-f]{96}")
_PLACEHOLDER = re.compile(
    r"[<>{}$]|example|placeholder|replace|your[-_ ]|todo|changeme|\.\.\.|x{4,}|^pcr\d*$",
    re.IGNORECASE,
)


def pcr_key(index: int) -> str:
    """The condition key for enclave PCR ``index``."""
    return f"kms:RecipientAttestation:PCR{index}"


class KeyKind(enum.Enum):
    """What an attestation condition key refers to."""

    IMAGE = "image"  # ImageSha384, the same value as PCR0
    PCR = "pcr"  # an enclave PCR
    NITROTPM_PCR = "nitrotpm-pcr"  # a NitroTPM PCR of an EC2 instance (not an enclave)
    UNKNOWN = "unknown"  # starts like one but KMS has no such key


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedKey:
    """An attestation condition key.

    Attributes:
        kind: what the key refers to.
        index: the PCR index (PCR0 for ``IMAGE``), or ``None`` for unknown keys.
        problem: for ``UNKNOWN`` keys, what is wrong with the name.
    """

    kind: KeyKind
    index: int | None = None
    problem: str | None = None

    @property
    def is_enclave(self) -> bool:
        """Whether the key constrains a Nitro Enclave's measurements."""
        return self.kind in (KeyKind.IMAGE, KeyKind.PCR)

    @property
    def pins_image(self) -> bool:
        """Whether the key is ImageSha384 or PCR0 (the whole enclave image)."""
        return self.is_enclave and self.index == 0


def _index(text: str, maximum: int) -> int | None:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_key(name: str) -> ParsedKey | None:
    """Classify a condition key; ``None`` if it is not an attestation key at all.

    Condition key names are case-insensitive in IAM, so this is too.
    """
    lower = name.lower()
    if not lower.startswith(_PREFIX):
        return None
    rest = name[len(_PREFIX) :]
    if not rest:
        return ParsedKey(
            kind=KeyKind.UNKNOWN,
            problem="kms:RecipientAttestation needs a suffix (:ImageSha384 or :PCR<n>)",
        )
    if not rest.startswith(":"):
        return ParsedKey(kind=KeyKind.UNKNOWN, problem=f"{name!r} is not a KMS condition key")
    suffix = rest[1:]
    upper = suffix.upper()
    if upper == "IMAGESHA384":
        return ParsedKey(kind=KeyKind.IMAGE, index=0)
    if upper.startswith("NITROTPMPCR"):
        index = _index(suffix[len("NITROTPMPCR") :], MAX_NITROTPM_PCR)
        if index is None:
            return ParsedKey(
                kind=KeyKind.UNKNOWN,
                problem=f"NitroTPM PCR index must be 0..{MAX_NITROTPM_PCR} (in {name!r})",
            )
        return ParsedKey(kind=KeyKind.NITROTPM_PCR, index=index)
    if upper.startswith("PCR"):
        index = _index(suffix[3:], MAX_ENCLAVE_PCR)
        if index is None:
            return ParsedKey(
                kind=KeyKind.UNKNOWN,
                problem=f"PCR index must be 0..{MAX_ENCLAVE_PCR} without leading zeros "
                f"(in {name!r})",
            )
        return ParsedKey(kind=KeyKind.PCR, index=index)
    return ParsedKey(
        kind=KeyKind.UNKNOWN,
        problem=f"KMS has no condition key {name!r} (ImageSha384, PCR<n> and NitroTPMPCR<n> exist)",
    )


def action_matches(pattern: str, action: str) -> bool:
    """Whether an IAM action pattern (``*`` and ``?`` wildcards) matches ``action``.

    Action names are case-insensitive in IAM.
    """
    return glob_matches(pattern, action, ignore_case=True)


def is_all_zero(value: str) -> bool:
    """Whether a PCR value is 96 zero digits (a debug-mode enclave's PCR0, 1, 2)."""
    return len(value) == 96 and set(value) == {"0"}


def pcr_value_problem(value: str) -> str | None:
    """What is wrong with a PCR condition value, or ``None`` for 96 lowercase hex digits."""
    if _HEX96.fullmatch(value):
        return None
    text = value.strip()
    if _PLACEHOLDER.search(text):
        return "is a placeholder or template variable, not a measurement"
    if "*" in text or "?" in text:
        return "is a wildcard pattern, which pins nothing"
    if text.lower().startswith("0x"):
        return "has a 0x prefix; KMS compares the plain 96 hex digits"
    if text != value or any(char.isspace() for char in text):
        return "contains white space"
    if not all(char in "0123456789abcdefABCDEF" for char in text):
        return "is not hexadecimal"
    digits = len(text)
    if digits != 96:
        lengths = {64: " (a SHA-256 length)", 128: " (a SHA-512 length)"}
        return f"has {digits} hex digits{lengths.get(digits, '')}; a SHA-384 PCR has 96"
    return "is uppercase; KMS documents lowercase hex"
