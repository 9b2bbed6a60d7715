"""One hardened HTTP/1.1 server: a thread per connection, h11 to read requests.

Used by the enclave's local API (:mod:`attested.service`) and the KMS emulator. The
application is a plain callable ``Request -> Response``; everything about the wire is
here, except reading one request (:mod:`.request`). The deadlines (``idle_timeout``,
``request_timeout``), the refusals the client can read (answer, shut down writes, read
and discard within bounds, then close; over-cap connections in at most
:data:`MAX_REFUSERS` short-lived threads), stopping and logging (one DEBUG line per
abnormal end, tracebacks only for bugs, nothing on stderr) are described in
``docs/adr/0070-runtime-http-server.md``.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import json
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from attested._runtime.listen import Listener
from attested._runtime.request import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    METHODS,
    TOKEN,
    Gone,
    Refused,
    Request,
    Timeout,
    Wire,
    read_request,
    why,
)
from attested.net import Address

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_REFUSERS",
    "MAX_REQUEST_LINE",
    "METHODS",
    "App",
    "DropConnection",
    "ErrorPage",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
    "ServerStats",
    "json_error_page",
]

MAX_REFUSERS = 16
"""Over-cap connections being answered 503 at once; more are closed without an answer."""

_RECV_SIZE = 64 * 1024
_LINGER_SECONDS = 2.0  # after an error answer: read and discard for at most this long
_LINGER_BYTES = 1024 * 1024  # ... and at most this much
_REFUSE_WAIT = 1.0  # an over-cap client's request head is awaited this long before the 503
_REFUSE_READ = 64 * 1024
_POLL = 0.05

_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_CODES = {
    400: "bad_request",
    411: "length_required",
    413: "body_too_large",
    431: "headers_too_large",
    500: "internal_error",
    501: "method_not_implemented",
    503: "overloaded",
    505: "http_version_not_supported",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """One HTTP response.

    ``Content-Type`` and ``Content-Length`` are written from ``content_type`` and
    ``body``; ``headers`` adds others (names must be tokens, values must not contain
    control characters).
    """

    status: int
    body: bytes = field(default=b"", repr=False)
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


App = Callable[[Request], Response]
ErrorPage = Callable[[int, str, str], Response]
"""Builds the answer to an error found by the server: ``(status, code, message)``.

