"""The local API's errors: every code, and the table from our error tree to codes.

Every error body is ``{"error": CODE, "message": TEXT}`` with a code of
:data:`ERROR_CODES` (see ``docs/adr/0061-service-error-mapping.md``). Errors of the KMS
client, the credentials and the NSM are mapped by :data:`KMS_ERRORS`, a table from
exception type to code. **Precedence:** the most specific class wins: an error is looked
up along its class's MRO, so a subclass's row always beats its base class's, whatever the
order of the rows (``tests/service/test_error_table.py`` walks the whole tree). A plain
:class:`~attested.errors.KmsError` (no more specific class) is refined by KMS's own
error code (:data:`_BY_KMS_CODE`).

No sockets and no request parsing here; the message is the KMS client's unchanged (it
names keys, regions, endpoints and PCRs, never plaintext, key material or credentials).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from attested._runtime.http import Response
from attested.errors import (
    AttestationUnavailable,
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
    UnavailableError,
    VerificationError,
)

__all__ = [
    "ApiError",
    "ERROR_CODES",
    "KMS_ERRORS",
    "Rule",
    "json_answer",
    "kms_api_error",
    "row_for",
    "rule_for",
]

ERROR_CODES: Mapping[str, tuple[int, str]] = {
    "bad_request": (400, "the HTTP request is malformed (request line, Content-Length)"),
    "malformed_json": (400, "the body is not a JSON object"),
    "unknown_field": (400, "the body has a field this route does not take"),
    "missing_field": (400, "a required field is absent"),
    "invalid_field": (400, "a field has the wrong type or an out-of-range value"),
    "invalid_base64": (400, "a binary field is not standard padded base64"),
    "kms_invalid_ciphertext": (400, "KMS: the ciphertext or encryption context is wrong"),
    "kms_incorrect_key": (400, "KMS: key_id is not the key that encrypted the ciphertext"),
    "kms_invalid_request": (
        400,
        "KMS refused a parameter (ValidationException) or the key does not fit the request "
        "(InvalidKeyUsageException)",
    ),
    "key_not_allowed": (403, "the key is not in kms.allowed_keys"),
    "operation_not_allowed": (403, "the operation is not in kms.operations"),
    "not_served_outside": (403, "over vsock only health, metrics and attestation are served"),
    "public_key_not_served_outside": (403, "over vsock, /v1/attestation takes no public_key"),
    "kms_access_denied": (403, "KMS: the key policy refused; the message lists the PCRs sent"),
    "kms_key_disabled": (403, "KMS: the key is disabled or pending deletion"),
    "not_found": (404, "no such route"),
    "kms_key_not_found": (404, "KMS: no such key, alias or region"),
    "method_not_allowed": (405, "the route exists with another method"),
    "length_required": (411, "chunked bodies are not accepted"),
    "body_too_large": (413, "the body is larger than limits.max_body"),
    "headers_too_large": (431, "request line over 8 KiB or more than 64 header lines"),
    "kms_throttled": (429, "KMS kept throttling after the client's retries"),
    "kms_credentials_rejected": (502, "KMS rejected the service's AWS credentials"),
    "kms_error": (502, "KMS answered with another error"),
    "kms_answer_refused": (502, "KMS's answer was refused (plaintext outside the envelope)"),
    "internal_error": (500, "a bug; see the service log"),
    "method_not_implemented": (501, "an HTTP method the server does not know"),
    "http_version_not_supported": (505, "not HTTP/1.0 or HTTP/1.1"),
    "overloaded": (503, "more connections than limits.max_connections"),
    "credentials_unavailable": (503, "no AWS credentials (parent credential server?)"),
    "kms_unreachable": (503, "KMS could not be reached (endpoint, proxy, relay)"),
    "proxy_unreachable": (503, "the egress proxy could not open a tunnel to KMS"),
    "kms_tls_error": (503, "the TLS handshake with KMS failed (CA bundle?)"),
    "attestation_unavailable": (503, "the NSM gave no attestation document"),
}
"""Every error code: its HTTP status and what it means."""


class ApiError(Exception):
    """An answer other than 200, with its code (one of :data:`ERROR_CODES`)."""

    def __init__(
        self, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The answer: ``{"error": CODE, "message": TEXT}`` with the error's headers."""
        return json_answer(self.status, {"error": self.code, "message": self.message}, self.headers)


