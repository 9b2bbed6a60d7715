"""Offline verification of Nitro attestation documents.

>>> verifier = Verifier.aws_nitro()                                    # doctest: +SKIP
>>> verified = verifier.verify(data, policy=Policy(pcrs={0: pcr0}, nonce=nonce))  # doctest: +SKIP
>>> verified.public_key                                                # doctest: +SKIP

Verification steps, each marked ``(n)`` in the code:

1. Parse: COSE_Sign1 (tagged or not), ES384 named in the protected header only, payload
   fields and sizes per the AWS syntactic rules.
2. Chain: ``cabundle[0]`` is the trust root; every certificate is valid at the
   verification time; the bundle is in issuance order; CA and end-entity profiles hold
   (see :mod:`attested._chain`). No CRLs, as AWS specifies.
3. Signature: ES384 over the COSE Sig_structure built from the bytes received, with
   the signing certificate's key.
4. Policy: PCR sets, debug mode, nonce, user_data, public_key, maximum age.

A verifier checks one kind of document, its :class:`~attested.document.Profile`: enclave
documents by default, NitroTPM documents from EC2 instances with
``profile=Profile.NITROTPM``. A document of the other kind is refused as malformed, never
accepted in its place (ADR 0130).

What this does **not** check: that the enclave is still running, that the document was
made for you (pin a ``nonce`` for that), or anything about PCRs the policy does not name.
The verification time is "now" unless the caller gives another.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from attested import _cose
from attested._chain import ChainValidator
from attested.document import AttestationDocument, Profile, parse_attestation
from attested.errors import (
    ChainError,
    MalformedError,
    PolicyError,
    PolicyFailure,
    SecurityWarning,
    SignatureError,
)
from attested.limits import DEFAULT_LIMITS, Limits
from attested.policy import Policy
from attested.trust import TrustRoot

__all__ = ["TimeSource", "VerificationReport", "VerifiedAttestation", "Verifier"]

_SEAL = object()


class TimeSource(enum.Enum):
    """Where the verification time came from."""

    NOW = "now"
    """The verifier's clock when ``verify`` was called."""
    GIVEN = "given"
    """A time the caller passed in."""
    DOCUMENT = "document"
    """The document's own timestamp. **Danger**: see :meth:`Verifier.verify`."""


