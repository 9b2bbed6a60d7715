"""A KMS-compatible endpoint for stock AWS SDKs inside the enclave (``[kms_endpoint]``).

Code that already uses an AWS SDK or a tool built on one (the AWS Encryption SDK, Vault's
``awskms`` seal, the AWS CLI) points it at this endpoint (``AWS_ENDPOINT_URL_KMS``) with
any credentials. It speaks KMS's JSON 1.1 protocol (:mod:`attested.kms._wire`, shared
with the emulator) on the runtime HTTP server, and:

* **attested** operations (Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom,
  DeriveSharedSecret) are made by the service's :class:`~attested.kms.KmsClient`, with
  its credentials and a fresh attestation document, and answered as KMS answers a call
  without ``Recipient``: ``Plaintext`` (or ``PrivateKeyPlaintext``, ``SharedSecret``)
  present, every other member of the model's output that KMS sent;
* **pass-through** operations, which KMS does not attest but keyrings call (Encrypt,
  GenerateDataKeyWithoutPlaintext, GenerateDataKeyPairWithoutPlaintext, DescribeKey,
  GetPublicKey; ReEncrypt only with ``allow_reencrypt``), are sent on unchanged with
  the service's credentials;
* everything else is ``UnsupportedOperationException``: the endpoint serves an enclave's
  processes, not a key administrator.

Keys are those of ``kms.allowed_keys`` (:mod:`._kms_keys`), attested operations those of
``kms.operations``. Errors are KMS's shapes (``__type``, message; HTTP 400 unless KMS
uses another status); an AccessDenied from the key policy keeps the KMS client's message
with the PCRs sent. The SigV4 ``Authorization`` header is checked for shape only (the
callers are processes in the enclave; ADR 0093). Bodies are never logged. Decisions:
``docs/adr/0090-`` to ``0094-``; the guide: ``docs/kms-endpoint.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from attested._runtime.http import HttpLimits, HttpServer, Request, Response
from attested._runtime.listen import make_socket_directory, open_listener
from attested.errors import (
    AttestedError,
    KmsCredentialsRejected,
    KmsError,
    MalformedError,
    UnavailableError,
    VerificationError,
)
from attested.kms import KmsClient, NetworkSettings, _wire
from attested.kms._egress import make_boto_client
from attested.kms._errors import CallContext, from_transport_error
from attested.kms._wire import ApiError, Json
from attested.service._config import ServiceConfig
from attested.service._kms_keys import KeyGate
from attested.service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from botocore.credentials import Credentials
    from mypy_boto3_kms import KMSClient

__all__ = ["ATTESTED", "PASS_THROUGH", "KmsEndpoint", "PlainKms", "open_kms_endpoint"]

log = logging.getLogger("attested.service")

ATTESTED: Mapping[str, str] = {
    "Decrypt": "decrypt",
    "GenerateDataKey": "generate-data-key",
    "GenerateDataKeyPair": "generate-data-key-pair",
    "GenerateRandom": "generate-random",
    "DeriveSharedSecret": "derive-shared-secret",
}
"""The attested operations, and the name of each in ``kms.operations``."""
PASS_THROUGH: Mapping[str, tuple[str, ...]] = {
    "Encrypt": ("KeyId",),
    "GenerateDataKeyWithoutPlaintext": ("KeyId",),
    "GenerateDataKeyPairWithoutPlaintext": ("KeyId",),
    "DescribeKey": ("KeyId",),
    "GetPublicKey": ("KeyId",),
    "ReEncrypt": ("SourceKeyId", "DestinationKeyId"),
}
"""The operations sent on unchanged (ReEncrypt only if allowed), and their key members."""

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_UNRECOGNIZED = "The security token included in the request is invalid."
_MAX_REQUEST_TIMEOUT = 10.0
_POOL = 4  # pass-through connections to KMS (each holds a worker of the parent's relay)


class PlainKms:
    """KMS calls without attestation, with the service's credentials; no retries.

    The caller's SDK retries what it wants to (throttling, 5xx), as it would against KMS.

    Args:
        region: the service's region.
        credentials: the service's botocore credentials (refreshed by botocore).
        network: the service's endpoint, proxy and CA bundle.
    """

    def __init__(self, *, region: str, credentials: Credentials, network: NetworkSettings) -> None:
        self._network = network
        self._region = region
        self._boto: KMSClient = make_boto_client(
            region=region, credentials=credentials, network=network
        )
        self._endpoint = str(self._boto.meta.endpoint_url)

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Make one KMS call; its answer's model members.

        Raises:
            ApiError: KMS's error as KMS sent it, or ``DependencyTimeoutException`` when
                KMS could not be reached.
        """
        method = getattr(self._boto, xform_name(operation))
        try:
            result: dict[str, Any] = method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise ApiError(
                str(error.get("Code") or "KMSInternalException"),
                str(error.get("Message") or ""),
                status=status if isinstance(status, int) and 400 <= status <= 599 else None,
            ) from None
        except BotoCoreError as exc:
            context = CallContext(
                operation=operation,
                region=self._region,
                endpoint=self._endpoint,
                proxy=self._network.proxy,
                ca_bundle=self._network.ca_bundle,
                key_id=params.get("KeyId"),
            )
            try:
                raise kms_error(from_transport_error(exc, context)) from None
            except ValueError as invalid:  # botocore's own parameter validation
                raise ApiError("ValidationException", str(invalid)) from None
        return _wire.model_members(operation, result)

    def describe(self, key_id: str) -> str:
        """The key ARN KMS resolves ``key_id`` (id, ARN, alias name or ARN) to."""
        metadata = self.call("DescribeKey", {"KeyId": key_id}).get("KeyMetadata")
        arn = metadata.get("Arn") if isinstance(metadata, Mapping) else None
        if not isinstance(arn, str) or not arn:
            raise ApiError("KMSInternalException", "KMS DescribeKey answered without an Arn")
        return arn

    def close(self) -> None:
        """Close the connections."""
        self._boto.close()


