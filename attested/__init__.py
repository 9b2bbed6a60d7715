"""attested: use secrets safely inside AWS Nitro Enclaves, and let others check that.

The verification API in a few lines::

    from attested import Policy, Verifier

    verifier = Verifier.aws_nitro()
    verified = verifier.verify(document_bytes, policy=Policy(pcrs={0: pcr0}, nonce=nonce))
    verified.public_key  # trusted only now

:func:`parse_attestation` returns an untrusted :class:`AttestationDocument`; only
:meth:`Verifier.verify` returns a :class:`VerifiedAttestation`. Every error is an
:class:`AttestedError` (see :mod:`attested.errors`).
"""

from __future__ import annotations

from attested.document import AttestationDocument, Profile, parse_attestation
from attested.errors import (
    AttestationUnavailable,
    AttestedError,
    ChainError,
    ConfigurationError,
    KmsError,
    MalformedError,
    PolicyError,
    PolicyFailure,
    SecurityWarning,
    SignatureError,
    UnavailableError,
    VerificationError,
)
from attested.limits import Limits
from attested.policy import Policy
from attested.provider import AttestationProvider
from attested.trust import TrustRoot
from attested.verify import TimeSource, VerificationReport, VerifiedAttestation, Verifier

__version__ = "0.1.0"

__all__ = [
    "AttestationDocument",
    "AttestationProvider",
    "AttestationUnavailable",
    "AttestedError",
    "ChainError",
    "ConfigurationError",
    "KmsError",
    "Limits",
    "MalformedError",
    "Policy",
    "PolicyError",
    "PolicyFailure",
    "Profile",
    "SecurityWarning",
    "SignatureError",
    "TimeSource",
    "TrustRoot",
    "UnavailableError",
    "VerificationError",
    "VerificationReport",
    "VerifiedAttestation",
    "Verifier",
    "__version__",
    "parse_attestation",
]
