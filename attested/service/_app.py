"""The local API as a plain callable ``Request -> Response``: routing, validation, KMS calls.

No sockets here (see :mod:`._http`). Every answer is JSON; errors are
``{"error": CODE, "message": TEXT}`` with the codes of :data:`ERROR_CODES`. Bodies are
never logged; access log lines carry the route, the status, the error code and the time.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attested import __version__
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
from attested.kms import DataKey, KmsClient
from attested.kms.client import (
    CHINA_REGIONS_ONLY,
    DATA_KEY_SPECS,
    ENCRYPTION_ALGORITHMS,
    KEY_PAIR_SPECS,
)
from attested.provider import AttestationProvider
from attested.service._config import ServiceConfig
from attested.service._http import Request, Response
from attested.service.cache import DataKeyCache
from attested.service.metrics import Counter, Gauge, Histogram, Registry

__all__ = ["ERROR_CODES", "OutsideApp", "ServiceApp", "ServiceMetrics"]

log = logging.getLogger("attested.service")

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

_MAX_NSM_FIELD = {"nonce": 512, "user_data": 512, "public_key": 1024}
# The values KMS takes are the KMS client's; SM2 only where KMS offers it (China Regions).
_DATA_KEY_SPECS = tuple(sorted(DATA_KEY_SPECS))
_KEY_PAIR_SPECS = tuple(sorted(KEY_PAIR_SPECS))
_DECRYPT_ALGORITHMS = tuple(sorted(ENCRYPTION_ALGORITHMS))
_NOT_SURROGATE = "not valid Unicode text (a lone surrogate such as \\ud800); KMS takes UTF-8"
# What to check when KMS says the key does not fit the request (InvalidKeyUsageException).
_KEY_USAGE_HINTS = {
    "decrypt": "key_id or encryption_algorithm does not fit the key (a symmetric key takes "
    "SYMMETRIC_DEFAULT or none; an RSA key needs its RSAES_* algorithm)",
    "generate-data-key": "key_id must name a symmetric encryption key (ENCRYPT_DECRYPT)",
    "generate-data-key-pair": "key_id must name a symmetric encryption key (ENCRYPT_DECRYPT)",
    "derive-shared-secret": "key_id must name an ECC key pair with key usage KEY_AGREEMENT",
}


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


# --- request bodies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    kind: str  # b64 | str | int | context | tokens | enum
    required: bool = False
    choices: tuple[str, ...] = ()
    low: int = 0
    high: int = 2**63 - 1
    unavailable: Mapping[str, str] = field(default_factory=dict)  # choice -> why refused here


_KEY_ID = _Field("str", required=True, low=1, high=2048)
_CONTEXT = _Field("context")
_TOKENS = _Field("tokens")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ApiError("malformed_json", f"the body has the field {key!r:.80} twice")
        result[key] = value
    return result


def _no_constants(name: str) -> None:
    raise ApiError("malformed_json", f"{name} is not valid JSON")


def _parse_body(body: bytes, spec: Mapping[str, _Field]) -> dict[str, Any]:
    try:
        value = json.loads(body, object_pairs_hook=_reject_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        detail = (
            f" ({exc.msg} at line {exc.lineno} column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise ApiError("malformed_json", f"the body is not valid JSON{detail}") from None
    if not isinstance(value, dict):
        raise ApiError("malformed_json", "the body must be a JSON object")
    for name in value:
        if name not in spec:
            raise ApiError(
                "unknown_field",
                f"unknown field {name!r:.80}; this route takes {', '.join(sorted(spec))}",
            )
    parsed: dict[str, Any] = {}
    for name, rule in spec.items():
        if name not in value or value[name] is None:
            if rule.required:
                raise ApiError("missing_field", f"the field {name!r} is required")
            continue
        parsed[name] = _field(name, rule, value[name])
    return parsed


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text KMS can take: encodable as UTF-8 (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(name: str, field: _Field, value: object) -> object:
    if field.kind == "b64":
        if not isinstance(value, str):
            raise ApiError("invalid_field", f"{name} must be a base64 string")
        try:
            data = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ApiError(
                "invalid_base64", f"{name} is not standard padded base64 (RFC 4648 section 4)"
            ) from None
        if not field.low <= len(data) <= field.high:
            raise ApiError(
                "invalid_field", f"{name} must be {field.low} to {field.high} bytes once decoded"
            )
        return data
    if field.kind in ("str", "enum"):
        if not isinstance(value, str):
            raise ApiError("invalid_field", f"{name} must be a string")
        if field.kind == "enum" and value in field.unavailable:
            raise ApiError("invalid_field", f"{name} {value}: {field.unavailable[value]}")
        if field.kind == "enum" and value not in field.choices:
            raise ApiError("invalid_field", f"{name} must be one of {', '.join(field.choices)}")
        if field.kind == "str" and not field.low <= len(value) <= field.high:
            raise ApiError("invalid_field", f"{name} must be {field.low} to {field.high} long")
        if not _is_text(value):
            raise ApiError("invalid_field", f"{name} is {_NOT_SURROGATE}")
        return value
    if field.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ApiError("invalid_field", f"{name} must be an integer")
        if not field.low <= value <= field.high:
            raise ApiError("invalid_field", f"{name} must be {field.low} to {field.high}")
        return value
    if field.kind == "context":
        if not isinstance(value, dict) or len(value) > 64:
            raise ApiError("invalid_field", f"{name} must be an object of at most 64 strings")
        for key, item in value.items():
            if not isinstance(item, str) or len(item) > 8192 or not key:
                raise ApiError("invalid_field", f"{name} values must be strings")
            if not _is_text(key) or not _is_text(item):
                raise ApiError(
                    "invalid_field", f"{name} has a key or value that is {_NOT_SURROGATE}"
                )
        return dict(value)
    if field.kind == "tokens":
        if (
            not isinstance(value, list)
            or len(value) > 10
            or not all(isinstance(t, str) and 1 <= len(t) <= 8192 for t in value)
        ):
            raise ApiError("invalid_field", f"{name} must be a list of at most 10 strings")
        for index, token in enumerate(value):
            if not _is_text(token):
                raise ApiError("invalid_field", f"{name}[{index}] is {_NOT_SURROGATE}")
        return list(value)
    raise AssertionError(field.kind)  # pragma: no cover


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(
    status: int, value: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        status=status,
        body=json.dumps(value, separators=(",", ":")).encode(),
        headers=dict(headers or {}),
    )


# --- callers outside the enclave ------------------------------------------------------

# What a caller outside the enclave (the vsock listener) may use: nothing that returns
# plaintext, key material or a shared secret.
_OUTSIDE_ROUTES = frozenset({"/v1/health", "/metrics", "/v1/attestation"})


class OutsideApp:
    """The API as a caller outside the enclave sees it (the ``api.vsock`` listener).

    Every route that answers with a secret (decrypt, data keys, key pairs, random bytes,
    shared secrets) is refused, and so is ``/v1/attestation`` with a ``public_key``: a
    document naming the caller's key lets the caller receive, from KMS, the answers
    meant for this enclave (``Recipient``). ``api.vsock_allow_secrets`` turns this off.

    Args:
        app: the full API.
    """

    def __init__(self, app: Callable[[Request], Response]) -> None:
        self._app = app

    def __call__(self, request: Request) -> Response:
        """Answer one request from outside the enclave."""
        path = request.path.split("?", 1)[0]
        if path not in _OUTSIDE_ROUTES and path.startswith("/v1/"):
            return _error_response(
                ApiError(
                    "not_served_outside",
                    f"{path[:100]} answers with secrets and is served only to processes in "
                    "the enclave (api.unix, api.tcp); over vsock only /v1/health, /metrics "
                    "and /v1/attestation are (api.vsock_allow_secrets changes that, and "
                    "gives the parent instance those secrets)",
                )
            )
        if path == "/v1/attestation" and _names_public_key(request.body):
            return _error_response(
                ApiError(
                    "public_key_not_served_outside",
                    "public_key is refused over vsock: a document naming a caller's key "
                    "would let that caller receive KMS answers meant for this enclave; "
                    "use nonce and user_data",
                )
            )
        return self._app(request)


def _names_public_key(body: bytes) -> bool:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False  # the app answers 400 for a malformed body
    return isinstance(value, dict) and value.get("public_key") is not None


def _error_response(error: ApiError) -> Response:
    return _json(error.status, {"error": error.code, "message": error.message}, error.headers)


# --- metrics ----------------------------------------------------------------------------


class _ReadCounter(Gauge):
    """A counter whose values are read at scrape time (counts kept elsewhere)."""

    kind = "counter"


class ServiceMetrics:
    """The service's Prometheus metrics.

    Args:
        cache: the data-key cache, if enabled (hits, misses, entries).
        credentials_expiry: seconds until the credentials expire, or ``None``.
        relay_stats: callables returning relay snapshots (``Relay.stats``).
    """

    def __init__(
        self,
        *,
        cache: DataKeyCache[Any] | None = None,
        credentials_expiry: Callable[[], float | None] = lambda: None,
        relay_stats: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.registry = Registry()
        reg = self.registry.register
        self.requests = reg(
            Counter(
                "attested_service_requests_total",
                "API requests by route and status.",
                ("route", "status"),
            )
        )
        self.latency = reg(
            Histogram(
                "attested_service_request_duration_seconds",
                "API request latency by route.",
                ("route",),
            )
        )
        self.kms_errors = reg(
            Counter(
                "attested_service_kms_errors_total",
                "KMS, credential and NSM failures by operation and error code.",
                ("operation", "type"),
            )
        )

        def expiry() -> Iterable[tuple[Sequence[str], float]]:
            seconds = credentials_expiry()
            return [] if seconds is None else [((), seconds)]

        reg(
            Gauge(
                "attested_service_credentials_expiry_seconds",
                "Seconds until the AWS credentials expire (absent when unknown).",
                expiry,
            )
        )
        self._cache = cache
        reg(
            _ReadCounter(
                "attested_service_datakey_cache_hits_total",
                "GenerateDataKey answers served from the data-key cache.",
                lambda: [((), float(cache.hits))] if cache is not None else [],
            )
        )
        reg(
            _ReadCounter(
                "attested_service_datakey_cache_misses_total",
                "GenerateDataKey requests that called KMS with the cache enabled.",
                lambda: [((), float(cache.misses))] if cache is not None else [],
            )
        )
        reg(
            Gauge(
                "attested_service_datakey_cache_entries",
                "Data keys held in the cache now.",
                lambda: [((), float(len(cache)))] if cache is not None else [],
            )
        )
        self._relay_stats = tuple(relay_stats)
        for metric, attribute, help_text in (
            ("connections_total", "connections_total", "Connections accepted by relays."),
            ("bytes_up_total", "bytes_up", "Bytes relayed towards the destination."),
            ("bytes_down_total", "bytes_down", "Bytes relayed back from the destination."),
        ):
            reg(
                _ReadCounter(
                    f"attested_relay_{metric}",
                    help_text,
                    self._relay_reader(attribute),
                    ("listener",),
                )
            )
        reg(
            Gauge(
                "attested_relay_connections_active",
                "Relay connections open now.",
                self._relay_reader("connections_active"),
                ("listener",),
            )
        )
        reg(
            _ReadCounter(
                "attested_relay_refusals_total",
                "Relay connections refused, by listener and reason.",
                self._relay_refusals,
                ("listener", "reason"),
            )
        )

    def _relay_reader(self, attribute: str) -> Callable[[], Iterable[tuple[Sequence[str], float]]]:
        def read() -> Iterable[tuple[Sequence[str], float]]:
            rows = []
            for stats in self._relay_stats:
                for listener in stats().listeners:
                    rows.append(((listener.name,), float(getattr(listener, attribute))))
            return rows

        return read

    def _relay_refusals(self) -> Iterable[tuple[Sequence[str], float]]:
        rows = []
        for stats in self._relay_stats:
            for listener in stats().listeners:
                for reason, count in listener.refusals.items():
                    label = getattr(reason, "value", str(reason))
                    rows.append(((listener.name, str(label)), float(count)))
        return rows

    def render(self) -> str:
        """The text exposition."""
        return self.registry.render()


# --- the application ------------------------------------------------------------------


def _kms_error(exc: AttestedError) -> ApiError:
    """Map the KMS client's typed errors; the message is the client's actionable one."""
    message = str(exc)
    if isinstance(exc, KmsAccessDenied):
        return ApiError("kms_access_denied", message)
    if isinstance(exc, KmsKeyNotFound):
        return ApiError("kms_key_not_found", message)
    if isinstance(exc, KmsKeyDisabled):
        return ApiError("kms_key_disabled", message)
    if isinstance(exc, KmsThrottled):
        return ApiError("kms_throttled", message, headers={"Retry-After": "1"})
    if isinstance(exc, KmsInvalidCiphertext):
        return ApiError("kms_invalid_ciphertext", message)
    if isinstance(exc, KmsIncorrectKey):
        return ApiError("kms_incorrect_key", message)
    if isinstance(exc, KmsCredentialsRejected):
        return ApiError("kms_credentials_rejected", message)
    if isinstance(exc, KmsError):
        if exc.code == "ValidationException":
            return ApiError("kms_invalid_request", message)
        return ApiError("kms_error", message)
    if isinstance(exc, ProxyUnreachable):
        return ApiError("proxy_unreachable", message, headers={"Retry-After": "5"})
    if isinstance(exc, KmsTlsError):
        return ApiError("kms_tls_error", message)
    if isinstance(exc, KmsUnreachable):
        return ApiError("kms_unreachable", message, headers={"Retry-After": "5"})
    if isinstance(exc, CredentialsUnavailable):
        return ApiError("credentials_unavailable", message, headers={"Retry-After": "5"})
    if isinstance(exc, AttestationUnavailable):
        return ApiError("attestation_unavailable", message)
    if isinstance(exc, UnavailableError):
        return ApiError("kms_unreachable", message)
    if isinstance(exc, VerificationError | MalformedError):
        return ApiError("kms_answer_refused", message)
    return ApiError("kms_error", message)


Handler = Callable[[dict[str, Any]], Mapping[str, object]]


class ServiceApp:
    """Routes, validates and answers; one instance serves every listener.

    Args:
        config: the checked configuration (allowed keys and operations).
        kms: the attested KMS client.
        attestation: the provider for ``/v1/attestation``.
        metrics: where counts go.
        cache: the data-key cache, or ``None`` when disabled.
        nsm_backend: the backend name, for ``/v1/health``.
        credentials_expiry: seconds until the credentials expire, or ``None``.
        clock: monotonic seconds, for latencies.
    """

    def __init__(
        self,
        *,
        config: ServiceConfig,
        kms: KmsClient,
        attestation: AttestationProvider,
        metrics: ServiceMetrics,
        cache: DataKeyCache[DataKey] | None = None,
        nsm_backend: str = "",
        credentials_expiry: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._config = config
        self._kms = kms
        self._attestation = attestation
        self._metrics = metrics
        self._cache = cache
        self._backend = nsm_backend
        self._expiry = credentials_expiry
        self._clock = clock
        self._allowed = frozenset(config.allowed_keys)
        context_and_tokens = {"encryption_context": _CONTEXT, "grant_tokens": _TOKENS}
        china_only: Mapping[str, str] = (
            {}
            if config.region.startswith("cn-")
            else dict.fromkeys(
                CHINA_REGIONS_ONLY,
                "KMS offers it only in the China Regions (cn-north-1, cn-northwest-1); this "
                f"service's region is {config.region}",
            )
        )
        self._post: dict[str, tuple[str, Mapping[str, _Field], Handler]] = {
            "/v1/decrypt": (
                "decrypt",
                {
                    "ciphertext_blob": _Field("b64", required=True, low=1, high=6144),
                    "key_id": _Field("str", required=not config.any_key, low=1, high=2048),
                    "encryption_algorithm": _Field(
                        "enum", choices=_DECRYPT_ALGORITHMS, unavailable=china_only
                    ),
                    **context_and_tokens,
                },
                self._decrypt,
            ),
            "/v1/generate-data-key": (
                "generate-data-key",
                {
                    "key_id": _KEY_ID,
                    "key_spec": _Field("enum", choices=_DATA_KEY_SPECS),
                    "number_of_bytes": _Field("int", low=1, high=1024),
                    "plaintext_bytes": _Field("int", low=0),
                    **context_and_tokens,
                },
                self._generate_data_key,
            ),
            "/v1/generate-data-key-pair": (
                "generate-data-key-pair",
                {
                    "key_id": _KEY_ID,
                    "key_pair_spec": _Field(
                        "enum", required=True, choices=_KEY_PAIR_SPECS, unavailable=china_only
                    ),
                    **context_and_tokens,
                },
                self._generate_data_key_pair,
            ),
            "/v1/generate-random": (
                "generate-random",
                {"number_of_bytes": _Field("int", required=True, low=1, high=1024)},
                self._generate_random,
            ),
            "/v1/derive-shared-secret": (
                "derive-shared-secret",
                {
                    "key_id": _KEY_ID,
                    "public_key": _Field("b64", required=True, low=1, high=8192),
                    "key_agreement_algorithm": _Field("enum", choices=("ECDH",)),
                    "grant_tokens": _TOKENS,
                },
                self._derive_shared_secret,
            ),
            "/v1/attestation": (
                "attestation",
                {name: _Field("b64", high=size) for name, size in _MAX_NSM_FIELD.items()},
                self._attestation_document,
            ),
        }
        self._get: dict[str, Callable[[], Response]] = {
            "/v1/health": self._health,
            "/metrics": self._render_metrics,
        }

    # -- dispatch ------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        """Answer one request."""
        start = self._clock()
        path = request.path.split("?", 1)[0]
        route = path if path in self._post or path in self._get else "other"
        code = ""
        try:
            response = self._dispatch(request, path)
        except ApiError as error:
            code = error.code
            response = _error_response(error)
        elapsed = self._clock() - start
        self._metrics.requests.inc(route, str(response.status))
        self._metrics.latency.observe(elapsed, route)
        if (route != "/metrics" and route != "/v1/health") or response.status != 200:
            log.info(
                "%s %s %d%s %.1f ms",
                request.method,
                route,
                response.status,
                f" {code}" if code else "",
                elapsed * 1000,
            )
        return response

    def _dispatch(self, request: Request, path: str) -> Response:
        if path in self._get:
            if request.method not in ("GET", "HEAD"):
                raise ApiError(
                    "method_not_allowed", f"{path} takes GET", headers={"Allow": "GET, HEAD"}
                )
            return self._get[path]()
        if path not in self._post:
            raise ApiError(
                "not_found",
                f"no route {path[:200]!r}; see the OpenAPI description "
                "(attested/service/openapi.yaml)",
            )
        if request.method != "POST":
            raise ApiError("method_not_allowed", f"{path} takes POST", headers={"Allow": "POST"})
        operation, spec, handler = self._post[path]
        if operation not in self._config.operations:
            raise ApiError(
                "operation_not_allowed",
                f"the operation {operation!r} is not enabled in this service's configuration "
                "(kms.operations)",
            )
        fields = _parse_body(request.body, spec)
        return _json(200, handler(fields))

    def _check_key(self, key_id: str | None) -> None:
        if self._config.any_key or key_id in self._allowed:
            return
        raise ApiError(
            "key_not_allowed",
            f"the key {key_id!r:.200} is not in this service's kms.allowed_keys; keys are "
            "matched exactly as written there (ARN or alias ARN)",
        )

    def _kms_call(self, operation: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except AttestedError as exc:
            error = _kms_error(exc)
            if isinstance(exc, KmsError) and exc.code == "InvalidKeyUsageException":
                # The key exists but does not fit the request: the caller's key_id or
                # algorithm, not a KMS failure.
                hint = _KEY_USAGE_HINTS.get(operation, "key_id does not fit this operation")
                error = ApiError("kms_invalid_request", f"{hint}. {error.message}")
            self._metrics.kms_errors.inc(operation, error.code)
            log.warning("%s failed: %s: %s", operation, error.code, error.message)
            raise error from None
        except (ValueError, TypeError) as exc:  # the client refused an argument
            raise ApiError("invalid_field", str(exc)) from None

    # -- the operations --------------------------------------------------------------------

    def _decrypt(self, fields: dict[str, Any]) -> Mapping[str, object]:
        key_id = fields.get("key_id")
        self._check_key(key_id)
        result = self._kms_call(
            "decrypt",
            lambda: self._kms.decrypt(
                fields["ciphertext_blob"],
                key_id=key_id,
                encryption_context=fields.get("encryption_context"),
                encryption_algorithm=fields.get("encryption_algorithm"),
                grant_tokens=fields.get("grant_tokens"),
            ),
        )
        return {
            "plaintext": _b64(result.plaintext.reveal()),
            "key_id": result.key_id,
            "encryption_algorithm": result.encryption_algorithm,
        }

    def _generate_data_key(self, fields: dict[str, Any]) -> Mapping[str, object]:
        key_id: str = fields["key_id"]
        self._check_key(key_id)
        spec = fields.get("key_spec")
        count = fields.get("number_of_bytes")
        if spec is not None and count is not None:
            raise ApiError("invalid_field", "give key_spec or number_of_bytes, not both")
        context = fields.get("encryption_context")

        def make() -> DataKey:
            result: DataKey = self._kms_call(
                "generate-data-key",
                lambda: self._kms.generate_data_key(
                    key_id,
                    key_spec=spec,
                    number_of_bytes=count,
                    encryption_context=context,
                    grant_tokens=fields.get("grant_tokens"),
                ),
            )
            return result

        cached = False
        if self._cache is not None and not fields.get("grant_tokens"):
            size = f"bytes:{count}" if count is not None else (spec or "AES_256")
            key = DataKeyCache.key(key_id, size, context)
            data_key, cached = self._cache.get_or_make(
                key, make, plaintext_bytes=fields.get("plaintext_bytes", 0)
            )
        else:
            data_key = make()
        return {
            "plaintext": _b64(data_key.plaintext.reveal()),
            "ciphertext_blob": _b64(data_key.ciphertext_blob),
            "key_id": data_key.key_id,
            "cached": cached,
        }

    def _generate_data_key_pair(self, fields: dict[str, Any]) -> Mapping[str, object]:
        key_id: str = fields["key_id"]
        self._check_key(key_id)
        pair = self._kms_call(
            "generate-data-key-pair",
            lambda: self._kms.generate_data_key_pair(
                key_id,
                fields["key_pair_spec"],
                encryption_context=fields.get("encryption_context"),
                grant_tokens=fields.get("grant_tokens"),
            ),
        )
        return {
            "private_key": _b64(pair.private_key.reveal()),
            "private_key_ciphertext_blob": _b64(pair.private_key_ciphertext_blob),
            "public_key": _b64(pair.public_key),
            "key_id": pair.key_id,
            "key_pair_spec": pair.key_pair_spec,
        }

    def _generate_random(self, fields: dict[str, Any]) -> Mapping[str, object]:
        secret = self._kms_call(
            "generate-random", lambda: self._kms.generate_random(fields["number_of_bytes"])
        )
        return {"random": _b64(secret.reveal())}

    def _derive_shared_secret(self, fields: dict[str, Any]) -> Mapping[str, object]:
        key_id: str = fields["key_id"]
        self._check_key(key_id)
        shared = self._kms_call(
            "derive-shared-secret",
            lambda: self._kms.derive_shared_secret(
                key_id,
                fields["public_key"],
                key_agreement_algorithm=fields.get("key_agreement_algorithm", "ECDH"),
                grant_tokens=fields.get("grant_tokens"),
            ),
        )
        return {
            "shared_secret": _b64(shared.shared_secret.reveal()),
            "key_id": shared.key_id,
            "key_agreement_algorithm": shared.key_agreement_algorithm,
        }

    def _attestation_document(self, fields: dict[str, Any]) -> Mapping[str, object]:
        document: bytes = self._kms_call(
            "attestation",
            lambda: self._attestation.get_attestation_document(
                nonce=fields.get("nonce"),
                user_data=fields.get("user_data"),
                public_key=fields.get("public_key"),
            ),
        )
        return {"document": _b64(document)}

    # -- GET routes --------------------------------------------------------------------------

    def _health(self) -> Response:
        expiry = self._expiry()
        return _json(
            200,
            {
                "status": "ok",
                "version": __version__,
                "nsm_backend": self._backend,
                "region": self._config.region,
                "credentials_expire_in": None if expiry is None else round(expiry, 1),
            },
        )

    def _render_metrics(self) -> Response:
        return Response(
            status=200,
            body=self._metrics.render().encode(),
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )
