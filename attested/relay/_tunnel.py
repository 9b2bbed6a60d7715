"""The tunnel header: how the enclave asks the parent for a destination (pure).

Each tunnel is a new stream connection from the enclave to the parent. Before any
payload, the enclave sends one request and the parent answers with one reply; after an
``OK`` reply both sides relay raw bytes (for HTTPS, the client's TLS records) until
either side closes. All integers are big-endian::

    request (7 + L + 2 bytes, at most 262)      reply (7 + R bytes, at most 262)
    0  4  magic   b"ATRQ"                        0  4  magic    b"ATRP"
    4  1  version 1                              4  1  version  1
    5  1  flags   0 (reserved, must be 0)        5  1  status   TunnelStatus
    6  1  L       host length, 1-253             6  1  R        reason length, 0-255
    7  L  host    canonical name or IP literal   7  R  reason   printable ASCII
    7+L 2 port    1-65535

The host is in the form :func:`~attested.relay._allowlist.normalize_host` returns
(lowercase name without trailing dot, or compressed IP literal without brackets).
A parent that receives another version answers ``UNSUPPORTED_VERSION`` with its own
version in the reply header and closes. The two magics differ so that a peer which
merely echoes (or a raw forward that loops back) is never taken for a parent.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from attested.errors import MalformedError
from attested.relay._allowlist import MAX_HOST_LENGTH, normalize_host

__all__ = [
    "MAX_REASON_LENGTH",
    "MAX_REQUEST_SIZE",
    "PREFIX_SIZE",
    "REPLY_MAGIC",
    "REQUEST_MAGIC",
    "VERSION",
    "TunnelReply",
    "TunnelRequest",
    "TunnelStatus",
    "UnsupportedVersionError",
    "encode_reply",
    "encode_request",
    "parse_reply",
    "parse_request",
    "reply_size",
    "request_size",
]

REQUEST_MAGIC = b"ATRQ"
REPLY_MAGIC = b"ATRP"
VERSION = 1
PREFIX_SIZE = 7
MAX_REASON_LENGTH = 255
MAX_REQUEST_SIZE = PREFIX_SIZE + MAX_HOST_LENGTH + 2
_PREFIX = struct.Struct(">4sBBB")
_PORT = struct.Struct(">H")


class TunnelStatus(enum.IntEnum):
    """The parent's answer to a tunnel request, and the HTTP status it becomes."""

    OK = 0
    NOT_ALLOWED = 1
    FORBIDDEN_ADDRESS = 2
    RESOLVE_FAILED = 3
    CONNECT_FAILED = 4
    CONNECT_TIMEOUT = 5
    BUSY = 6
    BAD_REQUEST = 7
    UNSUPPORTED_VERSION = 8

    @property
    def http_status(self) -> int:
        """The status the enclave's CONNECT proxy answers with."""
        return _HTTP[self]


_HTTP = {
    TunnelStatus.OK: 200,
    TunnelStatus.NOT_ALLOWED: 403,
    TunnelStatus.FORBIDDEN_ADDRESS: 403,
    TunnelStatus.RESOLVE_FAILED: 502,
    TunnelStatus.CONNECT_FAILED: 502,
    TunnelStatus.CONNECT_TIMEOUT: 504,
    TunnelStatus.BUSY: 503,
    TunnelStatus.BAD_REQUEST: 502,
    TunnelStatus.UNSUPPORTED_VERSION: 502,
}


class UnsupportedVersionError(MalformedError):
    """The peer speaks another version of the tunnel header."""

    def __init__(self, version: int) -> None:
        super().__init__(f"tunnel header version {version} (this side speaks {VERSION})")
        self.version = version


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelRequest:
    """The destination the enclave asks for.

    Attributes:
        host: canonical host name or IP literal.
        port: TCP port, 1-65535.
    """

    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelReply:
    """The parent's answer.

    Attributes:
        status: the outcome.
        reason: a short human-readable explanation (printable ASCII, may be empty).
    """

    status: TunnelStatus
    reason: str = ""