def json_answer(
    status: int, value: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> Response:
    """A compact JSON answer."""
    return Response(
        status=status,
        body=json.dumps(value, separators=(",", ":")).encode(),
        headers=dict(headers or {}),
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """What one error type becomes.

    Attributes:
        code: the code (a key of :data:`ERROR_CODES`, which gives the status).
        retry_after: the ``Retry-After`` header in seconds, or ``""`` for none.
        hints: per operation, a sentence put before the client's message (what the caller
            should check); ``"*"`` is the default for other operations.
    """

    code: str
    retry_after: str = ""
    hints: Mapping[str, str] = field(default_factory=dict)


KMS_ERRORS: Mapping[type[AttestedError], Rule] = {
    KmsAccessDenied: Rule("kms_access_denied"),
    KmsKeyNotFound: Rule("kms_key_not_found"),
    KmsKeyDisabled: Rule("kms_key_disabled"),
    KmsThrottled: Rule("kms_throttled", retry_after="1"),
    KmsInvalidCiphertext: Rule("kms_invalid_ciphertext"),
    KmsIncorrectKey: Rule("kms_incorrect_key"),
    KmsCredentialsRejected: Rule("kms_credentials_rejected"),
    KmsError: Rule("kms_error"),
    ProxyUnreachable: Rule("proxy_unreachable", retry_after="5"),
    KmsTlsError: Rule("kms_tls_error"),
    KmsUnreachable: Rule("kms_unreachable", retry_after="5"),
    CredentialsUnavailable: Rule("credentials_unavailable", retry_after="5"),
    AttestationUnavailable: Rule("attestation_unavailable"),
    UnavailableError: Rule("kms_unreachable"),
    VerificationError: Rule("kms_answer_refused"),
    MalformedError: Rule("kms_answer_refused"),
    AttestedError: Rule("kms_error"),
}
"""Our error tree to codes; the most specific class of an error wins (module docstring)."""

_BY_KMS_CODE: Mapping[str, Rule] = {
    "ValidationException": Rule("kms_invalid_request"),
    # The key exists but does not fit the request: the caller's key_id or algorithm,
    # not a KMS failure.
    "InvalidKeyUsageException": Rule(
        "kms_invalid_request",
        hints={
            "decrypt": "key_id or encryption_algorithm does not fit the key (a symmetric key "
            "takes SYMMETRIC_DEFAULT or none; an RSA key needs its RSAES_* algorithm)",
            "generate-data-key": "key_id must name a symmetric encryption key (ENCRYPT_DECRYPT)",
            "generate-data-key-pair": "key_id must name a symmetric encryption key "
            "(ENCRYPT_DECRYPT)",
            "derive-shared-secret": "key_id must name an ECC key pair with key usage KEY_AGREEMENT",
            "*": "key_id does not fit this operation",
        },
    ),
}
"""KMS's error codes that refine a plain :class:`~attested.errors.KmsError`."""


def rule_for(error: AttestedError) -> Rule:
    """The rule for ``error``: its class's, refined by KMS's code for a plain KmsError."""
    row, rule = row_for(type(error))
    if row is KmsError and isinstance(error, KmsError):
        return _BY_KMS_CODE.get(error.code, rule)
    return rule


def row_for(cls: type[AttestedError]) -> tuple[type[AttestedError], Rule]:
    """The row of :data:`KMS_ERRORS` for ``cls``: the first class of its MRO with one."""
    for base in cls.__mro__:
        rule = KMS_ERRORS.get(base)
        if rule is not None:
            return base, rule
    raise AssertionError("AttestedError has a row")  # pragma: no cover


def kms_api_error(error: AttestedError, operation: str) -> ApiError:
    """The answer to a failure of the KMS client, the credentials or the NSM.

    Args:
        error: what the client raised.
        operation: the API operation (``decrypt``, ...), for the caller's hint.
    """
    rule = rule_for(error)
    message = str(error)
    if rule.hints:
        message = f"{rule.hints.get(operation, rule.hints['*'])}. {message}"
    headers = {"Retry-After": rule.retry_after} if rule.retry_after else None
    return ApiError(rule.code, message, headers=headers)
