"""What a verified attestation document must say: the verification policy.

A :class:`Policy` is required by :meth:`attested.verify.Verifier.verify`; there is no
default. It must pin at least one set of PCRs, or say explicitly (and loudly) that it
does not, with ``unsafe_any_pcrs=True``. Debug-mode enclaves (all-zero PCR0, whose
memory the parent can read) are refused unless ``allow_debug=True``.

Checks and what they do **not** cover:

* ``pcrs``: each accepted set maps PCR index to value; a document passes if it matches
  every entry of at least one set (several sets allow a rollout between two images).
  PCRs not named in a set are not checked.
* ``nonce`` / ``user_data`` / ``public_key``: byte-for-byte equality when given; not
  checked when ``None``.
* ``max_age``: the document's timestamp is at most this old at the verification time,
  and not more than ``clock_skew`` in the future. Without it, freshness is bounded only
  by the signing certificate's validity (up to 3 hours for real NSM documents).
* debug mode: PCR0 all zero (PCR1 and PCR2 are zero too in debug mode, PCR3/PCR4 are not).
  Enclave documents only: a NitroTPM document (an EC2 instance's) has no debug mode, and
  its PCR0 is AWS firmware, so the check does not apply and ``allow_debug`` changes
  nothing for it. Pin PCR4 with PCR12 (standard boot) or PCR7 (Secure Boot) there.
"""

from __future__ import annotations

import hmac
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from attested.document import AttestationDocument, Profile
from attested.errors import PolicyFailure, SecurityWarning

__all__ = ["Policy", "PolicyFailure"]

_PCR_SIZES = frozenset({32, 48, 64})


def _hex(value: bytes | None) -> str:
    if value is None:
        return "absent"
    return value.hex() if value else "empty"


