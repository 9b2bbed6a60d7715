"""The local API as a plain callable ``Request -> Response``: routing and the KMS calls.

No sockets here (see :mod:`._http`), no body parsing (:mod:`._schema`), no error table
(:mod:`._errors`) and no metric definitions (:mod:`.metrics`). Every answer is JSON;
errors are ``{"error": CODE, "message": TEXT}`` with the codes of
:data:`~._errors.ERROR_CODES`. Bodies are never logged; access log lines carry the
route, the status, the error code and the time.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from attested import __version__
from attested._runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from attested.errors import AttestedError
from attested.kms import DataKey, KmsClient
from attested.provider import AttestationProvider
from attested.service._config import ServiceConfig
from attested.service._errors import ApiError, json_answer, kms_api_error
from attested.service._health import Health
from attested.service._http import Request, Response
from attested.service._schema import decode_object, parse_body, routes
from attested.service.cache import DataKeyCache
from attested.service.metrics import ServiceMetrics

__all__ = ["OutsideApp", "ServiceApp"]

log = logging.getLogger("attested.service")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# What a caller outside the enclave (the vsock listener) may use: nothing that returns
# plaintext, key material or a shared secret.
_HEALTH_ROUTES = frozenset({"/v1/health", "/v1/health/live", "/v1/health/ready"})
_OUTSIDE_ROUTES = _HEALTH_ROUTES | {"/metrics", "/v1/attestation"}


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
            return ApiError(
                "not_served_outside",
                f"{path[:100]} answers with secrets and is served only to processes in "
                "the enclave (api.unix, api.tcp); over vsock only /v1/health, /metrics "
                "and /v1/attestation are (api.vsock_allow_secrets changes that, and "
                "gives the parent instance those secrets)",
            ).response()
        if path == "/v1/attestation" and _names_public_key(request.body):
            return ApiError(
                "public_key_not_served_outside",
                "public_key is refused over vsock: a document naming a caller's key "
                "would let that caller receive KMS answers meant for this enclave; "
                "use nonce and user_data",
            ).response()
        return self._app(request)


def _names_public_key(body: bytes) -> bool:
    try:
        value = decode_object(body, max_size=len(body))
    except ApiError:
        return False  # the app answers 400 for a malformed body
    return value.get("public_key") is not None


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
        health: the parts as last seen (a fresh one by default); KMS calls update it.
        recheck: asks for a background look at the credentials (health requests call it).
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
        health: Health | None = None,
        recheck: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._config = config
        self._kms = kms
        self._attestation = attestation
        self._metrics = metrics
        self._cache = cache
        self._backend = nsm_backend
        self._expiry = credentials_expiry
        self.health = health if health is not None else Health()
        self._recheck = recheck
        self._clock = clock
        self._allowed = frozenset(config.allowed_keys)
        self._routes = routes(any_key=config.any_key, region=config.region)
        self._handlers: Mapping[str, Handler] = {
            "decrypt": self._decrypt,
            "generate-data-key": self._generate_data_key,
            "generate-data-key-pair": self._generate_data_key_pair,
            "generate-random": self._generate_random,
            "derive-shared-secret": self._derive_shared_secret,
            "attestation": self._attestation_document,
        }
        self._get: dict[str, Callable[[], Response]] = {
            "/v1/health": self._health,
            "/v1/health/live": self._live,
            "/v1/health/ready": self._ready,
            "/metrics": self._render_metrics,
        }

    def __call__(self, request: Request) -> Response:
        """Answer one request."""
        start = self._clock()
        path = request.path.split("?", 1)[0]
        route = path if path in self._routes or path in self._get else "other"
        code = ""
        try:
            response = self._dispatch(request, path)
        except ApiError as error:
            code = error.code
            response = error.response()
        elapsed = self._clock() - start
        self._metrics.requests.inc(route, str(response.status))
        self._metrics.latency.observe(elapsed, route)
        # Probes come every few seconds: their answers are not logged (a change of
        # health is, once, by Health), their failures are.
        probe = route == "/metrics" or route in _HEALTH_ROUTES
        if not probe or response.status not in (200, 503):
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
        route = self._routes.get(path)
        if route is None:
            raise ApiError(
                "not_found",
                f"no route {path[:200]!r}; see the OpenAPI description "
                "(attested/service/openapi.yaml)",
            )
        if request.method != "POST":
            raise ApiError("method_not_allowed", f"{path} takes POST", headers={"Allow": "POST"})
        if route.operation not in self._config.operations:
            raise ApiError(
                "operation_not_allowed",
                f"the operation {route.operation!r} is not enabled in this service's "
                "configuration (kms.operations)",
            )
        fields = parse_body(request.body, route.fields, max_size=self._config.max_body)
        return json_answer(200, self._handlers[route.operation](fields))

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
            result = call()
        except AttestedError as exc:
            self.health.saw_call(operation, exc)
            error = kms_api_error(exc, operation)
            self._metrics.kms_errors.inc(operation, error.code)
            log.warning("%s failed: %s: %s", operation, error.code, error.message)
            raise error from None
        except (ValueError, TypeError) as exc:  # the client refused an argument
            raise ApiError("invalid_field", str(exc)) from None
        self.health.saw_call(operation, None)
        return result

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

    def _health(self) -> Response:
        """200 while the service answers; the body says what is degraded (ADR 0076)."""
        return json_answer(200, self._health_body())

    def _live(self) -> Response:
        """200 while the service answers: for liveness probes (restart when it fails)."""
        return json_answer(200, {"status": "live", "live": True})

    def _ready(self) -> Response:
        """200 when ready for KMS calls, else 503: for readiness probes."""
        body = self._health_body()
        return json_answer(200 if body["ready"] else 503, body)

    def _health_body(self) -> dict[str, object]:
        self._recheck()
        expiry = self._expiry()
        report = self.health.report(credentials_expire_in=expiry)
        return {
            "status": report["status"],
            "version": __version__,
            "nsm_backend": self._backend,
            "region": self._config.region,
            "credentials_expire_in": None if expiry is None else round(expiry, 1),
            "live": report["live"],
            "ready": report["ready"],
            "checks": report["checks"],
        }

    def _render_metrics(self) -> Response:
        return Response(
            status=200,
            body=self._metrics.render().encode(),
            content_type=METRICS_CONTENT_TYPE,
        )
