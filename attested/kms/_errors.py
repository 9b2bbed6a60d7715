"""From botocore's exceptions to errors people can act on.

Each message says what failed, the most likely cause, and what to check. Nothing secret
goes into a message: KMS's own message names principals and key ARNs (not secrets), and
we add the PCRs of the attestation document we sent (public values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from attested.document import Profile, parse_attestation, profile_of
from attested.errors import (
    AttestedError,
    CredentialsUnavailable,
    KmsAccessDenied,
    KmsCredentialsRejected,
    KmsError,
    KmsIncorrectKey,
    KmsInvalidCiphertext,
    KmsKeyDisabled,
    KmsKeyNotFound,
    KmsThrottled,
    KmsTlsError,
    KmsUnreachable,
    MalformedError,
    ProxyUnreachable,
)

__all__ = [
    "PCRS_SHOWN",
    "RETRYABLE_CODES",
    "CallContext",
    "from_client_error",
    "from_transport_error",
    "is_retryable",
]

PCRS_SHOWN = (0, 1, 2, 3, 4, 8)
NITROTPM_PCRS_SHOWN = (4, 7, 12)  # the ones an Attestable AMI's key policy pins
"""The PCRs KMS key policies condition on (AWS examples), listed in access-denied errors."""

THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
RETRYABLE_CODES = THROTTLING_CODES | {
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "InternalFailure",
    "ServiceUnavailable",
}
"""Error codes worth another attempt after a jittered pause."""

_CREDENTIAL_HINTS = {
    "UnrecognizedClientException": (
        "the access key id is not known to AWS. Most likely the credentials are not the "
        "parent's IAM role credentials (for example the IMDS identity-credentials/ec2 "
        "ones, or keys from another partition). Check the credential source."
    ),
    "InvalidClientTokenId": ("the access key id is not known to AWS. Check the credential source."),
    "ExpiredTokenException": (
        "the session token has expired. Most likely the credentials were not refreshed: "
        "check that the parent credential server is running and that the enclave clock "
        "is right."
    ),
    "InvalidSignatureException": (
        "the request signature does not match. Most likely the secret access key does not "
        "belong to the access key id, or the clock is more than 5 minutes off (SigV4)."
    ),
    "SignatureDoesNotMatch": (
        "the request signature does not match. Most likely the secret access key does not "
        "belong to the access key id, or the clock is more than 5 minutes off (SigV4)."
    ),
    "IncompleteSignature": "the request signature is incomplete. Check the credentials.",
    "MissingAuthenticationToken": "the request was not signed. Check the credentials.",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What the client knows about one call, for error messages.

    Attributes:
        operation: the KMS operation name, e.g. ``"Decrypt"``.
        region: the client's region.
        endpoint: the endpoint URL.
        proxy: the HTTPS proxy URL, or ``None``.
        ca_bundle: the CA bundle path in use (``None``: botocore's default).
        key_id: the key id the caller gave, if any.
        document: the attestation document sent, if any.
        attempts: requests made so far.
    """

    operation: str
    region: str
    endpoint: str
    proxy: str | None = None
    ca_bundle: str | None = None
    key_id: str | None = None
    document: bytes | None = field(default=None, repr=False)
    attempts: int = 1


def is_retryable(exc: BaseException) -> bool:
    """Whether a botocore exception is worth another attempt."""
    if isinstance(exc, ClientError):
        return _code(exc) in RETRYABLE_CODES
    return isinstance(exc, (ReadTimeoutError, ConnectionClosedError))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "Unknown")


def _pcrs_of(document: bytes | None) -> tuple[Mapping[int, bytes], str, Profile | None]:
    """The PCRs of our own document, a sentence listing the interesting ones, its kind.

    The document is the one this process sent (an enclave's, or an instance's NitroTPM
    document); it is read to explain a refusal, not to trust it.
    """
    if document is None:
        return {}, "The request carried no attestation document.", None
    try:
        parsed = parse_attestation(document, profile=profile_of(document) or Profile.ENCLAVE)
    except MalformedError as exc:
        why = f"The request carried an attestation document that does not parse ({exc})."
        return {}, why, None
    pcrs = parsed.pcrs
    if parsed.profile is Profile.NITROTPM:
        listed = ", ".join(
            f"NitroTPMPCR{i}={pcrs[i].hex() if i in pcrs else 'absent'}"
            for i in NITROTPM_PCRS_SHOWN
        )
        return pcrs, f"The request carried a NitroTPM document with {listed}.", Profile.NITROTPM
    listed = ", ".join(f"PCR{i}={pcrs[i].hex() if i in pcrs else 'absent'}" for i in PCRS_SHOWN)
    note = ""
    if 0 in pcrs and not any(pcrs[0]):
        note = " PCR0 is all zeros: this is a debug-mode enclave."
    sentence = f"The request carried an attestation document with {listed}.{note}"
    return pcrs, sentence, Profile.ENCLAVE


_LIKELY = {
    Profile.NITROTPM: "the key policy's kms:RecipientAttestation:NitroTPMPCR<n> conditions do "
    "not match these values (another AMI changes PCR4, a changed kernel command line PCR12, "
    "the Secure Boot keys PCR7)",
    None: "the key policy's kms:RecipientAttestation:ImageSha384 / :PCR<n> conditions do not "
    "match these values (a rebuilt image changes PCR0-2; PCR3 is the parent's IAM role, PCR4 "
    "the instance, PCR8 the signing certificate)",
}


def from_client_error(exc: ClientError, context: CallContext) -> KmsError:
    """Map a ``ClientError`` (KMS answered with an error) to our tree."""
    code = _code(exc)
    error = exc.response.get("Error", {})
    metadata = exc.response.get("ResponseMetadata", {})
    kms_message = str(error.get("Message") or "").strip()
    request_id = metadata.get("RequestId")
    op = context.operation
    head = f"KMS {op} failed with {code}"
    if request_id:
        head += f" (request id {request_id})"
    if kms_message:
        head += f": {kms_message}"
    key = context.key_id or "the key"

    if code == "AccessDeniedException":
        pcrs, sentence, profile = _pcrs_of(context.document)
        likely = _LIKELY[Profile.NITROTPM if profile is Profile.NITROTPM else None]
        return KmsAccessDenied(
            f"{head}. {sentence} Most likely {likely}, or the principal is not allowed "
            f"to call kms:{op} on {key}. Compare them with the key policy (values are "
            "compared case-insensitively with StringEqualsIgnoreCase).",
            code=code,
            operation=op,
            attested=context.document is not None,
            pcrs=pcrs,
        )
    if code in _CREDENTIAL_HINTS:
        return KmsCredentialsRejected(
            f"{head}. KMS rejected the credentials: {_CREDENTIAL_HINTS[code]}", code=code
        )
    if code == "InvalidCiphertextException":
        return KmsInvalidCiphertext(
            f"{head}. Most likely the encryption context differs from the one used to "
            "encrypt (it must match exactly), the ciphertext was changed, truncated or is "
            "still base64 text, or it was made by an asymmetric key and needs KeyId and "
            "EncryptionAlgorithm.",
            code=code,
        )
    if code == "IncorrectKeyException":
        return KmsIncorrectKey(
            f"{head}. The KeyId given ({key}) is not the key that encrypted this "
            "ciphertext: pass the right one, or omit KeyId for symmetric ciphertexts.",
            code=code,
        )
    if code == "NotFoundException":
        return KmsKeyNotFound(
            f"{head}. Check {key}: the key id, ARN or alias (aliases start with "
            f"'alias/'), the region (this client uses {context.region}) and the account.",
            code=code,
        )
    if code == "DisabledException":
        return KmsKeyDisabled(
            f"{head}. {key} is disabled: enable it (kms:EnableKey) or use another key.",
            code=code,
        )
    if code == "KMSInvalidStateException":
        return KmsKeyDisabled(
            f"{head}. {key} is not usable in its current state (pending deletion, pending "
            "import or unavailable): check its KeyState with DescribeKey.",
            code=code,
        )
    if code in THROTTLING_CODES:
        return KmsThrottled(
            f"{head}. KMS kept throttling after {context.attempts} attempts. Most likely "
            "the account's request quota for this operation is used up: spread the calls, "
            "cache data keys, or ask for a higher quota.",
            code=code,
            attempts=context.attempts,
        )
    if code == "ValidationException":
        return KmsError(f"{head}. A request parameter is not valid.", code=code)
    suffix = f" after {context.attempts} attempts" if context.attempts > 1 else ""
    return KmsError(f"{head}{suffix}.", code=code)


