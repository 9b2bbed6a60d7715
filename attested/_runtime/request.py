"""Reading one HTTP/1.1 request off a connection: strict pre-checks, h11, the body.

The head is checked under strict rules of our own as soon as its bytes arrive, then parsed
by h11; the body is read to its ``Content-Length`` only after checking it against the cap.
What is refused, with which status, and why h11: ``docs/adr/0070-runtime-http-server.md``.

Every wait is bounded by a deadline (:class:`Wire`). What is wrong is raised:
:class:`Refused` (answer with this status and close), :class:`Timeout`, :class:`Gone`
(the peer closed or reset). Threads, answers and refusals are the server's
(:mod:`.http`).
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import h11

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_REQUEST_LINE",
    "METHODS",
    "TOKEN",
    "Gone",
    "Refused",
    "Request",
    "Timeout",
    "Wire",
    "read_request",
    "why",
]

MAX_HEAD = 16 * 1024
"""Largest request head (request line, header fields, their CRLFs), in bytes: 431 beyond."""
MAX_REQUEST_LINE = 8 * 1024
"""Largest request line, in bytes: 431 beyond."""
MAX_HEADERS = 64
"""Most header fields in one request: 431 beyond."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""Methods passed to the application by default; others get 501."""

_RECV_SIZE = 64 * 1024

_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # CTLs other than HTAB, LF, CR
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request as the application sees it.

    Attributes:
        method: the method, e.g. ``POST``.
        path: the request target as sent (path and query).
        headers: header fields by lower-case name; a repeated field's values are joined
            with ``", "`` (RFC 9110, section 5.3).
        body: the body (``Content-Length`` bytes).
        peer: the client: its IP address, the vsock CID, or ``local`` for a Unix socket.
        header_list: every header field in order, names in lower case, repeats kept.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    peer: str
    header_list: tuple[tuple[str, str], ...] = field(default=(), repr=False)


class Refused(Exception):
    """The server answers the request with an error and closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Timeout(Exception):
    """A deadline passed."""


class Gone(Exception):
    """The peer closed or reset the connection."""


class Wire:
    """A socket with a receive buffer; every wait is bounded by a deadline."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def fill(self, deadline: float) -> bool:
        """Receive more into the buffer; ``False`` at end of stream."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(_RECV_SIZE)
        except TimeoutError:
            raise Timeout from None
        except ssl.SSLError as exc:
            raise Gone(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            raise Gone(why(exc)) from None
        if not data:
            return False
        self.buf += data
        return True

    def send(self, data: bytes, deadline: float) -> None:
        """Send all of ``data`` by ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout
        self.sock.settimeout(remaining)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise Timeout from None
        except ssl.SSLError as exc:
            raise Gone(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            raise Gone(why(exc)) from None


def why(exc: OSError) -> str:
    """A short reason for a failed read or write, for the debug log."""
    if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ESHUTDOWN):
        return "reset by the client" if exc.errno == errno.ECONNRESET else "closed by the client"
    return exc.strerror or type(exc).__name__


def _check_head(buf: bytearray | bytes) -> None:
    """Refuse a head, complete or not, as soon as it breaks a rule (no waiting for the rest)."""
    if _CTL.search(buf):
        raise Refused(400, "control characters in the request head")
    crlf = buf.count(b"\r\n")
    if buf.count(b"\n") != crlf:
        raise Refused(400, "line ends must be CRLF")
    if buf.count(b"\r") - crlf > (1 if buf.endswith(b"\r") else 0):
        raise Refused(400, "line ends must be CRLF")
    if b"\r\n " in buf or b"\r\n\t" in buf:
        raise Refused(400, "folded header lines (obs-fold) are not accepted")
    end = buf.find(b"\r\n")
    if (end if end >= 0 else len(buf)) > MAX_REQUEST_LINE:
        raise Refused(431, f"the request line is longer than {MAX_REQUEST_LINE} bytes")
    if end >= 0:
        _check_request_line(bytes(buf[:end]))
    if len(buf) > MAX_HEAD:
        raise Refused(431, f"the request head is larger than {MAX_HEAD} bytes")