def encode_request(host: str, port: int) -> bytes:
    """Encode a request for ``host:port``.

    Raises:
        ValueError: the host or port is not valid.
    """
    canonical = normalize_host(host)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    raw = canonical.encode("ascii")
    return _PREFIX.pack(REQUEST_MAGIC, VERSION, 0, len(raw)) + raw + _PORT.pack(port)


def _check_prefix(prefix: bytes, what: str, expected: bytes) -> tuple[int, int]:
    if len(prefix) < PREFIX_SIZE:
        raise MalformedError(f"tunnel {what} shorter than {PREFIX_SIZE} bytes")
    magic, version, second, length = _PREFIX.unpack_from(prefix)
    if magic != expected:
        raise MalformedError(f"tunnel {what} does not start with {expected!r}")
    if version != VERSION:
        raise UnsupportedVersionError(version)
    return second, length


def request_size(prefix: bytes) -> int:
    """The whole request's size, from its first :data:`PREFIX_SIZE` bytes.

    Raises:
        MalformedError: the prefix is not a valid request prefix
            (:class:`UnsupportedVersionError` for another version).
    """
    flags, length = _check_prefix(prefix, "request", REQUEST_MAGIC)
    if flags != 0:
        raise MalformedError(f"tunnel request has unknown flags {flags:#04x}")
    if not 1 <= length <= MAX_HOST_LENGTH:
        raise MalformedError(f"tunnel request host length {length} is not 1-253")
    return PREFIX_SIZE + length + _PORT.size


def parse_request(data: bytes) -> TunnelRequest:
    """Parse one complete request (exactly :func:`request_size` bytes).

    Raises:
        MalformedError: the bytes are not exactly one valid request.
    """
    size = request_size(data)
    if len(data) != size:
        raise MalformedError(f"tunnel request is {len(data)} bytes, expected {size}")
    raw = data[PREFIX_SIZE : size - _PORT.size]
    (port,) = _PORT.unpack_from(data, size - _PORT.size)
    if port == 0:
        raise MalformedError("tunnel request port is 0")
    try:
        host = raw.decode("ascii")
        canonical = normalize_host(host)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedError("tunnel request host is not a valid host name or IP") from exc
    if canonical != host:
        raise MalformedError("tunnel request host is not in canonical form")
    return TunnelRequest(host=host, port=port)


def encode_reply(status: TunnelStatus, reason: str = "") -> bytes:
    """Encode a reply; the reason is made printable ASCII and cut to 255 bytes."""
    raw = _printable(reason).encode("ascii")[:MAX_REASON_LENGTH]
    return _PREFIX.pack(REPLY_MAGIC, VERSION, int(status), len(raw)) + raw


def reply_size(prefix: bytes) -> int:
    """The whole reply's size, from its first :data:`PREFIX_SIZE` bytes.

    Raises:
        MalformedError: the prefix is not a valid reply prefix
            (:class:`UnsupportedVersionError` for another version).
    """
    status, length = _check_prefix(prefix, "reply", REPLY_MAGIC)
    if status not in TunnelStatus._value2member_map_:
        raise MalformedError(f"tunnel reply has unknown status {status}")
    return PREFIX_SIZE + length


def parse_reply(data: bytes) -> TunnelReply:
    """Parse one complete reply (exactly :func:`reply_size` bytes).

    Raises:
        MalformedError: the bytes are not exactly one valid reply.
    """
    size = reply_size(data)
    if len(data) != size:
        raise MalformedError(f"tunnel reply is {len(data)} bytes, expected {size}")
    raw = data[PREFIX_SIZE:]
    reason = _printable(raw.decode("ascii", errors="replace"))
    return TunnelReply(status=TunnelStatus(data[5]), reason=reason)


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)
