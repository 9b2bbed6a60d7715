"""The local API's request bodies: one place per route for its fields, types and caps.

:func:`routes` describes every POST route (its operation name and fields);
:func:`parse_body` decodes a body with the project's strict JSON reader
(:func:`attested._json.loads`: UTF-8 only, no duplicate keys, no ``NaN``, bounded size
and depth) and checks it against a route's fields, raising :class:`~._errors.ApiError`
with a message that names the field. The values KMS takes (key specs, algorithms) are
the KMS client's own constants; nothing here calls KMS.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attested._json import loads
from attested.errors import MalformedError
from attested.kms.client import (
    CHINA_REGIONS_ONLY,
    DATA_KEY_SPECS,
    ENCRYPTION_ALGORITHMS,
    KEY_PAIR_SPECS,
)
from attested.limits import REQUEST_FIELD_SIZES
from attested.service._errors import ApiError

__all__ = ["Field", "MAX_DEPTH", "Route", "decode_object", "parse_body", "routes"]

MAX_DEPTH = 8
"""Deepest nesting a body may have (the routes need 2: an object of objects or lists)."""

_NOT_SURROGATE = "not valid Unicode text (a lone surrogate such as \\ud800); KMS takes UTF-8"
_CHINA = "KMS offers it only in the China Regions (cn-north-1, cn-northwest-1)"


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a body.

    Attributes:
        kind: ``b64`` (bytes, padded base64), ``str``, ``int``, ``enum`` (one of
            ``choices``), ``context`` (an encryption context) or ``tokens`` (grant tokens).
        required: absent or ``null`` is refused.
        choices: the values of an ``enum``.
        low: the least length (``str``, decoded ``b64``) or value (``int``).
        high: the greatest.
        unavailable: ``enum`` values refused here, with why.
    """

    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()
    low: int = 0
    high: int = 2**63 - 1
    unavailable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """A POST route: the operation it performs (``kms.operations``) and its fields."""

    operation: str
    fields: Mapping[str, Field]


_KEY_ID = Field("str", required=True, low=1, high=2048)
_CONTEXT = Field("context")
_TOKENS = Field("tokens")


def routes(*, any_key: bool, region: str) -> Mapping[str, Route]:
    """Every POST route by path.

    Args:
        any_key: ``kms.allowed_keys`` is ``*``: decrypt may then omit ``key_id``.
        region: the service's region (SM2 only in the China Regions).
    """
    china_only: Mapping[str, str] = (
        {}
        if region.startswith("cn-")
        else dict.fromkeys(CHINA_REGIONS_ONLY, f"{_CHINA}; this service's region is {region}")
    )
    context_and_tokens = {"encryption_context": _CONTEXT, "grant_tokens": _TOKENS}
    return {
        "/v1/decrypt": Route(
            "decrypt",
            {
                "ciphertext_blob": Field("b64", required=True, low=1, high=6144),
                "key_id": Field("str", required=not any_key, low=1, high=2048),
                "encryption_algorithm": Field(
                    "enum", choices=tuple(sorted(ENCRYPTION_ALGORITHMS)), unavailable=china_only
                ),
                **context_and_tokens,
            },
        ),
        "/v1/generate-data-key": Route(
            "generate-data-key",
            {
                "key_id": _KEY_ID,
                "key_spec": Field("enum", choices=tuple(sorted(DATA_KEY_SPECS))),
                "number_of_bytes": Field("int", low=1, high=1024),
                "plaintext_bytes": Field("int", low=0),
                **context_and_tokens,
            },
        ),
        "/v1/generate-data-key-pair": Route(
            "generate-data-key-pair",
            {
                "key_id": _KEY_ID,
                "key_pair_spec": Field(
                    "enum",
                    required=True,
                    choices=tuple(sorted(KEY_PAIR_SPECS)),
                    unavailable=china_only,
                ),
                **context_and_tokens,
            },
        ),
        "/v1/generate-random": Route(
            "generate-random", {"number_of_bytes": Field("int", required=True, low=1, high=1024)}
        ),
        "/v1/derive-shared-secret": Route(
            "derive-shared-secret",
            {
                "key_id": _KEY_ID,
                "public_key": Field("b64", required=True, low=1, high=8192),
                "key_agreement_algorithm": Field("enum", choices=("ECDH",)),
                "grant_tokens": _TOKENS,
            },
        ),
        "/v1/attestation": Route(
            "attestation",
            {name: Field("b64", high=size) for name, size in REQUEST_FIELD_SIZES.items()},
        ),
    }


