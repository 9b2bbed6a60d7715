"""Read reference measurements: an enclave image's (nitro-cli) or an AMI's (NitroTPM).

The caller says which it expects, as it does to the verifier
(:class:`attested.document.Profile`); each profile refuses the other tool's output by
name, because pinning an AMI's PCRs as an enclave's (or the reverse) admits nothing or
the wrong thing.

Enclave measurements (``Profile.ENCLAVE``, the default); accepted shapes:

* ``build-enclave`` / ``sign-eif``: ``{"Measurements": {"HashAlgorithm": ..., "PCR0": ...}}``;
* ``describe-eif``: the same ``Measurements`` inside a larger object;
* ``describe-enclaves``: a list of enclaves, each with its ``Measurements`` (and ``Flags``);
* a bare ``{"HashAlgorithm": ..., "PCR0": ...}`` object.

``HashAlgorithm`` is Rust's ``Debug`` output of the hasher, so it depends on the sha2
crate nitro-cli was built with: ``"Sha384 { ... }"`` (nitro-cli up to 1.4) or
``"Sha512_48 { .. }"`` (1.5 and later). Both mean SHA-384; anything else is refused.

NitroTPM measurements (``Profile.NITROTPM``): ``tpm_pcr.json`` as the Attestable AMI build
saves what ``nitro-tpm-pcr-compute`` prints, ``{"Measurements": {"HashAlgorithm":
"SHA384", "PCR4": ..., "PCR7": ..., "PCR12": ...}}`` (PCR0 to PCR23 may appear), or the
bare inner object. One file is one AMI. The tool spells the algorithm ``"SHA384"``, which
is how a NitroTPM file and a nitro-cli file are told apart.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from attested import _json
from attested.document import Profile
from attested.errors import MalformedError

__all__ = ["HASH_ALGORITHMS", "NITROTPM_HASH_ALGORITHM", "MeasurementSet", "parse_measurements"]

HASH_ALGORITHMS = frozenset({"Sha384 { ... }", "Sha512_48 { .. }"})
"""The two spellings of SHA-384 that nitro-cli prints."""

NITROTPM_HASH_ALGORITHM = "SHA384"
"""How ``nitro-tpm-pcr-compute`` spells SHA-384 in ``tpm_pcr.json``."""

_MAX_PCR = {Profile.ENCLAVE: 31, Profile.NITROTPM: 23}
_OTHER_TOOL = {
    Profile.ENCLAVE: (
        'it is nitro-tpm-pcr-compute\'s output (HashAlgorithm "SHA384", an Attestable '
        "AMI's tpm_pcr.json for NitroTPM), not nitro-cli's enclave measurements; for an EC2 "
        "instance's key policy use --nitrotpm (Profile.NITROTPM)"
    ),
    Profile.NITROTPM: (
        "it is nitro-cli's output (an enclave image's measurements), not "
        "nitro-tpm-pcr-compute's tpm_pcr.json (HashAlgorithm \"SHA384\"); for an enclave's "
        "key policy leave out --nitrotpm (Profile.ENCLAVE)"
    ),
}

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
        profile: whose measurements these are: an enclave image's (the default) or an
            AMI's, as a NitroTPM document reports them (PCR0 to PCR23).
    """

    pcrs: Mapping[int, bytes]
    source: str = ""
    debug_mode: bool = field(default=False)
    profile: Profile = Profile.ENCLAVE

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            raise TypeError("profile must be an attested.document.Profile")
        if self.debug_mode and self.profile is Profile.NITROTPM:
            raise ValueError("debug mode is an enclave notion; a NitroTPM set has none")
        frozen = {}
        top = _MAX_PCR[self.profile]
        for index, value in self.pcrs.items():
            if not 0 <= int(index) <= top:
                raise ValueError(f"PCR index must be 0..{top}, got {index!r}")
            data = bytes(value)  # TypeError for text
            if len(data) != 48:
                raise ValueError(f"PCR{index} must be 48 bytes, got {len(data)}")
            frozen[int(index)] = data
        object.__setattr__(self, "pcrs", types.MappingProxyType(dict(sorted(frozen.items()))))


def _pcrs(value: object, *, where: str, profile: Profile) -> dict[int, bytes]:
    if not isinstance(value, dict):
        raise MalformedError(f"{where}: Measurements must be an object")
    top = _MAX_PCR[profile]
    pcrs = {}
    for key, item in value.items():
        if key == "HashAlgorithm":
            _check_algorithm(item, where=where, profile=profile)
            continue
        match = _PCR_NAME.fullmatch(key)
        if match is None or int(match.group(1)) > top:
            more = ""
            if match is not None and profile is Profile.NITROTPM:
                more = f" (a NitroTPM has PCR0 to PCR{top})"
            raise MalformedError(f"{where}: unexpected key {key!r:.40} in Measurements{more}")
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


