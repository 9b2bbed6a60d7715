"""Nitro attestation documents: the untrusted, parsed form.

>>> doc = parse_attestation(data)          # doctest: +SKIP
>>> doc.module_id, doc.pcrs[0].hex()       # doctest: +SKIP

Two kinds of document share the format (ADR 0130): an enclave's, from the NSM, with its
PCRs under ``pcrs``, and an EC2 instance's, from NitroTPM, with them under
``nitrotpm_pcrs``. The caller names the kind it expects with :class:`Profile`; a document
of the other kind is refused, never accepted in its place.

:func:`parse_attestation` checks only that the bytes are a well-formed document (AWS
"syntactic validation"): nothing about who signed it, whether the chain is valid, or what
it attests. Use :class:`attested.verify.Verifier` for that; code that grants trust should
accept only its :class:`~attested.verify.VerifiedAttestation`.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509

from attested import _cbor, _cose
from attested._certs import load_certificate
from attested.errors import MalformedError
from attested.limits import DEFAULT_LIMITS, Limits

__all__ = ["AttestationDocument", "Profile", "parse_attestation"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PCR_SIZES = frozenset({32, 48, 64})
_DIGESTS = frozenset({"SHA384"})
_COMMON = ("module_id", "digest", "timestamp", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")


class Profile(enum.Enum):
    """Which kind of attestation document a caller expects (ADR 0130)."""

    ENCLAVE = "enclave"
    """A Nitro Enclave's document from the NSM: PCRs under ``pcrs``."""
    NITROTPM = "nitrotpm"
    """An EC2 instance's document from NitroTPM: PCRs under ``nitrotpm_pcrs``."""

    @property
    def pcr_field(self) -> str:
        """The payload field that holds this profile's PCRs."""
        return "pcrs" if self is Profile.ENCLAVE else "nitrotpm_pcrs"

    @property
    def other(self) -> Profile:
        """The profile this one must never accept."""
        return Profile.NITROTPM if self is Profile.ENCLAVE else Profile.ENCLAVE


_WHAT = {Profile.ENCLAVE: "an enclave (NSM)", Profile.NITROTPM: "a NitroTPM (EC2 instance)"}
_ASK = {
    Profile.ENCLAVE: "verify it without --nitrotpm (Profile.ENCLAVE)",
    Profile.NITROTPM: "verify it with --nitrotpm (Profile.NITROTPM)",
}


@dataclass(frozen=True, eq=False, kw_only=True)
class AttestationDocument:
    """A parsed attestation document. Nothing in it has been verified.

    Attributes:
        module_id: the module id, e.g. ``i-0123...-enc0123...`` (enclave) or
            ``i-0123...-tpm0000000000000000`` (NitroTPM).
        digest: the PCR digest algorithm, always ``"SHA384"``.
        timestamp: when the NSM made the document (UTC, millisecond precision).
        pcrs: PCR index to value, read-only, in index order: the payload's ``pcrs`` for
            an enclave document, its ``nitrotpm_pcrs`` for a NitroTPM document.
        certificate: DER of the certificate whose key signed the document.
        cabundle: DER certificates from the root to the issuer of ``certificate``.
        public_key: the ``public_key`` field, or ``None`` when absent or null.
        user_data: the ``user_data`` field, or ``None`` when absent or null.
        nonce: the ``nonce`` field, or ``None`` when absent or null.
        cose: the COSE_Sign1 parts as received (for signature verification).
        raw: the whole document as received.
        profile: which kind of document it is.
    """

    module_id: str
    digest: str
    timestamp: datetime
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    cose: _cose.CoseSign1 = field(repr=False)
    raw: bytes = field(repr=False)
    _signing_certificate: x509.Certificate = field(repr=False)
    profile: Profile = Profile.ENCLAVE

    @property
    def timestamp_ms(self) -> int:
        """The timestamp as the document carries it: milliseconds since the epoch."""
        return (self.timestamp - _EPOCH) // timedelta(milliseconds=1)

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The parsed ``certificate`` (not validated)."""
        return self._signing_certificate

    def __repr__(self) -> str:
        return (
            f"AttestationDocument(profile={self.profile.value!r}, module_id={self.module_id!r}, "
            f"timestamp={self.timestamp.isoformat()!r}, pcrs={sorted(self.pcrs)!r}, "
            "verified=False)"
        )


def parse_attestation(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS, profile: Profile = Profile.ENCLAVE
) -> AttestationDocument:
    """Parse a Nitro attestation document without verifying anything.

    Accepts what real NSMs and NitroTPMs emit: COSE_Sign1 tagged or untagged, ES384 in the
    protected header, a payload map of definite or indefinite length, CBOR null for absent
    optional fields, zero-length optional fields, and 1 to 32 PCRs of 32, 48 or 64 bytes.

    Args:
        data: the document as produced by the NSM (raw CBOR, not base64).
        limits: size and count caps.
        profile: the kind of document expected. A document of the other kind (its PCRs
            under the other field) is refused, naming the missing field.

    Returns:
        The parsed, unverified document.

    Raises:
        MalformedError: the bytes are not a well-formed attestation document of
            ``profile``.
        TypeError: ``data`` is not ``bytes`` or ``profile`` not a :class:`Profile`.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"attestation document must be bytes, not {type(data).__name__}")
    if not isinstance(profile, Profile):
        raise TypeError("profile must be an attested.document.Profile")
    message, payload = _decode(data, limits)
    if not isinstance(payload, dict):
        raise MalformedError("attestation payload must be a map")
    _check_profile(payload, profile)
    known = frozenset((*_COMMON, profile.pcr_field, *_OPTIONAL))
    unknown = sorted(str(k) for k in payload if k not in known)
    if unknown:
        raise MalformedError(f"attestation payload has unknown fields: {', '.join(unknown)}")
    for key in (*_COMMON, profile.pcr_field):
        if key not in payload or payload[key] is None:
            raise MalformedError(f"attestation payload is missing required field {key!r}")

    module_id = _module_id(payload["module_id"], limits)
    digest = payload["digest"]
    if not isinstance(digest, str) or digest not in _DIGESTS:
        raise MalformedError(f"digest must be 'SHA384', got {digest!r:.40}")
    timestamp = _timestamp(payload["timestamp"])
    pcrs = _pcrs(payload[profile.pcr_field], limits, profile.pcr_field)
    certificate = _certificate(payload["certificate"], "certificate", limits)
    cabundle = _cabundle(payload["cabundle"], limits)
    leaf = load_certificate(certificate, "certificate")
    return AttestationDocument(
        module_id=module_id,
        digest=digest,
        timestamp=timestamp,
        pcrs=pcrs,
        certificate=certificate,
        cabundle=cabundle,
        public_key=_optional(payload, "public_key", limits),
        user_data=_optional(payload, "user_data", limits),
        nonce=_optional(payload, "nonce", limits),
        cose=message,
        raw=data,
        _signing_certificate=leaf,
        profile=profile,
    )


def profile_of(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Profile | None:
    """Which kind of attestation document ``data`` is, read from its (unverified) payload.

    Not for choosing what to trust (ADR 0130: callers name the profile they expect); for
    a recipient that, like KMS, accepts both kinds and then verifies with the returned
    profile, and for explaining a refusal of one's own document. An enclave document has
    ``pcrs``, a NitroTPM document ``nitrotpm_pcrs``. Returns ``None`` for a payload with
    neither; a document that does not decode, or has both fields, is ``ENCLAVE``, whose
    parser then says what is wrong.
    """
    try:
        _, payload = _decode(data, limits)
    except MalformedError:
        return Profile.ENCLAVE
    if not isinstance(payload, dict):
        return Profile.ENCLAVE
    if Profile.NITROTPM.pcr_field in payload and Profile.ENCLAVE.pcr_field not in payload:
        return Profile.NITROTPM
    if Profile.ENCLAVE.pcr_field in payload:
        return Profile.ENCLAVE
    return None


def _decode(data: bytes, limits: Limits) -> tuple[_cose.CoseSign1, object]:
    """The COSE_Sign1 envelope of ``data`` and its decoded (unchecked) payload."""
    message = _cose.parse_sign1(data, max_size=limits.max_document_size)
    payload = _cbor.decode(
        message.payload,
        what="attestation payload",
        max_size=limits.max_document_size,
        max_depth=limits.max_depth,
    )
    return message, payload


def _check_profile(payload: dict[object, object], profile: Profile) -> None:
    """Refuse a payload of the other profile, or one claiming to be both."""
    mine, theirs = profile.pcr_field, profile.other.pcr_field
    if theirs not in payload:
        return
    if mine in payload:
        raise MalformedError(
            "attestation payload has both 'pcrs' and 'nitrotpm_pcrs': no real document does"
        )
    raise MalformedError(
        f"attestation payload is missing required field {mine!r}: it has {theirs!r}, so it "
        f"looks like {_WHAT[profile.other]} document, not {_WHAT[profile]} one; if that is "
        f"what you expect, {_ASK[profile.other]}"
    )


def _module_id(value: object, limits: Limits) -> str:
    if not isinstance(value, str):
        raise MalformedError("module_id must be a text string")
    if not value:
        raise MalformedError("module_id is empty")
    if len(value.encode()) > limits.max_module_id_size:
        raise MalformedError(f"module_id is longer than {limits.max_module_id_size} bytes")
    return value


def _timestamp(value: object) -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedError("timestamp must be an unsigned integer")
    if value <= 0 or value >= 2**64:
        raise MalformedError("timestamp must be a positive 64-bit integer")
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError as exc:
        raise MalformedError("timestamp is beyond the year 9999") from exc


def _pcrs(value: object, limits: Limits, name: str) -> Mapping[int, bytes]:
    if not isinstance(value, dict):
        raise MalformedError(f"{name} must be a map")
    if not 1 <= len(value) <= limits.max_pcrs:
        raise MalformedError(f"{name} must hold 1 to {limits.max_pcrs} entries, got {len(value)}")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 32:
            raise MalformedError(f"PCR index must be an integer in [0, 32), got {index!r:.20}")
        if not isinstance(pcr, bytes):
            raise MalformedError(f"PCR{index} must be a byte string")
        if len(pcr) not in _PCR_SIZES:
            raise MalformedError(f"PCR{index} must be 32, 48 or 64 bytes, got {len(pcr)}")
        pcrs[index] = pcr
    return types.MappingProxyType(dict(sorted(pcrs.items())))


def _certificate(value: object, name: str, limits: Limits) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedError(f"{name} must be a byte string")
    if not 1 <= len(value) <= limits.max_certificate_size:
        raise MalformedError(
            f"{name} must be 1 to {limits.max_certificate_size} bytes, got {len(value)}"
        )
    return value


def _cabundle(value: object, limits: Limits) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise MalformedError("cabundle must be an array")
    if not value:
        raise MalformedError("cabundle is empty")
    if len(value) > limits.max_cabundle_length:
        raise MalformedError(
            f"cabundle holds {len(value)} certificates, more than {limits.max_cabundle_length}"
        )
    return tuple(_certificate(c, f"cabundle[{i}]", limits) for i, c in enumerate(value))


def _optional(payload: dict[object, object], key: str, limits: Limits) -> bytes | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise MalformedError(f"{key} must be a byte string or null")
    if len(value) > limits.max_field_size:
        raise MalformedError(f"{key} is {len(value)} bytes, more than {limits.max_field_size}")
    return value