def kms_error(error: AttestedError) -> ApiError:
    """A failure of the KMS client, the credentials or the NSM as a KMS error shape.

    KMS's own errors keep their code and the KMS client's message (for AccessDenied, with
    the PCRs of the document sent). What KMS did not say becomes
    ``DependencyTimeoutException`` (KMS, the credentials or the NSM could not be reached:
    retry) or ``KMSInternalException`` (KMS's answer was refused).
    """
    message = str(error)
    if isinstance(error, KmsCredentialsRejected):
        message = (
            "KMS rejected attested serve's own AWS credentials (this endpoint never uses the "
            f"caller's): {message}"
        )
    if isinstance(error, KmsError):
        return ApiError(error.code, message)
    if isinstance(error, UnavailableError):
        return ApiError("DependencyTimeoutException", message)
    if isinstance(error, VerificationError | MalformedError):
        return ApiError("KMSInternalException", f"KMS's answer was refused: {message}")
    return ApiError("KMSInternalException", message)


Handler = Callable[[Json], Json]


class KmsEndpoint:
    """The endpoint as a ``Request -> Response`` application.

    Args:
        config: the service's configuration (region, allowed keys and operations, the
            ``[kms_endpoint]`` section).
        kms: the service's attested KMS client.
        plain: pass-through calls (and DescribeKey for the key check).
        metrics: the service's metrics; requests count under ``route="kms:OPERATION"``.
        clock: seconds, for latencies.
    """

    def __init__(
        self,
        *,
        config: ServiceConfig,
        kms: KmsClient,
        plain: PlainKms,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._config = config
        self._kms = kms
        self._plain = plain
        self._metrics = metrics
        self._clock = clock
        self._keys = KeyGate(config.allowed_keys, describe=plain.describe)
        self._operations = _wire.kms_model().operation_names
        self._attested: Mapping[str, Handler] = {
            "Decrypt": self._decrypt,
            "GenerateDataKey": self._generate_data_key,
            "GenerateDataKeyPair": self._generate_data_key_pair,
            "GenerateRandom": self._generate_random,
            "DeriveSharedSecret": self._derive_shared_secret,
        }

    def __call__(self, request: Request) -> Response:
        """Answer one request."""
        start = self._clock()
        operation = _wire.operation_of(request.headers.get("x-amz-target", ""))
        route = f"kms:{operation}" if operation in self._operations else "kms:other"
        code = ""
        try:
            status, body = 200, _wire.encode_response(self._dispatch(request, operation))
        except ApiError as error:
            code, status, body = error.code, error.status, _wire.encode_error(error)
        elapsed = self._clock() - start
        self._metrics.requests.inc(route, str(status))
        self._metrics.latency.observe(elapsed, route)
        log.info("POST %s %d%s %.1f ms", route, status, f" {code}" if code else "", elapsed * 1000)
        return _wire.answer(status, body)

    def error_page(self, status: int, code: str, message: str) -> Response:
        """Errors the HTTP server finds itself (framing, caps, overload), KMS-shaped."""
        self._metrics.requests.inc("kms:other", str(status))
        error = ApiError(_wire.http_error_code(status), message, status=status)
        return _wire.answer(status, _wire.encode_error(error))

    def _dispatch(self, request: Request, operation: str) -> Json:
        _wire.check_envelope(request.path, operation, request.headers.get("content-type", ""))
        self._authenticate(request.headers)
        if operation not in self._operations:
            raise ApiError("UnknownOperationException", f"Unknown operation {operation[:80]}")
        handler = self._attested.get(operation)
        if handler is not None:
            if ATTESTED[operation] not in self._config.operations:
                raise ApiError(
                    "AccessDeniedException",
                    f"{operation} is not enabled on this enclave's KMS endpoint: "
                    f"{ATTESTED[operation]!r} is not in kms.operations of attested serve's "
                    "configuration",
                )
            params = _wire.parse_request(operation, request.body)
            _refuse_recipient_and_dry_run(operation, params)
            return handler(params)
        if operation in PASS_THROUGH and (
            operation != "ReEncrypt" or self._config.kms_endpoint_allow_reencrypt
        ):
            return self._pass_through(operation, _wire.parse_request(operation, request.body))
        raise ApiError(
            "UnsupportedOperationException",
            _unsupported(operation, reencrypt=self._config.kms_endpoint_allow_reencrypt),
        )

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        """SigV4's shape, the scope's service and region, the pinned access key id."""
        auth = _wire.parse_authorization(headers.get("authorization"))
        try:
            datetime.strptime(headers.get("x-amz-date", ""), _DATE_FORMAT)
        except ValueError:
            raise ApiError(
                "IncompleteSignatureException",
                "Authorization header requires existence of a valid 'X-Amz-Date' header",
            ) from None
        if auth.service != "kms":
            raise ApiError(
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 'kms'.",
            )
        region = self._config.region
        if auth.region != region:
            raise ApiError(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{auth.region[:40]}'. "
                f"This enclave's KMS endpoint serves {region}, the region of attested serve: "
                "give the SDK that region.",
            )
        pinned = self._config.kms_endpoint_access_key_id
        if pinned and auth.access_key_id != pinned:
            raise ApiError(
                "UnrecognizedClientException",
                f"{_UNRECOGNIZED} This enclave's KMS endpoint serves only requests signed "
                "with the access key id set in kms_endpoint.access_key_id.",
            )

    def _call_kms(self, operation: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except AttestedError as exc:
            error = kms_error(exc)
            self._metrics.kms_errors.inc(f"kms:{operation}", error.code)
            log.warning("KMS endpoint: %s failed: %s: %s", operation, error.code, error)
            raise error from None
        except (ValueError, TypeError) as exc:  # the client refused an argument
            raise ApiError("ValidationException", str(exc)) from None

    def _decrypt(self, p: Json) -> Json:
        if "CiphertextBlob" not in p:  # optional in the model (DryRunModifiers), not here
            raise _wire.null_member("CiphertextBlob")
        key_id = p.get("KeyId")
        send = None if key_id is None else self._keys.admit(key_id)
        result = self._call_kms(
            "Decrypt",
            lambda: self._kms.decrypt(
                p["CiphertextBlob"],
                encryption_context=p.get("EncryptionContext"),
                key_id=send,
                encryption_algorithm=p.get("EncryptionAlgorithm"),
                grant_tokens=p.get("GrantTokens"),
            ),
        )
        if key_id is None:
            self._keys.admit_answer(result.key_id, "Decrypt")
        return {
            "KeyId": result.key_id,
            "Plaintext": result.plaintext.reveal(),
            "EncryptionAlgorithm": result.encryption_algorithm,
            "KeyMaterialId": result.key_material_id,
        }

    def _generate_data_key(self, p: Json) -> Json:
        _wire.check_data_key_size(p)
        send = self._keys.admit(p["KeyId"])
        data_key = self._call_kms(
            "GenerateDataKey",
            lambda: self._kms.generate_data_key(
                send,
                key_spec=p.get("KeySpec"),
                number_of_bytes=p.get("NumberOfBytes"),
                encryption_context=p.get("EncryptionContext"),
                grant_tokens=p.get("GrantTokens"),
            ),
        )
        return {
            "CiphertextBlob": data_key.ciphertext_blob,
            "Plaintext": data_key.plaintext.reveal(),
            "KeyId": data_key.key_id,
            "KeyMaterialId": data_key.key_material_id,
        }

    def _generate_data_key_pair(self, p: Json) -> Json:
        send = self._keys.admit(p["KeyId"])
        pair = self._call_kms(
            "GenerateDataKeyPair",
            lambda: self._kms.generate_data_key_pair(
                send,
                p["KeyPairSpec"],
                encryption_context=p.get("EncryptionContext"),
                grant_tokens=p.get("GrantTokens"),
            ),
        )
        return {
            "PrivateKeyCiphertextBlob": pair.private_key_ciphertext_blob,
            "PrivateKeyPlaintext": pair.private_key.reveal(),
            "PublicKey": pair.public_key,
            "KeyId": pair.key_id,
            "KeyPairSpec": pair.key_pair_spec,
            "KeyMaterialId": pair.key_material_id,
        }

    def _generate_random(self, p: Json) -> Json:
        _wire.check_random_size(p)
        secret = self._call_kms(
            "GenerateRandom",
            lambda: self._kms.generate_random(
                p["NumberOfBytes"], custom_key_store_id=p.get("CustomKeyStoreId")
            ),
        )
        return {"Plaintext": secret.reveal()}

    def _derive_shared_secret(self, p: Json) -> Json:
        send = self._keys.admit(p["KeyId"])
        shared = self._call_kms(
            "DeriveSharedSecret",
            lambda: self._kms.derive_shared_secret(
                send,
                p["PublicKey"],
                key_agreement_algorithm=p["KeyAgreementAlgorithm"],
                grant_tokens=p.get("GrantTokens"),
            ),
        )
        return {
            "KeyId": shared.key_id,
            "SharedSecret": shared.shared_secret.reveal(),
            "KeyAgreementAlgorithm": shared.key_agreement_algorithm,
            "KeyOrigin": shared.key_origin,
        }

    def _pass_through(self, operation: str, p: Json) -> Json:
        params = dict(p)
        for member in PASS_THROUGH[operation]:
            if member in params:
                params[member] = self._keys.admit(params[member])
        try:
            result = self._plain.call(operation, params)
        except ApiError as error:
            self._metrics.kms_errors.inc(f"kms:{operation}", error.code)
            raise
        if operation == "ReEncrypt" and "SourceKeyId" not in p:
            self._keys.admit_answer(result.get("SourceKeyId"), operation)
        return result


def _refuse_recipient_and_dry_run(operation: str, params: Json) -> None:
    if "Recipient" in params:
        raise ApiError(
            "ValidationException",
            f"{operation}: send no Recipient. This enclave's KMS endpoint attests every "
            "call itself, with the enclave's attestation document, and answers with the "
            "plaintext as KMS does without Recipient.",
        )
    if params.get("DryRun"):
        raise ApiError(
            "ValidationException",
            f"{operation}: DryRun is not offered by this enclave's KMS endpoint for "
            "attested operations; make the call itself.",
        )


def _unsupported(operation: str, *, reencrypt: bool) -> str:
    if operation == "ReEncrypt":
        return (
            "ReEncrypt is not served by this enclave's KMS endpoint unless "
            "kms_endpoint.allow_reencrypt is set in attested serve's configuration: it moves "
            "data from a key whose policy asks for this enclave's attestation to a key whose "
            "policy may not, without the data passing through the enclave."
        )
    served = ", ".join(o for o in [*ATTESTED, *PASS_THROUGH] if o != "ReEncrypt" or reencrypt)
    return (
        f"{operation[:80]} is not served here: this is the KMS endpoint of attested serve, "
        "which serves the processes of an enclave, not a key administrator. It serves "
        f"{served}; administer keys with KMS itself, outside the enclave "
        "(docs/kms-endpoint.md)."
    )


def open_kms_endpoint(
    config: ServiceConfig,
    *,
    kms: KmsClient,
    credentials: Credentials,
    network: NetworkSettings,
    metrics: ServiceMetrics,
) -> tuple[HttpServer, PlainKms]:
    """Bind the endpoint's listener and make its server (not started yet).

    Returns:
        The server and the pass-through client (close it after the server stops).

    Raises:
        OSError: the address cannot be bound.
        ValueError: the endpoint is off in ``config``.
    """
    address = config.kms_endpoint_address()
    if address is None:
        raise ValueError("kms_endpoint.listen is not set")
    plain = PlainKms(
        region=config.region,
        credentials=credentials,
        network=NetworkSettings(
            endpoint_url=network.endpoint_url,
            proxy=network.proxy,
            ca_bundle=network.ca_bundle,
            max_pool_connections=_POOL,
        ),
    )
    try:
        if address.kind == "unix" and address.path:
            made = make_socket_directory(address.path)  # only the last component
            if made is not None:
                log.info("created the directory %s for the socket", made)
        listener = open_listener(address, socket_mode=config.kms_endpoint_unix_mode)
    except BaseException:
        plain.close()
        raise
    app = KmsEndpoint(config=config, kms=kms, plain=plain, metrics=metrics)
    server = HttpServer(
        listener,
        app,
        limits=HttpLimits(
            max_body=config.max_body,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout,
            request_timeout=min(config.idle_timeout, _MAX_REQUEST_TIMEOUT),
        ),
        error_page=app.error_page,
        methods=frozenset({"POST"}),
        server_name="attested-kms-endpoint",
        name="attested-kms-endpoint",
        logger=log,
    )
    return server, plain
