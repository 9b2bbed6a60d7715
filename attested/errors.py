"""The one exception tree of the attested library.

Every error the library raises on purpose is an :class:`AttestedError`. The tree keeps
"the evidence is bad" apart from "the evidence could not be obtained", because the first
must never be retried into success and the second usually can be::

    AttestedError
    ├── MalformedError            bytes that are not well formed (CBOR, COSE, DER, CMS, ...)
    ├── VerificationError         well formed, but not trustworthy
    │   ├── SignatureError        a signature does not verify (no detail on why)
    │   ├── ChainError            no valid path to the trust root at the verification time
    │   └── PolicyError           the document is genuine but not what the policy expects;
    │                             ``.failures`` lists every mismatch
    ├── UnavailableError          could not obtain evidence or reach a service (may be retried)
    │   ├── AttestationUnavailable  the NSM (or simulator) gave no document
    │   └── RelayUnavailable      a relay could not listen on its address
    ├── KmsError                  KMS (or the emulator) answered with an error
    └── ConfigurationError        bad configuration or arguments found before any work starts

Later modules add subclasses under these branches; they never add a second root.

Messages say what failed, with expected and actual values where these are public
(PCRs, nonces, certificate names). They never contain key material, plaintext or
credentials.

Misuse of an API (a wrong type, a negative size) raises :class:`TypeError` or
:class:`ValueError`, as the standard library and pyca/cryptography do.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AttestationUnavailable",
    "AttestedError",
    "ChainError",
    "ConfigurationError",
    "KmsError",
    "MalformedError",
    "PolicyError",
    "PolicyFailure",
    "RelayUnavailable",
    "SecurityWarning",
    "SignatureError",
    "UnavailableError",
    "VerificationError",
]


class AttestedError(Exception):
    """Base class of every error raised on purpose by this library."""


class MalformedError(AttestedError):
    """Input bytes are not well formed: bad encoding, wrong types, sizes out of bounds.

    Raised by parsers before anything is verified. The message names the field and,
    where it helps, the byte offset.
    """


class VerificationError(AttestedError):
    """The input is well formed but must not be trusted."""


class SignatureError(VerificationError):
    """A signature does not verify.

    Deliberately carries no detail about why (a habit taken from pyca/cryptography's
    ``InvalidSignature``).
    """


class ChainError(VerificationError):
    """The certificate chain does not lead to the trust root at the verification time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFailure:
    """One check of a verification policy that did not pass.

    Attributes:
        check: short machine-readable name of the check (``"pcr"``, ``"nonce"``,
            ``"user_data"``, ``"public_key"``, ``"max_age"``, ``"debug_mode"``).
        index: the PCR index for ``"pcr"`` failures, otherwise ``None``.
        expected: what the policy asked for, as text (lowercase hex for bytes).
        got: what the document holds, as text (``"absent"`` when missing).
        alternative: for policies that accept several PCR sets, which set (0-based)
            this failure belongs to; ``None`` when there is only one.
    """

    check: str
    expected: str
    got: str
    index: int | None = None
    alternative: int | None = None

    def __str__(self) -> str:
        where = self.check if self.index is None else f"{self.check}{self.index}"
        if self.alternative is not None:
            where = f"{where} (set {self.alternative})"
        return f"{where}: expected {self.expected}, got {self.got}"


class PolicyError(VerificationError):
    """The document is genuine but does not satisfy the verification policy.

    Attributes:
        failures: every check that failed, not only the first one.
    """

    def __init__(self, failures: tuple[PolicyFailure, ...]) -> None:
        if not failures:
            raise ValueError("PolicyError needs at least one failure")
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))


class UnavailableError(AttestedError):
    """Evidence could not be obtained, or a service could not be reached.

    Unlike :class:`VerificationError`, retrying may help.
    """


class AttestationUnavailable(UnavailableError):
    """No attestation document could be obtained (no NSM device, NSM error, ...)."""


class KmsError(AttestedError):
    """KMS answered with an error.

    Attributes:
        code: the AWS error code (``__type``), for example ``"AccessDeniedException"``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ConfigurationError(AttestedError):
    """Configuration or arguments are invalid; nothing was started."""


class SecurityWarning(UserWarning):
    """An allowed but weakened security setting is in use."""


# -- relays (attested.relay) ----------------------------------------------------------


class RelayUnavailable(UnavailableError):
    """A relay could not listen on its address (in use, no permission, no AF_VSOCK)."""
