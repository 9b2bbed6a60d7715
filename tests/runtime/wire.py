"""Raw HTTP over real sockets, for what well-behaved clients never send.

Shared by the runtime server's tests and the regression tests of the local API and the
KMS emulator: the framing cases of the security review, a client that reads one answer
and then tells whether the server closed the connection, drip-feeding clients.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Connect = Callable[[], socket.socket]

# (id, raw request, expected status). Every one must be answered and the connection closed.
FRAMING_CASES: list[tuple[str, bytes, int]] = [
    (
        "duplicate-content-length",
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "two-transfer-encodings",
        b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "transfer-encoding-and-content-length",
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "content-length-plus",
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: +22\r\n\r\n" + b"x" * 22,
        400,
    ),
    (
        "content-length-underscore",
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2_2\r\n\r\n" + b"x" * 22,
        400,
    ),
    ("no-version", b"GET /first\r\nHost: x\r\n\r\n", 505),
    ("http-0.9", b"GET /first\r\n", 505),
    ("http-2.0", b"GET /first HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("bare-lf", b"GET /first HTTP/1.1\nHost: x\n\n", 400),
    ("bare-lf-after-crlf-line", b"GET /first HTTP/1.1\r\nHost: x\n\r\n", 400),
    ("bare-cr", b"GET /first HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    ("nul-in-header-name", b"GET /first HTTP/1.1\r\nHost: x\r\nX-A\x00b: y\r\n\r\n", 400),
    ("control-in-header-value", b"GET /first HTTP/1.1\r\nHost: x\r\nX-A: y\x01z\r\n\r\n", 400),
    ("obs-fold", b"GET /first HTTP/1.1\r\nHost: x\r\nX-A: y\r\n  z\r\n\r\n", 400),
    ("space-before-colon", b"GET /first HTTP/1.1\r\nHost: x\r\nX-A : y\r\n\r\n", 400),
    ("missing-host", b"GET /first HTTP/1.1\r\n\r\n", 400),
]


@dataclass
class Reply:
    """One answer read from a raw exchange."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = field(default=False)

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(sock: socket.socket, *, method: str = "GET", timeout: float = 10.0) -> Reply:
    """Read one HTTP answer, then whether the server closes (EOF or reset).

    After an answer with ``Connection: close`` the close is awaited up to ``timeout``;
    after any other answer only briefly (the connection is expected to stay open).
    """
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    wait = timeout if headers.get("connection", "").lower() == "close" else min(timeout, 0.2)
    return Reply(response.status, headers, body, closed=wait_closed(sock, wait))


def read_replies(sock: socket.socket, methods: list[str], *, timeout: float = 10.0) -> list[Reply]:
    """Read one answer per method from one connection (pipelined requests)."""
    sock.settimeout(timeout)
    shared = _Shared(sock.makefile("rb"))
    replies = []
    for method in methods:
        response = http.client.HTTPResponse(shared, method=method)  # type: ignore[arg-type]
        response.begin()
        body = response.read()
        replies.append(
            Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        )
    return replies


class _Shared:
    """One buffered reader for several ``HTTPResponse`` objects (each would make its own)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def makefile(self, *args: Any, **kwargs: Any) -> _Shared:
        return self

    def close(self) -> None:  # HTTPResponse closes its file after each answer
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` (extra bytes: no)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def exchange(connect: Connect, raw: bytes, *, timeout: float = 10.0) -> Reply:
    """Send ``raw`` on a new connection, read one answer and whether the server closed."""
    with connect() as sock:
        sock.settimeout(timeout)
        sock.sendall(raw)
        method = raw.split(b" ", 1)[0].decode("latin-1")
        return read_reply(sock, method=method if method == "HEAD" else "GET", timeout=timeout)


def reset_on_close(sock: socket.socket) -> None:
    """Make ``close`` send a TCP reset instead of a FIN (no effect on Unix sockets)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass
class Dripper:
    """A client sending a request head one byte at a time, ``interval`` seconds apart.

    ``cut_after`` is how long after its first byte the server closed the connection
    (``None``: never within ``give_up`` seconds).
    """

    connect: Connect
    interval: float
    give_up: float
    cut_after: float | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Dripper:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "a dripper did not finish"

    def _run(self) -> None:
        head = b"POST /drip HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        try:
            with self.connect() as sock:
                started = time.monotonic()
                for byte in head:
                    if time.monotonic() - started > self.give_up:
                        return
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:  # reset or broken pipe: cut off
                        self.cut_after = time.monotonic() - started
                        return
                    sock.settimeout(self.interval)
                    try:
                        data = sock.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # the server closed (it may say nothing first)
                        self.cut_after = time.monotonic() - started
                        return
                    # An answer (e.g. 408) before the close is fine: keep reading to the end.
                    sock.settimeout(self.give_up)
                    with contextlib.suppress(OSError):
                        while sock.recv(4096):
                            pass
                    self.cut_after = time.monotonic() - started
                    return
        except BaseException as exc:  # reported to the test
            self.error = exc
