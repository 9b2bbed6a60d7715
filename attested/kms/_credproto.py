"""The parent-to-enclave credential protocol: length-prefixed, versioned JSON.

One short connection per exchange: the enclave connects to the parent's credential
server, sends one request frame, reads one response frame, and closes::

    frame    = length (4 bytes, big-endian, 2..MAX_FRAME) || UTF-8 JSON object
    request  = {"version": 1, "type": "get"}
    response = {"version": 1, "type": "credentials", "access_key_id": "...",
                "secret_access_key": "...", "session_token": "..." | null,
                "expiration": "2026-01-01T00:00:00Z" | null}
             | {"version": 1, "type": "error", "message": "..."}

Parsing is strict: exactly these keys, no duplicates, no NaN, bounded sizes, ASCII
credential strings, an RFC 3339 expiration with an explicit offset. Pure: no sockets.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from attested import _json
from attested.errors import CredentialsUnavailable, MalformedError

__all__ = [
    "HEADER_SIZE",
    "MAX_FRAME",
    "VERSION",
    "AwsCredentials",
    "decode_request",
    "decode_response",
    "encode_credentials",
    "encode_error",
    "encode_request",
    "frame_length",
]

VERSION = 1
HEADER_SIZE = 4
MAX_FRAME = 16 * 1024
"""Largest frame either side reads. Session tokens are 1-2 KB in practice (cap 8 KiB)."""

_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9_]{16,128}")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_MAX_SECRET = 256
_MAX_TOKEN = 8192
_MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class AwsCredentials:
    """AWS credentials with their expiry. ``repr`` shows only the key id's ends.

    Attributes:
        access_key_id: the access key id (an identifier, not a secret).
        secret_access_key: the secret key.
        session_token: the session token of temporary credentials, or ``None``.
        expiration: when they expire (aware datetime), or ``None`` if unknown.

    Raises:
        ValueError: a field is empty, too long, or has characters AWS never uses.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None

    def __post_init__(self) -> None:
        key_id: object = self.access_key_id
        if not isinstance(key_id, str) or not _ACCESS_KEY_ID.fullmatch(key_id):
            raise ValueError("access_key_id must be 16-128 letters, digits or underscores")
        _check_token(self.secret_access_key, "secret_access_key", _MAX_SECRET)
        if self.session_token is not None:
            _check_token(self.session_token, "session_token", _MAX_TOKEN)
        expiration: object = self.expiration
        if expiration is not None and (
            not isinstance(expiration, datetime) or expiration.tzinfo is None
        ):
            raise ValueError("expiration must be an aware datetime")

    def __repr__(self) -> str:
        key = self.access_key_id
        shown = f"{key[:4]}...{key[-4:]}"
        expires = "unknown" if self.expiration is None else self.expiration.isoformat()
        token = "<redacted>" if self.session_token is not None else "None"
        return (
            f"AwsCredentials(access_key_id={shown!r}, secret_access_key=<redacted>, "
            f"session_token={token}, expiration={expires})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("AwsCredentials cannot be pickled")


def _check_token(value: object, name: str, limit: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit or not _TOKEN_CHARS.fullmatch(value):
        raise ValueError(f"{name} must be at most {limit} printable ASCII characters")


def _frame(message: dict[str, object]) -> bytes:
    payload = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > MAX_FRAME:
        raise ValueError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte cap")
    return struct.pack(">I", len(payload)) + payload


def frame_length(header: bytes) -> int:
    """The payload length announced by a 4-byte frame header.

    Raises:
        MalformedError: the header is short or the length is out of bounds.
    """
    if len(header) != HEADER_SIZE:
        raise MalformedError("credential frame: truncated header")
    length = int.from_bytes(header, "big")
    if not 2 <= length <= MAX_FRAME:
        raise MalformedError(f"credential frame: length {length} is outside 2..{MAX_FRAME}")
    return length


def _load(payload: bytes) -> dict[str, Any]:
    value = _json.loads(payload, what="credential frame", max_size=MAX_FRAME, max_depth=4)
    if not isinstance(value, dict):
        raise MalformedError("credential frame: the JSON value must be an object")
    version = value.get("version")
    if type(version) is not int:
        raise MalformedError("credential frame: 'version' must be an integer")
    if version != VERSION:
        raise MalformedError(
            f"credential frame: protocol version {version} is not supported (this side "
            f"speaks {VERSION}); update attested on both sides"
        )
    return value


def _keys(value: dict[str, Any], expected: set[str]) -> None:
    if set(value) != expected:
        extra = sorted(set(value) - expected)
        missing = sorted(expected - set(value))
        raise MalformedError(
            f"credential frame: unexpected keys {extra!r:.80} / missing {missing!r:.80}"
        )


def encode_request() -> bytes:
    """The enclave's request frame."""
    return _frame({"version": VERSION, "type": "get"})


def decode_request(payload: bytes) -> None:
    """Check a request payload (after the header).

    Raises:
        MalformedError: it is not a version-1 ``get`` request.
    """
    value = _load(payload)
    _keys(value, {"version", "type"})
    if value["type"] != "get":
        raise MalformedError(f"credential frame: unknown request type {value['type']!r:.40}")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_credentials(credentials: AwsCredentials) -> bytes:
    """The parent's answer carrying ``credentials``."""
    return _frame(
        {
            "version": VERSION,
            "type": "credentials",
            "access_key_id": credentials.access_key_id,
            "secret_access_key": credentials.secret_access_key,
            "session_token": credentials.session_token,
            "expiration": None
            if credentials.expiration is None
            else _rfc3339(credentials.expiration),
        }
    )


def encode_error(message: str) -> bytes:
    """The parent's answer when it has no credentials to give (no secrets in ``message``)."""
    return _frame({"version": VERSION, "type": "error", "message": message[:_MAX_MESSAGE]})


def _expiration(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise MalformedError("credential frame: 'expiration' must be an RFC 3339 string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedError("credential frame: 'expiration' is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise MalformedError("credential frame: 'expiration' has no time zone")
    return when.astimezone(UTC)


def decode_response(payload: bytes) -> AwsCredentials:
    """Parse the parent's answer.

    Raises:
        MalformedError: the payload is not a valid version-1 response.
        CredentialsUnavailable: the parent answered with an error.
    """
    value = _load(payload)
    kind = value.get("type")
    if kind == "error":
        _keys(value, {"version", "type", "message"})
        message = value["message"]
        if not isinstance(message, str) or len(message) > _MAX_MESSAGE:
            raise MalformedError("credential frame: 'message' must be a short string")
        shown = "".join(c if c.isprintable() else "?" for c in message)
        raise CredentialsUnavailable(f"the parent credential server has none to give: {shown}")
    if kind != "credentials":
        raise MalformedError(f"credential frame: unknown response type {kind!r:.40}")
    _keys(
        value,
        {"version", "type", "access_key_id", "secret_access_key", "session_token", "expiration"},
    )
    try:
        return AwsCredentials(
            access_key_id=value["access_key_id"],
            secret_access_key=value["secret_access_key"],
            session_token=value["session_token"],
            expiration=_expiration(value["expiration"]),
        )
    except ValueError as exc:
        raise MalformedError(f"credential frame: {exc}") from None