def _check_algorithm(item: object, *, where: str, profile: Profile) -> None:
    mine = HASH_ALGORITHMS if profile is Profile.ENCLAVE else {NITROTPM_HASH_ALGORITHM}
    theirs = {NITROTPM_HASH_ALGORITHM} if profile is Profile.ENCLAVE else HASH_ALGORITHMS
    if isinstance(item, str) and item in mine:
        return
    if isinstance(item, str) and item in theirs:
        raise MalformedError(f"{where}: HashAlgorithm is {item!r}: {_OTHER_TOOL[profile]}")
    spelled = (
        '"Sha384 { ... }" or "Sha512_48 { .. }"'
        if profile is Profile.ENCLAVE
        else f'"{NITROTPM_HASH_ALGORITHM}"'
    )
    raise MalformedError(
        f"{where}: HashAlgorithm {item!r:.40} is not SHA-384 ({spelled}); Nitro attests "
        "SHA-384 only"
    )


def _is_bare(value: dict[str, object]) -> bool:
    return "HashAlgorithm" in value or any(_PCR_NAME.fullmatch(key) for key in value)


def _entry(value: object, *, where: str, profile: Profile) -> MeasurementSet:
    if not isinstance(value, dict):
        raise MalformedError(f"{where} must be an object")
    if "Measurements" in value:
        if profile is Profile.NITROTPM:
            pcrs = _pcrs(value["Measurements"], where=where, profile=profile)
            extra = sorted(str(k) for k in value if k != "Measurements")
            if extra:
                raise MalformedError(
                    f"{where}: unexpected key {extra[0]!r:.40} beside Measurements (a "
                    "tpm_pcr.json holds only Measurements)"
                )
            return MeasurementSet(pcrs=pcrs, source=where, profile=profile)
        name = value.get("EnclaveName") or value.get("EnclaveID")
        label = f"{where} ({name})" if isinstance(name, str) else where
        return MeasurementSet(
            pcrs=_pcrs(value["Measurements"], where=label, profile=profile),
            source=label,
            debug_mode=value.get("Flags") == "DEBUG_MODE",
        )
    if _is_bare(value):
        return MeasurementSet(
            pcrs=_pcrs(value, where=where, profile=profile), source=where, profile=profile
        )
    if profile is Profile.NITROTPM:
        raise MalformedError(
            f'{where} has no Measurements (tpm_pcr.json is {{"Measurements": {{"HashAlgorithm": '
            '"SHA384", "PCR4": ..., ...}}, as nitro-tpm-pcr-compute prints it)'
        )
    raise MalformedError(
        f"{where} has no Measurements (describe-enclaves before nitro-cli 1.2 does not print "
        "them: run describe-eif on the enclave's EIF instead)"
    )


def parse_measurements(
    data: bytes, *, source: str = "measurements", profile: Profile = Profile.ENCLAVE
) -> tuple[MeasurementSet, ...]:
    """Read one or more measurement sets from nitro-cli or nitro-tpm-pcr-compute JSON.

    Args:
        data: the JSON bytes (at most 1 MiB).
        source: a name for the input, used in messages and in each set's ``source``.
        profile: whose measurements to expect: an enclave image's (nitro-cli's output,
            the default) or an Attestable AMI's (``tpm_pcr.json``, ``Profile.NITROTPM``).
            The other tool's output is refused, naming it.

    Returns:
        One set per image (several for a ``describe-enclaves`` list; one for a NitroTPM
        file).

    Raises:
        MalformedError: not JSON, not one of the accepted shapes, the other tool's
            output, a HashAlgorithm other than SHA-384, or a PCR value that is not 96
            hex digits.
        TypeError: ``profile`` is not a :class:`~attested.document.Profile`.
    """
    if not isinstance(profile, Profile):
        raise TypeError("profile must be an attested.document.Profile")
    value = _json.loads(data, what=source, max_size=MAX_MEASUREMENTS_SIZE, max_depth=32)
    if isinstance(value, list):
        if profile is Profile.NITROTPM:
            raise MalformedError(
                f"{source} is a list: {_OTHER_TOOL[profile]} (describe-enclaves lists "
                "enclaves; a tpm_pcr.json holds one AMI)"
            )
        if not value:
            raise MalformedError(f"{source} is an empty list (no enclaves running?)")
        if len(value) > MAX_SETS:
            raise MalformedError(f"{source} lists more than {MAX_SETS} enclaves")
        return tuple(
            _entry(item, where=f"{source}[{i}]", profile=profile) for i, item in enumerate(value)
        )
    return (_entry(value, where=source, profile=profile),)
