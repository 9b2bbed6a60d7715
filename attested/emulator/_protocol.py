"""KMS's AWS JSON 1.1 protocol: request validation from botocore's own model, error bodies.

Requests are checked against the KMS service model that ships with botocore (the same
file every AWS SDK is generated from): member types, required members, string and blob
lengths, enums, patterns and integer ranges. Messages follow KMS's wording, for example
``1 validation error detected: Value '2000' at 'numberOfBytes' failed to satisfy
constraint: Member must have value less than or equal to 1024``. A body that is not JSON,
or a member of the wrong JSON type, is a ``SerializationException``, as in AWS.

Blob values are never echoed in messages. Unknown members are ignored, as AWS does. An
empty request body means ``{}`` (the Smithy awsJson1_1 protocol requires servers to
accept it).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from attested.errors import KmsError

__all__ = ["ApiError", "Json", "encode_error", "encode_response", "kms_model", "parse_request"]

Json = dict[str, Any]
"""A decoded JSON object: an operation's validated parameters, or its answer's members."""

_STATUS = {
    "KMSInternalException": 500,
    "KeyUnavailableException": 500,
    "DependencyTimeoutException": 503,
    "DryRunOperationException": 412,
}
_MAX_SHOWN = 1024  # AWS echoes a value whole; recorded ones are up to 257 characters


class ApiError(KmsError):
    """An error answer: a KMS error code (``__type``), a message and an HTTP status.

    Attributes:
        code: the AWS error code.
        status: the HTTP status (400 unless KMS uses another for this code).
        note: for the emulator's log only, never the answer: why, in more words than KMS
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