``code`` is one of ``bad_request`` (400), ``length_required`` (411), ``body_too_large``
(413), ``headers_too_large`` (431), ``internal_error`` (500, the app raised),
``method_not_implemented`` (501), ``overloaded`` (503), ``http_version_not_supported``
(505). The server adds ``Connection: close`` (and ``Retry-After: 1`` to 503).
"""


class DropConnection(Exception):
    """Raised by an application to close the connection without any answer."""


def json_error_page(status: int, code: str, message: str) -> Response:
    """``{"error": code, "message": message}``: the local API's error body."""
    return Response(status=status, body=json.dumps({"error": code, "message": message}).encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """What one client may take.

    Attributes:
        max_body: largest request body in bytes (413 beyond).
        max_connections: open connections; more are answered 503 ``overloaded``.
        idle_timeout: seconds a connection may stay silent between requests.
        request_timeout: seconds from a request's first byte to its last (head and body);
            also the time a client has to take an answer.
    """

    max_body: int = 64 * 1024
    max_connections: int = 512
    idle_timeout: float = 30.0
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_body < 0 or self.max_connections < 1:
            raise ValueError("max_body must be >= 0 and max_connections >= 1")
        if not (self.idle_timeout > 0 and self.request_timeout > 0):
            raise ValueError("idle_timeout and request_timeout must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStats:
    """Counters since the server was made.

    Attributes:
        connections_accepted: connections served (not counting refused ones).
        connections_refused: connections over the cap (answered 503 or closed).
        connections_open: connections being served now.
        requests: requests passed to the application.
        protocol_errors: errors answered by the server itself (400, 411, 413, 431, 501,
            505), not counting 503 refusals.
        app_errors: requests whose application raised (answered 500).
        timeouts: connections cut because a request (or the taking of its answer)
            missed its deadline.
        early_closes: connections the client closed or reset in the middle of a request.
    """

    connections_accepted: int
    connections_refused: int
    connections_open: int
    requests: int
    protocol_errors: int
    app_errors: int
    timeouts: int
    early_closes: int


class _Conn:
    __slots__ = ("busy", "peer", "read_shut", "sock", "thread")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.busy = False
        self.read_shut = False
        self.thread: threading.Thread | None = None


_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


class _DateCache:
    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._text = email.utils.formatdate(second, usegmt=True)
            self._second = second
        return self._text


class HttpServer:
    """Serves an application on one listener until stopped.

    Args:
        listener: the bound socket (see :func:`attested._runtime.listen.open_listener`);
            the server owns it from now on and closes it when stopped.
        app: the application.
        limits: body, connection and time limits.
        error_page: builds answers to the errors the server finds itself.
        ssl_context: serve TLS (server side); the handshake runs in the connection's
            thread within ``request_timeout``.
        methods: methods passed to ``app``; others get 501.
        server_name: the ``Server`` header.
        name: thread name prefix.
        logger: where connection-level lines go (DEBUG) and app tracebacks (ERROR).
    """

    def __init__(
        self,
        listener: Listener,
        app: App,
        *,
        limits: HttpLimits | None = None,
        error_page: ErrorPage = json_error_page,
        ssl_context: ssl.SSLContext | None = None,
        methods: frozenset[str] = METHODS,
        server_name: str = "attested",
        name: str = "attested-http",
        logger: logging.Logger | None = None,
    ) -> None:
        self._listener = listener
        self._app = app
        self.limits = limits if limits is not None else HttpLimits()
        self._error_page = error_page
        self._ssl = ssl_context
        self._methods = methods
        self._server_header = server_name
        self._name = name
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._tcp = listener.sock.family in (socket.AF_INET, socket.AF_INET6)
        self._date = _DateCache()
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._threads: set[threading.Thread] = set()
        self._refusers = 0
        self._stopping = False
        self._accept_thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # wakes the accept loop
        self._counts = dict.fromkeys(ServerStats.__slots__, 0)

    @property
    def address(self) -> Address:
        """The bound address (with the real port when 0 was asked for)."""
        return self._listener.address

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return self._stopping

    def start(self) -> None:
        """Accept connections in a background thread."""
        if self._accept_thread is not None or self._stopping:
            raise RuntimeError("the server was already started")
        self._listener.sock.setblocking(False)
        self._wake = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(self._wake[0],), name=self._name, daemon=True
        )
        self._accept_thread.start()

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, close idle connections, let requests in flight finish.

        Args:
            deadline: seconds to wait for requests in flight; then every connection is
                shut down.

        Returns:
            ``True`` if every connection ended within the deadline. Idempotent.
        """
        end = time.monotonic() + max(0.0, deadline)
        with self._lock:
            self._stopping = True
        wake, self._wake = self._wake, None
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[1].send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        if wake is not None:
            for sock in wake:
                sock.close()
        self._listener.close()
        return self._drain(end)

    def _drain(self, end: float) -> bool:
        while True:
            with self._lock:
                idle = [c for c in self._conns if not c.busy and not c.read_shut]
                threads = [t for t in self._threads if t.is_alive()]
            for conn in idle:
                conn.read_shut = True
                _shutdown(conn.sock, socket.SHUT_RD)
            if not threads:
                return True
            if time.monotonic() >= end:
                break
            threads[0].join(min(_POLL, max(0.0, end - time.monotonic())))
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            _shutdown(conn.sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(1.0)
        return False

    def stats(self) -> ServerStats:
        """The counters now."""
        with self._lock:
            counts = dict(self._counts, connections_open=len(self._conns))
        return ServerStats(**counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _accept_loop(self, wake: socket.socket) -> None:
        listen = self._listener.sock
        with selectors.DefaultSelector() as selector:
            selector.register(listen, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is wake or self._stopping:
                        return
                    try:
                        sock, address = listen.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError as exc:  # EMFILE and friends: back off, keep serving
                        self._log.warning("cannot accept a connection: %s", why(exc))
                        time.sleep(_POLL)
                        continue
                    self._admit(sock, _peer(address))

    def _admit(self, sock: socket.socket, peer: str) -> None:
        conn = _Conn(sock, peer)
        with self._lock:
            if self._stopping:
                full, refuse = True, False
            elif len(self._conns) >= self.limits.max_connections:
                full = True
                refuse = self._refusers < MAX_REFUSERS
                self._counts["connections_refused"] += 1
                if refuse:
                    self._refusers += 1
            else:
                full = refuse = False
                self._conns.add(conn)
                self._counts["connections_accepted"] += 1
        if full and not refuse:
            _close(sock)
            return
        target = self._refuse if full else self._serve
        thread = threading.Thread(
            target=target, args=(conn,), name=f"{self._name}-conn", daemon=True
        )
        conn.thread = thread
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread: give the slot back
            with self._lock:
                self._threads.discard(thread)
                self._conns.discard(conn)
                if full:
                    self._refusers -= 1
            _close(sock)

    def _serve(self, conn: _Conn) -> None:
        try:
            why = self._serve_connection(conn)
            if why:
                self._log.debug("connection from %s: %s", conn.peer, why)
        except Exception:  # a bug here must not kill the server or print to stderr
            self._log.exception("internal error in the HTTP server (connection %s)", conn.peer)
        finally:
            _close(conn.sock)
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def _serve_connection(self, conn: _Conn) -> str:
        """Serve requests until the connection ends; returns why, if abnormal."""
        limits = self.limits
        sock = conn.sock
        if self._tcp:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            failed = self._handshake(conn, time.monotonic() + limits.request_timeout)
            if failed:
                return failed
            sock = conn.sock
        wire = Wire(sock)
        while True:
            conn.busy = False
            if self._stopping:
                return ""
            if not wire.buf:
                try:
                    if not wire.fill(time.monotonic() + limits.idle_timeout):
                        return ""  # closed between requests: the normal end
                except Timeout:
                    return ""  # silent for idle_timeout: the normal end too
                except Gone as gone:
                    self._count("early_closes")
                    return f"ended between requests ({gone})"
            conn.busy = True
            deadline = time.monotonic() + limits.request_timeout
            try:
                keep = self._one_request(conn, wire, deadline)
            except Timeout:
                self._count("timeouts")
                return (
                    f"cut off: a request, or the taking of its answer, took more than "
                    f"{limits.request_timeout:g} s"
                )
            except Gone as gone:
                self._count("early_closes")
                return f"ended early ({gone})"
            except Refused as refused:
                self._count("protocol_errors")
                self._answer_error(wire, refused.status, refused.message)
                return f"answered {refused.status}: {refused.message}"
            if not keep:
                return ""

    def _handshake(self, conn: _Conn, deadline: float) -> str:
        """Wrap ``conn.sock`` in TLS and shake hands; what went wrong, or ``""``."""
        assert self._ssl is not None  # noqa: S101 - only called with a context
        try:
            # The TLS socket replaces the plain one at once, so stop() can cut a handshake.
            conn.sock = self._ssl.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            return f"TLS setup failed: {exc}"
        try:
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            conn.sock.do_handshake()
        except TimeoutError:
            return "TLS handshake timed out"
        except (OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc
            return f"TLS handshake failed: {reason}"
        return ""

    def _one_request(self, conn: _Conn, wire: Wire, deadline: float) -> bool:
        """Read, answer; whether the connection stays open. Raises to end it."""
        request, closing = read_request(
            wire, deadline, peer=conn.peer, methods=self._methods, max_body=self.limits.max_body
        )
        method = request.method
        self._count("requests")
        head_only = method == "HEAD"
        try:
            response = self._app(request)
            closing = closing or self._stopping
            data = self._serialize(response, head_only=head_only, close=closing)
        except DropConnection:
            return False
        except Exception:  # the app maps the errors it knows; anything else is a bug
            self._count("app_errors")
            self._log.exception("unhandled error in %s %s", method, request.path.split("?")[0])
            closing = closing or self._stopping
            data = self._serialize(
                self._error_page(500, _CODES[500], "internal error; see the server log"),
                head_only=head_only,
                close=closing,
            )
        wire.send(data, time.monotonic() + self.limits.request_timeout)
        return not closing

    def _serialize(self, response: Response, *, head_only: bool, close: bool) -> bytes:
        status = response.status
        if not 200 <= status <= 999:
            raise ValueError(f"status {status} cannot be sent")
        lines = [
            f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}",
            f"Date: {self._date.now()}",
            f"Server: {self._server_header}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        for name, value in response.headers.items():
            if not TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                raise ValueError(f"header {name[:40]!r} cannot be sent")
            lines.append(f"{name}: {value}")
        if not _FIELD_VALUE.fullmatch(response.content_type):
            raise ValueError("the content type cannot be sent")
        if close:
            lines.append("Connection: close")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        return head if head_only else head + response.body

    def _error_bytes(self, status: int, message: str) -> bytes:
        code = _CODES.get(status, "bad_request")
        try:
            response = self._error_page(status, code, message)
            if status == 503:
                response = replace(response, headers={**response.headers, "Retry-After": "1"})
            return self._serialize(response, head_only=False, close=True)
        except Exception:  # a broken error page must still give an answer
            self._log.exception("the error page failed for %d %s", status, code)
            return self._serialize(
                json_error_page(status, code, message), head_only=False, close=True
            )

    def _answer_error(self, wire: Wire, status: int, message: str) -> None:
        """Send an error answer the client can read, then close gracefully."""
        try:
            wire.send(
                self._error_bytes(status, message),
                time.monotonic() + min(self.limits.request_timeout, _LINGER_SECONDS),
            )
        except (Timeout, Gone):
            return
        _linger(wire.sock)

    def _refuse(self, conn: _Conn) -> None:
        """Answer 503 to a connection over the cap, readably, within bounded time."""
        sock = conn.sock
        try:
            deadline = time.monotonic() + _REFUSE_WAIT
            if self._ssl is not None:
                if self._handshake(conn, deadline + _REFUSE_WAIT):
                    return
                sock = conn.sock
            wire = Wire(sock)
            with contextlib.suppress(Timeout, Gone):
                while b"\r\n\r\n" not in wire.buf and len(wire.buf) < _REFUSE_READ:
                    if not wire.fill(deadline):
                        break
            wire.buf.clear()
            self._log.debug("refusing a connection from %s: too many connections", conn.peer)
            self._answer_error(wire, 503, "too many connections; retry later")
        except Exception:  # a bug here must not print to stderr
            self._log.exception("internal error while refusing a connection")
        finally:
            _close(conn.sock)
            with self._lock:
                self._refusers -= 1
                self._threads.discard(threading.current_thread())


def _linger(sock: socket.socket) -> None:
    """Shut down writes, then read and discard until the client closes (bounded)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)  # the plain socket's: keep TLS intact
    except OSError:
        return
    end = time.monotonic() + _LINGER_SECONDS
    taken = 0
    while taken < _LINGER_BYTES:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        try:
            sock.settimeout(remaining)
            data = sock.recv(_RECV_SIZE)
        except (OSError, ValueError):
            return
        if not data:
            return
        taken += len(data)


def _shutdown(sock: socket.socket, how: int) -> None:
    # The plain socket's shutdown: SSLSocket.shutdown would drop the TLS layer under an
    # answer that is still being written.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _peer(address: object) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "local"
