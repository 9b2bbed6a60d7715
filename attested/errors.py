"""The one exception tree of the attested library.

Every error the library raises on purpose is an :class:`AttestedError`. The tree keeps
"the evidence is bad" apart from "the evidence could not be obtained", because the first
must never be retried into success and the second usually can be::

    AttestedError
    ├── MalformedError            bytes that are not well formed (CBOR, COSE, DER, CMS, ...)
    │   ├── KeyPolicyError        a KMS key policy document the emulator cannot accept
    │   └── MalformedEnvelope     a CiphertextForRecipient that is not the CMS KMS sends
    ├── VerificationError         well formed, but not trustworthy
    │   ├── SignatureError        a signature does not verify (no detail on why)
    │   ├── ChainError            no valid path to the trust root at the verification time
    │   ├── PolicyError           the document is genuine but not what the policy expects;
    │   │                         ``.failures`` lists every mismatch
    │   ├── PeerNotAttested       a TLS peer's certificate carries no acceptable attestation
    │   │                         bound to its key; ``.failures`` lists every failed check
    │   ├── EnvelopeNotForRecipient  the envelope is addressed to another recipient key
    │   ├── EnvelopeDecryptionError  the envelope does not open with our key (one uniform
    │   │                            error for every unwrap failure: no padding oracle)
    │   └── RecipientIgnored      KMS answered in plaintext although we sent Recipient
    ├── UnavailableError          could not obtain evidence or reach a service (may be retried)
    │   ├── AttestationUnavailable  the NSM (or simulator) gave no document
    │   │   └── TpmError          a TPM command failed; ``.command`` and ``.code`` (TPM_RC)
    │   ├── CredentialsUnavailable  no AWS credentials (none configured, parent unreachable)
    │   ├── RelayUnavailable      a relay could not listen on its address
    │   └── KmsUnreachable        no answer from KMS: connection refused, DNS, timeout
    │       ├── ProxyUnreachable  the HTTPS (CONNECT) proxy refused or failed the tunnel
    │       └── KmsTlsError       the TLS handshake failed (CA bundle, host name)
    ├── KmsError                  KMS (or the emulator) answered with an error
    │   ├── KmsAccessDenied       AccessDeniedException; ``.pcrs`` of the document we sent
    │   ├── KmsCredentialsRejected  UnrecognizedClient, ExpiredToken, InvalidSignature
    │   ├── KmsInvalidCiphertext  InvalidCiphertextException
    │   ├── KmsIncorrectKey       IncorrectKeyException (KeyId is not the encrypting key)
    │   ├── KmsKeyNotFound        NotFoundException
    │   ├── KmsKeyDisabled        DisabledException, KMSInvalidStateException
    │   └── KmsThrottled          ThrottlingException after the bounded retries
    └── ConfigurationError        bad configuration or arguments found before any work starts
        └── ConfigError           a configuration file with problems; ``.problems`` lists all

Later modules add subclasses under these branches; they never add a second root.

Messages say what failed, with expected and actual values where these are public
(PCRs, nonces, certificate names). They never contain key material, plaintext or
credentials.

Misuse of an API (a wrong type, a negative size) raises :class:`TypeError` or
:class:`ValueError`, as the standard library and pyca/cryptography do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "AttestationUnavailable",
    "AttestedError",
    "ChainError",
    "ConfigError",
    "ConfigurationError",
    "CredentialsUnavailable",
    "EnvelopeDecryptionError",
    "EnvelopeNotForRecipient",
    "KeyPolicyError",
    "KmsAccessDenied",
    "KmsCredentialsRejected",
    "KmsError",
    "KmsIncorrectKey",
    "KmsInvalidCiphertext",
    "KmsKeyDisabled",
    "KmsKeyNotFound",
    "KmsThrottled",
    "KmsTlsError",
    "KmsUnreachable",
    "MalformedEnvelope",
    "MalformedError",
    "PeerNotAttested",
    "PolicyError",
    "PolicyFailure",
    "ProxyUnreachable",
    "RecipientIgnored",
    "RelayUnavailable",
    "SecurityWarning",
    "SignatureError",
    "TpmError",
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


class TpmError(AttestationUnavailable):
    """A TPM answered a command with an error response code (the NitroTPM provider).

    Attributes:
        command: the command's name, for example ``"TPM2_NV_DefineSpace"``.
        code: the TPM response code (``TPM_RC``), for example ``0x14C``.
    """

    def __init__(self, message: str, *, command: str, code: int) -> None:
        super().__init__(message)
        self.command = command
        self.code = code


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


# --- KMS client (attested.kms) -----------------------------------------------------------


class MalformedEnvelope(MalformedError):
    """A ``CiphertextForRecipient`` is not the CMS EnvelopedData that KMS sends.

    Raised before any decryption: bad BER, an unexpected structure, trailing bytes,
    sizes beyond the caps, or algorithms we refuse (for example RSAES-OAEP with the
    SHA-1 defaults, or AES other than AES-256-CBC).
    """


class EnvelopeNotForRecipient(VerificationError):
    """The envelope names another recipient key (its subjectKeyIdentifier is not ours).

    Usually the envelope was made for another process or an older key; the key ids in
    the message are SHA-256 hashes of public keys, not secrets.
    """


class EnvelopeDecryptionError(VerificationError):
    """The envelope does not open with this recipient key.

    Every failure after the structure is parsed (RSA-OAEP unwrap, content-key length,
    ciphertext length, PKCS#7 padding) raises this one type with one message, so the
    error says nothing an attacker could use as a padding oracle.
    """


class RecipientIgnored(VerificationError):
    """KMS answered without honouring the Recipient parameter we sent.

    The response carried a plaintext field (``Plaintext``, ``PrivateKeyPlaintext`` or
    ``SharedSecret``) or no ``CiphertextForRecipient``: the secret, if any, travelled
    outside the attested envelope and is discarded.
    """


class CredentialsUnavailable(UnavailableError):
    """No AWS credentials could be obtained (none configured, or the parent is unreachable)."""


class KmsUnreachable(UnavailableError):
    """KMS did not answer: connection refused, name resolution failed, or a timeout.

    Attributes:
        endpoint: the URL the client tried to reach.
        proxy: the HTTPS proxy used, or ``None`` for a direct connection.
    """

    def __init__(self, message: str, *, endpoint: str, proxy: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.proxy = proxy


class ProxyUnreachable(KmsUnreachable):
    """The HTTPS proxy (the enclave-egress relay) refused the connection or the tunnel."""


class KmsTlsError(KmsUnreachable):
    """The TLS handshake with KMS failed: most often a missing or wrong CA bundle.

    Attributes:
        ca_bundle: the CA bundle path that was used (``None``: botocore's default).
    """

    def __init__(
        self, message: str, *, endpoint: str, proxy: str | None = None, ca_bundle: str | None
    ) -> None:
        super().__init__(message, endpoint=endpoint, proxy=proxy)
        self.ca_bundle = ca_bundle


class KmsAccessDenied(KmsError):
    """KMS refused the request (``AccessDeniedException``).

    Attributes:
        operation: the KMS operation, for example ``"Decrypt"``.
        attested: whether the request carried an attestation document.
        pcrs: the PCRs of the attestation document we sent (index to value), read-only;
            empty when no document was sent. Compare them with the key policy's
            ``kms:RecipientAttestation:PCR<n>`` conditions.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "AccessDeniedException",
        operation: str,
        attested: bool,
        pcrs: Mapping[int, bytes],
    ) -> None:
        super().__init__(message, code=code)
        self.operation = operation
        self.attested = attested
        self.pcrs: Mapping[int, bytes] = MappingProxyType(dict(pcrs))


class KmsCredentialsRejected(KmsError):
    """KMS did not accept the credentials (unknown, expired, or a bad signature)."""


class KmsInvalidCiphertext(KmsError):
    """KMS could not decrypt the ciphertext blob (``InvalidCiphertextException``)."""


class KmsIncorrectKey(KmsError):
    """The ``KeyId`` given is not the key that encrypted the ciphertext."""


class KmsKeyNotFound(KmsError):
    """The key, alias or ARN does not exist in this account and region."""


class KmsKeyDisabled(KmsError):
    """The key exists but cannot be used now (disabled, pending deletion or import)."""


class KmsThrottled(KmsError):
    """KMS kept throttling after the bounded retries.

    Attributes:
        attempts: how many requests were made.
    """

    def __init__(self, message: str, *, code: str = "ThrottlingException", attempts: int) -> None:
        super().__init__(message, code=code)
        self.attempts = attempts


# KMS emulator


class KeyPolicyError(MalformedError):
    """A KMS key policy document is not well formed, or uses what the emulator does not support.

    The KMS emulator answers ``MalformedPolicyDocumentException`` with this message.
    """


# -- relays (attested.relay) ----------------------------------------------------------


class RelayUnavailable(UnavailableError):
    """A relay could not listen on its address (in use, no permission, no AF_VSOCK)."""


# -- attested TLS (attested.tls) ------------------------------------------------------------


class PeerNotAttested(VerificationError):
    """A TLS peer is not an attested enclave that matches the policy.

    Raised during the handshake, before any application byte is sent: the certificate
    carries no attestation document, the document binds another key, its chain or
    signature fails, or it does not satisfy the policy.

    Attributes:
        failures: every failed check, one line each (``"binding: ..."``, ``"chain: ..."``,
            ``"policy: pcr0: expected ..., got ..."``). Never empty.
    """

    def __init__(self, failures: Sequence[str]) -> None:
        if not failures:
            raise ValueError("PeerNotAttested needs at least one failure")
        self.failures: tuple[str, ...] = tuple(failures)
        super().__init__("the peer is not an attested enclave: " + "; ".join(self.failures))


# -- configuration files (attested serve, attested parent) --------------------------------


class ConfigError(ConfigurationError):
    """A configuration is not valid; every problem found is listed, not only the first.

    Nothing was started.

    Attributes:
        problems: one short message per problem, each naming the key (``kms.allowed_keys``,
            ``"egress.listen: ..."``) or environment variable it is about. Never empty.
        source: the file the problems are in, when known.
    """

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))
