"""KMS's AWS JSON 1.1 wire protocol, server side: one home for both KMS servers.

The KMS emulator (:mod:`attested.emulator`, development only) and the service's KMS
endpoint (:mod:`attested.service._kms_endpoint`, production) both speak it, so it lives
here, in neither (production code must not import the emulator; ADR 0094):

* **Requests** (:func:`parse_request`) are checked against the KMS service model that
  ships with botocore (the same file every AWS SDK is generated from): member types,
  required members, string and blob lengths, enums, patterns and integer ranges.
  Messages follow KMS's wording, for example ``1 validation error detected: Value '2000'
  at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or
  equal to 1024``. A body that is not JSON, or a member of the wrong JSON type, is a
  ``SerializationException``, as in AWS. Blob values are never echoed in messages.
  Unknown members are ignored, as AWS does. An empty request body means ``{}`` (the
  Smithy awsJson1_1 protocol requires servers to accept it).
* **The envelope**: ``POST /`` with ``X-Amz-Target: TrentService.<Operation>`` and
  ``Content-Type: application/x-amz-json-1.1`` (:func:`operation_of`,
  :func:`check_envelope`); the SigV4 ``Authorization`` header's shape
  (:func:`parse_authorization`; checking the signature is the emulator's business).
* **Answers** (:func:`encode_response`, :func:`model_members`, :func:`answer`) and
  **errors** (:class:`ApiError`, :func:`encode_error`, :func:`http_error_code`):
  ``{"__type": CODE, "message": TEXT}`` with KMS's HTTP status for the code.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from attested._runtime.http import Response
from attested.errors import KmsError

__all__ = [
    "CONTENT_TYPE",
    "TARGET_PREFIX",
    "ApiError",
    "Authorization",
    "Json",
    "answer",
    "check_data_key_size",
    "check_envelope",
    "check_random_size",
    "encode_error",
    "encode_response",
    "http_error_code",
    "kms_model",
    "model_members",
    "null_member",
    "operation_of",
    "parse_authorization",
    "parse_request",
]

TARGET_PREFIX = "TrentService."
"""``X-Amz-Target`` is ``TrentService.<Operation>`` for KMS."""
CONTENT_TYPE = "application/x-amz-json-1.1"
"""The content type of KMS requests and answers."""

Json = dict[str, Any]
"""A decoded JSON object: an operation's validated parameters, or its answer's members."""

_STATUS = {
    "KMSInternalException": 500,
    "KeyUnavailableException": 500,
    "DependencyTimeoutException": 503,
    "DryRunOperationException": 412,
}
# Errors the HTTP layer answers by itself (framing, caps, overload), as KMS-style codes.
_HTTP_ERRORS = {
    500: "KMSInternalException",
    501: "UnknownOperationException",
    503: "ServiceUnavailableException",
}
_MAX_SHOWN = 1024  # AWS echoes a value whole; recorded ones are up to 257 characters


class ApiError(KmsError):
    """An error answer: a KMS error code (``__type``), a message and an HTTP status.

    Attributes:
        code: the AWS error code.
        status: the HTTP status (400 unless KMS uses another for this code).
        note: for the server's log only, never the answer: why, in more words than KMS
            gives a caller (an unknown access key id, why a ciphertext does not open).
            Never a secret.
    """

    def __init__(
        self, code: str, message: str, *, status: int | None = None, note: str = ""
    ) -> None:
        super().__init__(message, code=code)
        self.status = status if status is not None else _STATUS.get(code, 400)
        self.note = note


@functools.cache
def kms_model() -> ServiceModel:
    """The KMS service model from the installed botocore."""
    return botocore.session.get_session().get_service_model("kms")


class _Serialization(Exception):
    pass


def parse_request(operation: str, body: bytes) -> dict[str, Any]:
    """Decode and validate a request body for ``operation``.

    Returns:
        The members, with blobs decoded to ``bytes`` (unknown members dropped).

    Raises:
        ApiError: ``SerializationException`` (not JSON, wrong JSON types, bad base64) or
            ``ValidationException`` (constraints; every violation is listed).
    """
    if not body:
        # Smithy awsJson1_1, "Empty body serialization": servers MUST accept an empty
        # request body; it means no input members, as ``{}`` does.
        body = b"{}"
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError, _Serialization) as exc:
        raise ApiError("SerializationException", "The request body is not valid JSON") from exc
    shape = kms_model().operation_model(operation).input_shape
    errors: list[str] = []
    try:
        if not isinstance(doc, dict):
            raise _Serialization("The request body must be a JSON object")
        params: dict[str, Any] = _structure(shape, doc, "", errors) if shape is not None else {}
    except _Serialization as exc:
        raise ApiError("SerializationException", str(exc)) from None
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise ApiError(
            "ValidationException",
            f"{len(errors)} validation {noun} detected: " + "; ".join(errors),
        )
    return params


def _reject_constant(name: str) -> None:
    raise _Serialization(name)


def _member_path(prefix: str, name: str) -> str:
    lower = name[:1].lower() + name[1:]
    return f"{prefix}.{lower}" if prefix else lower


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


_HIDDEN = object()


def _constraint(errors: list[str], value: object, path: str, rule: str) -> None:
    # KMS leaves a blob's value out: "Value at 'plaintext' failed to satisfy constraint".
    if value is _HIDDEN:
        shown = ""
    elif value is None:
        shown = " null"
    else:
        shown = f" '{_shown(value)}'"
    errors.append(f"Value{shown} at '{path}' failed to satisfy constraint: Member must {rule}")


def _structure(shape: Any, value: object, path: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Serialization(f"Expected a JSON object at '{path or 'body'}'")
    result: dict[str, Any] = {}
    required = set(shape.required_members)
    for name, member in shape.members.items():
        member_path = _member_path(path, name)
        raw = value.get(name)
        if raw is None:
            if name in required:
                _constraint(errors, None, member_path, "not be null")
            continue
        result[name] = _value(member, raw, member_path, errors)
    return result


def _value(shape: Shape, value: object, path: str, errors: list[str]) -> Any:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        return _structure(shape, value, path, errors)
    if kind == "string":
        if not isinstance(value, str):
            raise _Serialization(f"Expected a string at '{path}'")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Serialization(f"Invalid UTF-8 text at '{path}'") from None
        enum = meta.get("enum")
        if enum and value not in enum:
            _constraint(errors, value, path, f"satisfy enum value set: [{', '.join(enum)}]")
        _length(errors, value, len(value), meta, path)
        pattern = meta.get("pattern")
        if pattern and not _pattern(pattern).fullmatch(value):
            _constraint(errors, value, path, f"satisfy regular expression pattern: {pattern}")
        return value
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Serialization(f"Expected an integer at '{path}'")
        if "min" in meta and value < meta["min"]:
            _constraint(errors, value, path, f"have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            _constraint(errors, value, path, f"have value less than or equal to {meta['max']}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _Serialization(f"Expected a boolean at '{path}'")
        return value
    if kind == "blob":
        if not isinstance(value, str):
            raise _Serialization(f"Expected base64 text at '{path}'")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Serialization(f"Invalid base64 at '{path}'") from None
        _length(errors, None, len(data), meta, path, show=False)
        return data
    if kind == "list":
        if not isinstance(value, list):
            raise _Serialization(f"Expected a JSON array at '{path}'")
        _length(errors, None, len(value), meta, path, show=False)
        member = shape.member  # type: ignore[attr-defined]
        return [_value(member, v, f"{path}.{n + 1}.member", errors) for n, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _Serialization(f"Expected a JSON object at '{path}'")
        key_shape, value_shape = shape.key, shape.value  # type: ignore[attr-defined]
        result = {}
        for k, v in value.items():
            if v is None:
                _constraint(errors, None, f"{path}.{k}", "not be null")
                continue
            result[_value(key_shape, k, path, errors)] = _value(
                value_shape, v, f"{path}.{_shown(k)}", errors
            )
        return result
    raise _Serialization(f"Unsupported member type at '{path}'")  # pragma: no cover


def _length(
    errors: list[str],
    value: object,
    size: int,
    meta: Mapping[str, Any],
    path: str,
    *,
    show: bool = True,
) -> None:
    shown = value if show else _HIDDEN
    if "min" in meta and size < meta["min"]:
        _constraint(errors, shown, path, f"have length greater than or equal to {meta['min']}")
    if "max" in meta and size > meta["max"]:
        _constraint(errors, shown, path, f"have length less than or equal to {meta['max']}")


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def encode_response(result: Mapping[str, object]) -> bytes:
    """The JSON body of a successful answer: blobs as base64, times as epoch seconds.

    Members whose value is ``None`` are left out. An answer without members is an empty
    body (Smithy awsJson1_1: servers SHOULD send an empty body when there is no output).
    """
    members = _jsonable(dict(result))
    if not members:
        return b""
    return json.dumps(members, separators=(",", ":")).encode("utf-8")


def encode_error(error: ApiError) -> bytes:
    """The JSON body of an error answer (``__type`` and message)."""
    # KMS's own exceptions carry "message"; AccessDeniedException comes from the IAM
    # layer, which writes "Message" (seen in aws-nitro-enclaves-sdk-c #157).
    field = "Message" if error.code == "AccessDeniedException" else "message"
    return json.dumps({"__type": error.code, field: str(error)}).encode("utf-8")


def null_member(name: str) -> ApiError:
    """KMS's ``ValidationException`` for a member that must be given (``CiphertextBlob``)."""
    errors: list[str] = []
    _constraint(errors, None, _member_path("", name), "not be null")
    return ApiError("ValidationException", f"1 validation error detected: {errors[0]}")