@dataclass(frozen=True, eq=False, kw_only=True)
class VerifiedAttestation:
    """An attestation document that passed verification. Only :class:`Verifier` makes these.

    Attributes:
        document: the parsed document.
        chain: the validated certificates, signing certificate first, root last.
        verified_at: the verification time the chain and policy were checked at.
        time_source: where ``verified_at`` came from.
        policy: the policy the document satisfied.
    """

    document: AttestationDocument
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    verified_at: datetime
    time_source: TimeSource
    policy: Policy = field(repr=False)
    _seal: object = field(repr=False)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL:
            raise TypeError("VerifiedAttestation is only created by Verifier.verify")

    @property
    def profile(self) -> Profile:
        """Which kind of document this is (the verifier's profile)."""
        return self.document.profile

    @property
    def module_id(self) -> str:
        """The NSM module id."""
        return self.document.module_id

    @property
    def timestamp(self) -> datetime:
        """When the NSM made the document."""
        return self.document.timestamp

    @property
    def pcrs(self) -> Mapping[int, bytes]:
        """PCR index to value (``nitrotpm_pcrs`` for a NitroTPM document)."""
        return self.document.pcrs

    @property
    def public_key(self) -> bytes | None:
        """The attested ``public_key`` field."""
        return self.document.public_key

    @property
    def user_data(self) -> bytes | None:
        """The attested ``user_data`` field."""
        return self.document.user_data

    @property
    def nonce(self) -> bytes | None:
        """The attested ``nonce`` field."""
        return self.document.nonce


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """Every result of checking one document, for tools that show all failures at once.

    A report is not a verified document: only :meth:`Verifier.verify` returns one.

    Attributes:
        document: the parsed document.
        verified_at: the verification time.
        time_source: where ``verified_at`` came from.
        chain_error: why the chain failed, or ``None``.
        signature_error: why the signature failed, or ``None``.
        policy_failures: every policy check that failed.
    """

    document: AttestationDocument
    verified_at: datetime
    time_source: TimeSource
    chain_error: str | None
    signature_error: str | None
    policy_failures: tuple[PolicyFailure, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return (
            self.chain_error is None and self.signature_error is None and not self.policy_failures
        )

    @property
    def failures(self) -> tuple[str, ...]:
        """Every failure as one line of text, chain first."""
        lines = []
        if self.chain_error is not None:
            lines.append(f"chain: {self.chain_error}")
        if self.signature_error is not None:
            lines.append(f"signature: {self.signature_error}")
        lines.extend(f"policy: {f}" for f in self.policy_failures)
        return tuple(lines)


class Verifier:
    """Verifies attestation documents of one profile against one trust root.

    Thread-safe; keep one per trust root so that validated CA chains are reused.

    Args:
        trust_root: the root the document's ``cabundle`` must start from.
        limits: parsing caps.
        cache_size: validated CA chains to keep (0 disables the cache). Each remembers up
            to 32 signing certificates whose signature it checked; times, profiles and
            the document signature are checked on every call.
        profile: the kind of document to accept: enclave documents (the default) or
            NitroTPM documents from EC2 instances. The other kind is refused.
    """

    def __init__(
        self,
        *,
        trust_root: TrustRoot,
        limits: Limits = DEFAULT_LIMITS,
        cache_size: int = 64,
        profile: Profile = Profile.ENCLAVE,
    ) -> None:
        if not isinstance(profile, Profile):
            raise TypeError("profile must be an attested.document.Profile")
        self.trust_root = trust_root
        self.limits = limits
        self.profile = profile
        self._chains = ChainValidator(trust_root, cache_size=cache_size)

    @classmethod
    def aws_nitro(
        cls,
        *,
        limits: Limits = DEFAULT_LIMITS,
        cache_size: int = 64,
        profile: Profile = Profile.ENCLAVE,
    ) -> Verifier:
        """A verifier for documents from real Nitro hardware (AWS Nitro Enclaves Root-G1).

        Enclave and NitroTPM documents chain to the same root; ``profile`` says which of
        the two this verifier accepts.
        """
        return cls(
            trust_root=TrustRoot.aws_nitro(), limits=limits, cache_size=cache_size, profile=profile
        )

    def verify(
        self,
        document: bytes | AttestationDocument,
        *,
        policy: Policy,
        at: datetime | None = None,
        at_document_time: bool = False,
    ) -> VerifiedAttestation:
        """Verify a document and return it as trusted.

        Args:
            document: raw document bytes or an already parsed document.
            policy: what the document must attest; required, there is no default.
            at: the verification time (timezone-aware); defaults to now.
            at_document_time: verify the chain at the document's own timestamp.
                **Danger**: this shows the document was valid when made, not that it
                is valid now; any old document, including one whose certificates have
                long expired, passes. Use it only for archived documents, with a
                ``nonce`` or another freshness guarantee of your own.

        Returns:
            The verified document.

        Raises:
            MalformedError: the bytes are not a well-formed document of the verifier's
                profile (an enclave verifier refuses a NitroTPM document and the reverse).
            ChainError: the certificate chain is not valid at the verification time.
            SignatureError: the document signature does not verify.
            PolicyError: the document does not satisfy ``policy``; ``.failures`` lists
                every failed check.
            ValueError: ``at`` and ``at_document_time`` are combined, ``at`` is naive,
                or ``policy.max_age`` is combined with ``at_document_time``.
        """
        report, chain = self._check(document, policy, at, at_document_time)
        if report.chain_error is not None:
            raise ChainError(report.chain_error)
        if report.signature_error is not None:
            raise SignatureError(report.signature_error)
        if report.policy_failures:
            raise PolicyError(report.policy_failures)
        return VerifiedAttestation(
            document=report.document,
            chain=chain,
            verified_at=report.verified_at,
            time_source=report.time_source,
            policy=policy,
            _seal=_SEAL,
        )

    def check(
        self,
        document: bytes | AttestationDocument,
        *,
        policy: Policy,
        at: datetime | None = None,
        at_document_time: bool = False,
    ) -> VerificationReport:
        """Run every check and report all results without raising for bad evidence.

        Same arguments as :meth:`verify`. Use it to show a user everything that is wrong
        with a document; grant trust only from :meth:`verify`.

        Raises:
            MalformedError: the bytes are not a well-formed document.
            ValueError: as for :meth:`verify`.
        """
        report, _ = self._check(document, policy, at, at_document_time)
        return report

    def _check(
        self,
        document: bytes | AttestationDocument,
        policy: Policy,
        at: datetime | None,
        at_document_time: bool,
    ) -> tuple[VerificationReport, tuple[x509.Certificate, ...]]:
        if not isinstance(policy, Policy):
            raise TypeError("policy must be an attested.Policy")
        if at is not None and at_document_time:
            raise ValueError("give either at= or at_document_time=True, not both")
        if at is not None and at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        if at_document_time and policy.max_age is not None:
            raise ValueError("max_age is meaningless when verifying at the document's own time")
        # (1) parse, as the verifier's profile only
        if isinstance(document, AttestationDocument):
            doc = document
            if doc.profile is not self.profile:
                raise MalformedError(
                    f"this verifier accepts {self.profile.value} documents; the document was "
                    f"parsed as a {doc.profile.value} document"
                )
        else:
            doc = parse_attestation(document, limits=self.limits, profile=self.profile)
        if at_document_time:
            warnings.warn(
                "verifying at the document's own timestamp: this does not show the "
                "document is valid now",
                SecurityWarning,
                stacklevel=3,
            )
            when, source = doc.timestamp, TimeSource.DOCUMENT
        elif at is not None:
            when, source = at.astimezone(UTC), TimeSource.GIVEN
        else:
            when, source = datetime.now(UTC), TimeSource.NOW
        # (2) chain
        chain: tuple[x509.Certificate, ...] = ()
        chain_error: str | None = None
        try:
            chain = self._chains.validate(doc.signing_certificate, doc.cabundle, when)
        except ChainError as exc:
            chain_error = str(exc)
        # (3) signature over the received bytes
        signature_error: str | None = None
        try:
            _cose.verify_es384(doc.cose, doc.signing_certificate.public_key())
        except SignatureError as exc:
            signature_error = str(exc)
        except (ValueError, UnsupportedAlgorithm):
            signature_error = "signing certificate's public key cannot be used"
        # (4) policy
        failures = policy.evaluate(doc, now=when)
        report = VerificationReport(
            document=doc,
            verified_at=when,
            time_source=source,
            chain_error=chain_error,
            signature_error=signature_error,
            policy_failures=failures,
        )
        return report, chain