def decode_object(body: bytes, *, max_size: int) -> dict[str, Any]:
    """Decode a body that must be one JSON object.

    Raises:
        ApiError: ``malformed_json``.
    """
    try:
        value = loads(body, what="the body", max_size=max_size, max_depth=MAX_DEPTH)
    except MalformedError as exc:
        raise ApiError("malformed_json", str(exc)) from None
    if not isinstance(value, dict):
        raise ApiError("malformed_json", "the body must be a JSON object")
    return value


def parse_body(body: bytes, fields: Mapping[str, Field], *, max_size: int) -> dict[str, Any]:
    """Decode ``body`` and check it against ``fields``.

    Returns:
        The fields present and not ``null``: ``b64`` decoded to bytes, the rest as given.

    Raises:
        ApiError: ``malformed_json``, ``unknown_field``, ``missing_field``,
            ``invalid_field`` or ``invalid_base64``, naming the field.
    """
    value = decode_object(body, max_size=max_size)
    for name in value:
        if name not in fields:
            raise ApiError(
                "unknown_field",
                f"unknown field {name!r:.80}; this route takes {', '.join(sorted(fields))}",
            )
    parsed: dict[str, Any] = {}
    for name, rule in fields.items():
        if name not in value or value[name] is None:
            if rule.required:
                raise ApiError("missing_field", f"the field {name!r} is required")
            continue
        parsed[name] = _CHECKS[rule.kind](name, rule, value[name])
    return parsed


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text KMS can take: encodable as UTF-8 (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _b64(name: str, rule: Field, value: object) -> bytes:
    if not isinstance(value, str):
        raise ApiError("invalid_field", f"{name} must be a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ApiError(
            "invalid_base64", f"{name} is not standard padded base64 (RFC 4648 section 4)"
        ) from None
    if not rule.low <= len(data) <= rule.high:
        raise ApiError(
            "invalid_field", f"{name} must be {rule.low} to {rule.high} bytes once decoded"
        )
    return data


def _str(name: str, rule: Field, value: object) -> str:
    if not isinstance(value, str):
        raise ApiError("invalid_field", f"{name} must be a string")
    if rule.kind == "enum" and value in rule.unavailable:
        raise ApiError("invalid_field", f"{name} {value}: {rule.unavailable[value]}")
    if rule.kind == "enum" and value not in rule.choices:
        raise ApiError("invalid_field", f"{name} must be one of {', '.join(rule.choices)}")
    if rule.kind == "str" and not rule.low <= len(value) <= rule.high:
        raise ApiError("invalid_field", f"{name} must be {rule.low} to {rule.high} long")
    if not _is_text(value):
        raise ApiError("invalid_field", f"{name} is {_NOT_SURROGATE}")
    return value


def _int(name: str, rule: Field, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError("invalid_field", f"{name} must be an integer")
    if not rule.low <= value <= rule.high:
        raise ApiError("invalid_field", f"{name} must be {rule.low} to {rule.high}")
    return value


def _context(name: str, rule: Field, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 64:
        raise ApiError("invalid_field", f"{name} must be an object of at most 64 strings")
    for key, item in value.items():
        if not isinstance(item, str) or len(item) > 8192 or not key:
            raise ApiError("invalid_field", f"{name} values must be strings")
        if not _is_text(key) or not _is_text(item):
            raise ApiError("invalid_field", f"{name} has a key or value that is {_NOT_SURROGATE}")
    return dict(value)


def _tokens(name: str, rule: Field, value: object) -> list[str]:
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


_CHECKS: Mapping[str, Callable[[str, Field, object], object]] = {
    "b64": _b64,
    "str": _str,
    "enum": _str,
    "int": _int,
    "context": _context,
    "tokens": _tokens,
}