def _detail(exc: BotoCoreError) -> str:
    error = getattr(exc, "kwargs", {}).get("error")
    inner = getattr(error, "args", ())
    # urllib3 wraps the reason: ProxyError('Unable to connect to proxy', OSError(...)).
    for item in reversed(inner):
        if isinstance(item, BaseException):
            return str(item)
    return str(error) if error is not None else str(exc)


def from_transport_error(exc: BotoCoreError, context: CallContext) -> AttestedError:
    """Map a botocore transport or local error to our tree.

    Raises:
        ValueError: for ``ParamValidationError`` (misuse).
    """
    endpoint = context.endpoint
    host = urlsplit(endpoint).hostname or endpoint
    proxy = getattr(exc, "kwargs", {}).get("proxy_url") or context.proxy
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsUnavailable(
            f"KMS {context.operation}: no AWS credentials ({exc}). Inside an enclave there "
            "is no instance metadata service: use the parent credential server "
            "(ParentCredentials) or pass credentials explicitly."
        )
    if isinstance(exc, ProxyConnectionError):
        return ProxyUnreachable(
            f"KMS {context.operation}: could not open a tunnel to {host} through the HTTPS "
            f"proxy {proxy} ({_detail(exc)}). If the connection was refused, check that the "
            "enclave-egress relay is running and listens there; if the proxy answered an "
            f"error, check that {host}:443 is on the parent relay's allowlist and that the "
            "parent can reach it.",
            endpoint=endpoint,
            proxy=proxy,
        )
    if isinstance(exc, SSLError):
        bundle = context.ca_bundle or "botocore's default bundle"
        return KmsTlsError(
            f"KMS {context.operation}: the TLS handshake with {host} failed "
            f"({_detail(exc)}). Most often this is the CA bundle: the enclave image has no "
            f"CA certificates, or the bundle in use ({bundle}) does not hold the issuer of "
            f"{host}'s certificate. Also check that the certificate's name matches the "
            "endpoint host (VPC endpoints, the emulator).",
            endpoint=endpoint,
            proxy=proxy,
            ca_bundle=context.ca_bundle,
        )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        via = f" through the proxy {proxy}" if proxy else " directly (no proxy configured)"
        hint = (
            "Inside an enclave there is no network: set the proxy to the enclave-egress "
            "relay, or endpoint_url for the emulator."
            if not proxy
            else "Check the relay on the parent and its allowlist."
        )
        return KmsUnreachable(
            f"KMS {context.operation}: could not connect to {endpoint}{via} "
            f"({_detail(exc)}). {hint}",
            endpoint=endpoint,
            proxy=proxy,
        )
    if isinstance(exc, (ReadTimeoutError, ConnectionClosedError)):
        return KmsUnreachable(
            f"KMS {context.operation}: the connection to {endpoint} failed during the "
            f"request after {context.attempts} attempts ({exc}). Check the network path "
            "(relays on both sides) and the timeouts.",
            endpoint=endpoint,
            proxy=proxy,
        )
    if isinstance(exc, ParamValidationError):
        raise ValueError(f"KMS {context.operation}: {exc}") from exc
    return KmsUnreachable(
        f"KMS {context.operation}: the request to {endpoint} failed ({exc}).",
        endpoint=endpoint,
        proxy=proxy,
    )