def check_data_key_size(params: Mapping[str, object]) -> None:
    """GenerateDataKey(WithoutPlaintext) takes ``KeySpec`` or ``NumberOfBytes``, one of them.

    A rule of KMS's beyond the model, with its wording.

    Raises:
        ApiError: ``ValidationException``.
    """
    has_size, has_spec = "NumberOfBytes" in params, "KeySpec" in params
    if has_size == has_spec:
        raise ApiError(
            "ValidationException",
            "Specify either KeySpec or NumberOfBytes, but not both"
            if has_size
            else "Please specify either number of bytes or key spec.",
        )


def check_random_size(params: Mapping[str, object]) -> None:
    """GenerateRandom needs ``NumberOfBytes`` (optional in the model, required by KMS).

    Raises:
        ApiError: ``ValidationException``.
    """
    if "NumberOfBytes" not in params:
        raise ApiError("ValidationException", "NumberOfBytes is required.")


def model_members(operation: str, result: Mapping[str, object]) -> dict[str, object]:
    """The members of ``result`` that ``operation``'s output shape defines, at the top level.

    For answers parsed by botocore (which adds ``ResponseMetadata``) that are sent on.
    """
    shape = kms_model().operation_model(operation).output_shape
    members = shape.members if shape is not None else {}
    return {name: value for name, value in result.items() if name in members}