def _freeze_set(pcrs: object) -> Mapping[int, bytes]:
    if not isinstance(pcrs, Mapping):
        raise TypeError("each PCR set must be a mapping of index to bytes")
    if not pcrs:
        raise ValueError("a PCR set must pin at least one PCR")
    frozen: dict[int, bytes] = {}
    for index, value in pcrs.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 32:
            raise ValueError(f"PCR index must be an integer in [0, 32), got {index!r}")
        if not isinstance(value, bytes):
            raise TypeError(f"PCR{index} must be bytes, not {type(value).__name__}")
        if len(value) not in _PCR_SIZES:
            raise ValueError(f"PCR{index} must be 32, 48 or 64 bytes, got {len(value)}")
        frozen[index] = value
    return types.MappingProxyType(dict(sorted(frozen.items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Expectations a genuine document must meet before it is trusted.

    Args:
        pcrs: one PCR set (``{0: pcr0, 8: pcr8}``) or a sequence of accepted sets.
        nonce: the nonce the relying party asked the enclave to include.
        user_data: the expected ``user_data`` field.
        public_key: the expected ``public_key`` field.
        max_age: the oldest acceptable document, relative to the verification time.
        clock_skew: how far in the future a timestamp may be when ``max_age`` is set.
        allow_debug: accept debug-mode enclaves. **Danger**: the parent instance can
            read and change a debug-mode enclave's memory; never allow it in production.
        unsafe_any_pcrs: accept documents without pinning any PCR. **Danger**: any
            enclave image on any Nitro instance passes; use only to inspect documents.

    Raises:
        ValueError: the policy pins nothing (and ``unsafe_any_pcrs`` is not set), pins an
            all-zero PCR0 without ``allow_debug``, or has values out of range.
    """

    pcrs: tuple[Mapping[int, bytes], ...] | Mapping[int, bytes] | Sequence[Mapping[int, bytes]]
    nonce: bytes | None = None
    user_data: bytes | None = None
    public_key: bytes | None = None
    max_age: timedelta | None = None
    clock_skew: timedelta = field(default=timedelta(seconds=60))
    allow_debug: bool = False
    unsafe_any_pcrs: bool = False

    def __post_init__(self) -> None:
        raw: object = self.pcrs
        sets: tuple[Mapping[int, bytes], ...]
        if isinstance(raw, Mapping):
            sets = (_freeze_set(raw),) if raw else ()
        elif isinstance(raw, Sequence) and not isinstance(raw, str | bytes):
            sets = tuple(_freeze_set(s) for s in raw)
        else:
            raise TypeError("pcrs must be a mapping or a sequence of mappings")
        object.__setattr__(self, "pcrs", sets)
        if not sets and not self.unsafe_any_pcrs:
            raise ValueError(
                "policy pins no PCRs: give at least one PCR set, or unsafe_any_pcrs=True "
                "to accept any enclave image"
            )
        if sets and self.unsafe_any_pcrs:
            raise ValueError("unsafe_any_pcrs=True contradicts the PCR sets given")
        if not self.allow_debug:
            for s in sets:
                pcr0 = s.get(0)
                if pcr0 is not None and not any(pcr0):
                    raise ValueError(
                        "a PCR set pins an all-zero PCR0, which only debug-mode enclaves "
                        "have; set allow_debug=True if that is really intended"
                    )
        for name in ("nonce", "user_data", "public_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes or None")
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        if self.clock_skew < timedelta(0):
            raise ValueError("clock_skew must not be negative")
        if self.unsafe_any_pcrs:
            warnings.warn(
                "verification policy pins no PCRs: any enclave image will pass",
                SecurityWarning,
                stacklevel=3,
            )
        if self.allow_debug:
            warnings.warn(
                "verification policy accepts debug-mode enclaves, whose memory the parent can read",
                SecurityWarning,
                stacklevel=3,
            )

    @property
    def pcr_sets(self) -> tuple[Mapping[int, bytes], ...]:
        """The accepted PCR sets, normalised (read-only mappings in index order)."""
        assert isinstance(self.pcrs, tuple)  # noqa: S101 - normalised in __post_init__
        return self.pcrs

    def evaluate(
        self, document: AttestationDocument, *, now: datetime
    ) -> tuple[PolicyFailure, ...]:
        """Return every check ``document`` fails at time ``now`` (empty if it passes).

        This looks only at the document's fields; it does not verify the signature or
        the chain, so on its own it proves nothing. :class:`~attested.verify.Verifier`
        calls it after both.
        """
        failures: list[PolicyFailure] = []
        failures.extend(self._pcr_failures(document))
        if not self.allow_debug and document.profile is Profile.ENCLAVE:
            pcr0 = document.pcrs.get(0)
            if pcr0 is None:
                failures.append(
                    PolicyFailure(check="debug_mode", expected="PCR0 present", got="absent")
                )
            elif not any(pcr0):
                failures.append(
                    PolicyFailure(
                        check="debug_mode",
                        expected="a production enclave (non-zero PCR0)",
                        got="all-zero PCR0 (debug-mode enclave)",
                    )
                )
        for name in ("nonce", "user_data", "public_key"):
            want: bytes | None = getattr(self, name)
            have: bytes | None = getattr(document, name)
            if want is not None and (have is None or not hmac.compare_digest(want, have)):
                failures.append(PolicyFailure(check=name, expected=_hex(want), got=_hex(have)))
        if self.max_age is not None:
            age = now - document.timestamp
            if age > self.max_age:
                failures.append(
                    PolicyFailure(
                        check="max_age",
                        expected=f"at most {self.max_age.total_seconds():g} s old",
                        got=f"{age.total_seconds():.3f} s old",
                    )
                )
            elif -age > self.clock_skew:
                failures.append(
                    PolicyFailure(
                        check="max_age",
                        expected=f"at most {self.clock_skew.total_seconds():g} s in the future",
                        got=f"{-age.total_seconds():.3f} s in the future",
                    )
                )
        return tuple(failures)

    def _pcr_failures(self, document: AttestationDocument) -> list[PolicyFailure]:
        sets = self.pcr_sets
        per_set: list[list[PolicyFailure]] = []
        for n, expected in enumerate(sets):
            label = n if len(sets) > 1 else None
            mismatches = []
            for index, value in expected.items():
                got = document.pcrs.get(index)
                if got is None or not hmac.compare_digest(got, value):
                    mismatches.append(
                        PolicyFailure(
                            check="pcr",
                            index=index,
                            expected=value.hex(),
                            got=_hex(got),
                            alternative=label,
                        )
                    )
            if not mismatches:
                return []
            per_set.append(mismatches)
        return [f for mismatches in per_set for f in mismatches]
