"""The HTTP side of the enclave's CONNECT proxy (pure).

Only ``CONNECT host:port HTTP/1.x`` is served: anything else is answered with an error
and the connection is closed. The request head is parsed strictly (CRLF line ends, no
header folding, token header names, at most :data:`MAX_HEAD_SIZE` bytes and
:data:`MAX_HEADERS` fields); header values are ignored.
"""

from __future__ import annotations

from attested.relay._allowlist import normalize_host
from attested.relay._tunnel import TunnelRequest

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "HttpRefusal",
    "error_response",
    "find_head_end",
    "parse_connect",
]

MAX_HEAD_SIZE = 8192
MAX_HEADERS = 100
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HttpRefusal(Exception):
    """A request the proxy answers with an HTTP error.

    Attributes:
        status: the HTTP status code.
        code: a short machine-readable reason (sent as ``X-Attested-Relay-Error``).
        detail: one human-readable sentence (the response body).
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def find_head_end(buffer: bytes | bytearray) -> int | None:
    """Index just past the blank line ending the request head, or ``None``.

    Raises:
        HttpRefusal: 431 when no head end appears within :data:`MAX_HEAD_SIZE` bytes.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_SIZE)
    if end >= 0:
        return end + 4
    if len(buffer) >= MAX_HEAD_SIZE:
        raise _too_large(f"request head over {MAX_HEAD_SIZE} bytes")
    return None


def _bad(detail: str) -> HttpRefusal:
    return HttpRefusal(400, "bad_request", detail)


def _too_large(detail: str) -> HttpRefusal:
    return HttpRefusal(431, "header_too_large", detail)


def parse_connect(head: bytes) -> TunnelRequest:
    """Parse a request head (up to and including the blank line) into the destination.

    Raises:
        HttpRefusal: 400 for a malformed head, 405 for a method other than CONNECT,
            431 for a head over the caps.
    """
    if len(head) > MAX_HEAD_SIZE:
        raise _too_large(f"request head over {MAX_HEAD_SIZE} bytes")
    if not head.endswith(b"\r\n\r\n"):
        raise _bad("request head does not end with an empty line")
    try:
        text = head[:-4].decode("ascii")
    except UnicodeDecodeError as exc:
        raise _bad("request head is not ASCII") from exc
    request_line, *fields = text.split("\r\n")
    if len(fields) > MAX_HEADERS:
        raise _too_large(f"more than {MAX_HEADERS} header fields")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise _bad("request line is not 'METHOD TARGET HTTP/1.1'")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        raise _bad("request method is not a token")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _bad(f"unsupported protocol version {version[:16]!r}")
    for line in fields:
        name, colon, _ = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN:
            raise _bad("malformed header field")
        if "\n" in line or "\r" in line:
            raise _bad("bare CR or LF in a header field")
    if method != "CONNECT":
        raise HttpRefusal(
            405,
            "method_not_allowed",
            f"this proxy only tunnels HTTPS with CONNECT, not {method[:16]}; "
            "set HTTPS_PROXY (not HTTP_PROXY) and use https:// URLs",
        )
    host, port = _authority(target)
    return TunnelRequest(host=host, port=port)


def _authority(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, sep, port_text = target[1:].partition("]:")
        if not sep or ":" not in host:
            raise _bad("CONNECT target is not [IPv6]:PORT")
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep or ":" in host:
            raise _bad("CONNECT target is not HOST:PORT")
    if not port_text.isdigit() or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise _bad("CONNECT target port is not 1-65535")
    try:
        canonical = normalize_host(host)
    except ValueError as exc:
        raise _bad(f"CONNECT target host is not valid: {exc}") from exc
    if target.startswith("[") and ":" not in canonical:
        raise _bad("CONNECT target in brackets is not an IPv6 address")
    return canonical, int(port_text)


def error_response(status: int, code: str, detail: str) -> bytes:
    """A complete ``Connection: close`` error response with a one-line text body."""
    body = f"attested relay: {detail}\n".encode("ascii", errors="replace")
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        f"X-Attested-Relay-Error: {code}",
    ]
    if status == 405:
        head.append("Allow: CONNECT")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body