def answer(status: int, body: bytes, request_id: str | None = None) -> Response:
    """An HTTP answer in KMS's form: its content type and an ``x-amzn-RequestId``."""
    return Response(
        status=status,
        body=body,
        content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id or str(uuid.uuid4())},
    )


def http_error_code(status: int) -> str:
    """The KMS error code for an error the HTTP server found itself (``status``)."""
    return _HTTP_ERRORS.get(status, "SerializationException")


def operation_of(target: str) -> str:
    """The operation ``X-Amz-Target`` names, or ``""`` if it does not name a KMS one."""
    return target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""


def check_envelope(path: str, operation: str, content_type: str) -> None:
    """Refuse what is not a KMS request: another path, no operation, another content type.

    Raises:
        ApiError: ``UnknownOperationException``.
    """
    if path != "/" or not operation:
        raise ApiError(
            "UnknownOperationException",
            "Send POST / with X-Amz-Target: TrentService.<Operation>",
        )
    if not content_type.startswith("application/x-amz-json-1."):
        raise ApiError("UnknownOperationException", f"Content-Type must be {CONTENT_TYPE}")


_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Authorization:
    """A SigV4 ``Authorization`` header, taken apart (nothing checked against a secret).

    Attributes:
        access_key_id: the access key id of the credential scope.
        date: the scope's date (``YYYYMMDD``).
        region: the scope's region.
        service: the scope's service (``kms``).
        signed_headers: the ``SignedHeaders`` names, as sent.
        signature: 64 hex digits.
    """

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> Authorization:
    """Take a SigV4 ``Authorization`` header apart.

    Raises:
        ApiError: ``MissingAuthenticationTokenException`` (absent or empty) or
            ``IncompleteSignatureException`` (not ``AWS4-HMAC-SHA256 Credential=...,
            SignedHeaders=..., Signature=...`` with a five-part credential scope).
    """
    if not value:
        raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH_RE.fullmatch(value.strip())
    if match is None:
        raise ApiError(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "parameters with the AWS4-HMAC-SHA256 algorithm",
        )
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise ApiError("IncompleteSignatureException", "Credential is not a valid SigV4 scope")
    return Authorization(
        access_key_id=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["signature"],
    )