def _check_request_line(line: bytes) -> None:
    parts = line.split(b" ")
    if len(parts) == 2:
        raise Refused(505, "the request line has no HTTP version; HTTP/1.0 or HTTP/1.1 only")
    if len(parts) == 3:
        version = _VERSION.fullmatch(parts[2])
        if version is not None and version.group(1, 2) not in ((b"1", b"0"), (b"1", b"1")):
            raise Refused(505, "only HTTP/1.0 and HTTP/1.1 are supported")


def _check_framing(head: bytes, fields: int) -> None:
    """Refuse Transfer-Encoding (h11 would take chunked) and too many fields."""
    if fields > MAX_HEADERS:
        raise Refused(431, f"more than {MAX_HEADERS} header fields")
    lower = head.lower()
    if b"transfer-encoding" not in lower:
        return
    codings = []
    length = False
    for line in lower.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"transfer-encoding":
            codings.append(value.strip(b" \t"))
        elif name == b"content-length":
            length = True
    if not codings:
        return
    if length or codings != [b"chunked"]:
        raise Refused(
            400,
            "Transfer-Encoding is refused with Content-Length, repeated, or other than chunked",
        )
    raise Refused(411, "send a Content-Length; chunked bodies are not accepted")


def read_request(
    wire: Wire, deadline: float, *, peer: str, methods: frozenset[str], max_body: int
) -> tuple[Request, bool]:
    """Read one request, head and body, by ``deadline``.

    Args:
        wire: the connection; bytes after the request stay in its buffer.
        deadline: ``time.monotonic()`` by which the whole request must have arrived.
        peer: the client, for :attr:`Request.peer`.
        methods: the methods the application takes; other well-formed ones get 501.
        max_body: the largest body (413 beyond).

    Returns:
        The request, and whether the client asked to close after it (HTTP/1.0, or
        ``Connection: close``).

    Raises:
        Refused: the request breaks a rule (the status to answer with).
        Timeout: the deadline passed.
        Gone: the client closed or reset the connection.
    """
    head = _read_head(wire, deadline)
    word = head[: head.find(b" ")].decode("latin-1")
    if word not in methods and TOKEN.fullmatch(word):  # before h11 asks for Host
        raise Refused(501, f"method {word[:20]!r} is not implemented")
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    parser.receive_data(head)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError as exc:
        status = 431 if exc.error_status_hint == 431 else 400
        raise Refused(status, f"malformed request: {_h11_reason(exc)}") from None
    if not isinstance(event, h11.Request):  # cannot happen with a complete head
        raise Refused(400, "malformed request")
    headers: dict[str, str] = {}
    header_list = []
    length = 0
    expect = False
    closing = event.http_version != b"1.1"
    for raw_name, raw_value in event.headers:
        name = raw_name.decode("ascii")
        value = raw_value.decode("latin-1")
        header_list.append((name, value))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            closing = closing or "close" in value.lower().replace(" ", "").split(",")
        elif name == "expect":
            expect = value.lower() == "100-continue"
    if length > max_body:
        raise Refused(413, f"the body may be at most {max_body} bytes")
    if expect and event.http_version == b"1.1" and len(wire.buf) < length:
        wire.send(b"HTTP/1.1 100 Continue\r\n\r\n", deadline)
    while len(wire.buf) < length:
        if not wire.fill(deadline):
            raise Gone("closed by the client in the middle of the body")
    body = bytes(wire.buf[:length])
    del wire.buf[:length]
    request = Request(
        method=event.method.decode("ascii"),
        path=event.target.decode("ascii"),
        headers=headers,
        body=body,
        peer=peer,
        header_list=tuple(header_list),
    )
    return request, closing


def _read_head(wire: Wire, deadline: float) -> bytes:
    buf = wire.buf
    while True:
        while buf.startswith(b"\r\n"):  # RFC 9112, 2.2: ignore empty lines before a request
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            _check_head(head)
            _check_framing(head, head.count(b"\r\n") - 2)
            return head
        if buf:
            _check_head(buf)
        if not wire.fill(deadline):
            if buf:
                raise Gone("closed by the client in the middle of the request head")
            raise Gone("closed by the client before sending a request")


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's reason without the request bytes it quotes."""
    text = str(exc)
    return text.split(":", 1)[0] if ": " in text else text
