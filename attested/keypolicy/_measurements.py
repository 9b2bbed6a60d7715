"""Read enclave measurements from what ``nitro-cli`` prints.

Accepted shapes:

* ``build-enclave`` / ``sign-eif``: ``{"Measurements": {"HashAlgorithm": ..., "PCR0": ...}}``;
* ``describe-eif``: the same ``Measurements`` inside a larger object;
* ``describe-enclaves``: a list of enclaves, each with its ``Measurements`` (and ``Flags``);
* a bare ``{"HashAlgorithm": ..., "PCR0": ...}`` object.

``HashAlgorithm`` is Rust's ``Debug`` output of the hasher, so it depends on the sha2
crate nitro-cli was built with: ``"Sha384 { ... }"`` (nitro-cli up to 1.4) or
``"Sha512_48 { .. }"`` (1.5 and later). Both mean SHA-384; anything else is refused.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from attested import _json
from attested.errors import MalformedError

__all__ = ["HASH_ALGORITHMS", "MeasurementSet", "parse_measurements"]

HASH_ALGORITHMS = frozenset({"Sha384 { ... }", "Sha512_48 { .. }"})
"""The two spellings of SHA-384 that nitro-cli prints."""

MAX_MEASUREMENTS_SIZE = 1024 * 1024
MAX_SETS = 64
_PCR_NAME = re.compile(r"PCR(0|[1-9][0-9]?)")
_HEX = re.compile(r"[0-9a-fA-F]{96}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasurementSet:
    """The PCRs of one enclave image (one build, one running enclave).

    Attributes:
        pcrs: PCR index to its 48-byte value, read-only.
        source: where the values came from, for messages (a file name, an enclave name).
        debug_mode: ``describe-enclaves`` says the enclave runs in debug mode: its
            attestation documents carry all-zero PCR0, 1 and 2, not these values.
    """

    pcrs: Mapping[int, bytes]
    source: str = ""
    debug_mode: bool = field(default=False)

    def __post_init__(self) -> None:
        frozen = {}
        for index, value in self.pcrs.items():
            if not 0 <= int(index) <= 31:
                raise ValueError(f"PCR index must be 0..31, got {index!r}")
            data = bytes(value)  # TypeError for text
            if len(data) != 48:
                raise ValueError(f"PCR{index} must be 48 bytes, got {len(data)}")
            frozen[int(index)] = data
        object.__setattr__(self, "pcrs", types.MappingProxyType(dict(sorted(frozen.items()))))


def _pcrs(value: object, *, where: str) -> dict[int, bytes]:
    if not isinstance(value, dict):
        raise MalformedError(f"{where}: Measurements must be an object")
    pcrs = {}
    for key, item in value.items():
        if key == "HashAlgorithm":
            if not isinstance(item, str) or item not in HASH_ALGORITHMS:
                raise MalformedError(
                    f"{where}: HashAlgorithm {item!r:.40} is not SHA-384 "
                    '("Sha384 { ... }" or "Sha512_48 { .. }"); Nitro attests SHA-384 only'
                )
            continue
        match = _PCR_NAME.fullmatch(key)
        if match is None or int(match.group(1)) > 31:
            raise MalformedError(f"{where}: unexpected key {key!r:.40} in Measurements")
        if not isinstance(item, str):
            raise MalformedError(f"{where}: {key} must be a hex string")
        if item.lower().startswith("0x"):
            raise MalformedError(f"{where}: {key} has a 0x prefix; give the plain hex digits")
        if not _HEX.fullmatch(item):
            raise MalformedError(
                f"{where}: {key} must be 96 hex digits (SHA-384), got {len(item)} characters"
            )
        pcrs[int(match.group(1))] = bytes.fromhex(item)
    if not pcrs:
        raise MalformedError(f"{where}: no PCR values in Measurements")
    return pcrs


def _is_bare(value: dict[str, object]) -> bool:
    return "HashAlgorithm" in value or any(_PCR_NAME.fullmatch(key) for key in value)


def _entry(value: object, *, where: str) -> MeasurementSet:
    if not isinstance(value, dict):
        raise MalformedError(f"{where} must be an object")
    if "Measurements" in value:
        name = value.get("EnclaveName") or value.get("EnclaveID")
        label = f"{where} ({name})" if isinstance(name, str) else where
        return MeasurementSet(
            pcrs=_pcrs(value["Measurements"], where=label),
            source=label,
            debug_mode=value.get("Flags") == "DEBUG_MODE",
        )
    if _is_bare(value):
        return MeasurementSet(pcrs=_pcrs(value, where=where), source=where)
    raise MalformedError(
        f"{where} has no Measurements (describe-enclaves before nitro-cli 1.2 does not print "
        "them: run describe-eif on the enclave's EIF instead)"
    )


def parse_measurements(data: bytes, *, source: str = "measurements") -> tuple[MeasurementSet, ...]:
    """Read one or more measurement sets from nitro-cli JSON output.

    Args:
        data: the JSON bytes (at most 1 MiB).
        source: a name for the input, used in messages and in each set's ``source``.

    Returns:
        One set per image (several for a ``describe-enclaves`` list).

    Raises:
        MalformedError: not JSON, not one of the accepted shapes, a HashAlgorithm other
            than SHA-384, or a PCR value that is not 96 hex digits.
    """
    value = _json.loads(data, what=source, max_size=MAX_MEASUREMENTS_SIZE, max_depth=32)
    if isinstance(value, list):
        if not value:
            raise MalformedError(f"{source} is an empty list (no enclaves running?)")
        if len(value) > MAX_SETS:
            raise MalformedError(f"{source} lists more than {MAX_SETS} enclaves")
        return tuple(_entry(item, where=f"{source}[{i}]") for i, item in enumerate(value))
    return (_entry(value, where=source),)
