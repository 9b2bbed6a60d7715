"""A small threaded HTTP/1.1 server for the enclave's local API.

Built on the standard library's ``http.server`` (no dependency to ship into the enclave
image), with what its defaults lack for a local API under load:

* HTTP/1.1 keep-alive and ``TCP_NODELAY``: with the defaults a keep-alive client stalls
  about 40 ms per request (Nagle against delayed ACKs);
* one listener type per address family: TCP, Unix domain socket (mode set at bind), vsock;
* a body size cap checked against Content-Length before reading (413), no chunked bodies,
  a header size cap, an idle timeout per connection, and a connection cap that answers
  503 instead of queueing silently;
* graceful shutdown: stop accepting, let in-flight requests finish, close idle
  keep-alive connections, wait up to a deadline.

The application is a plain callable ``Request -> Response`` (see :mod:`.app`), so the
routing and validation are tested without sockets.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attested.net import Address

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger(__name__)

_MAX_HEADER_LINE = 8192
_MAX_HEADERS = 64
# Machine-readable codes for errors the HTTP layer answers by itself.
_PROTOCOL_ERRORS = {
    400: "bad_request",
    431: "headers_too_large",
    501: "method_not_implemented",
    505: "http_version_not_supported",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request as the application sees it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    peer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """One HTTP response."""

    status: int
    body: bytes = field(default=b"", repr=False)
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


App = Callable[[Request], Response]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one send per response; handle_one_request flushes it
    server_version = "attested"
    sys_version = ""
    server: _ServerMixin

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def address_string(self) -> str:
        peer: object = self.client_address
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return "local"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        self.server.mark(self.connection, busy=False)
        try:
            super().handle_one_request()
        except TimeoutError:
            self.close_connection = True
        finally:
            self.server.mark(self.connection, busy=False)
        if self.server.stopping:
            self.close_connection = True

    def parse_request(self) -> bool:
        self.server.mark(self.connection, busy=True)
        if len(getattr(self, "raw_requestline", b"")) > _MAX_HEADER_LINE:
            self.send_error(431, "Request line too long")
            return False
        ok = super().parse_request()
        if ok and len(self.headers) > _MAX_HEADERS:
            self.send_error(431, "Too many headers")
            return False
        return ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found before the app runs, as JSON like every other answer."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # answer with a status line even to 0.9-looking input
        if getattr(self, "command", None) is None:
            self.command = ""
        if not hasattr(self, "requestline"):  # refused before parsing: the access log needs it
            self.requestline = "(refused request line)"
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._reply(_error(code, _PROTOCOL_ERRORS.get(code, "bad_request"), message or phrase))

    def _dispatch(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(
                _error(
                    411, "length_required", "send a Content-Length; chunked bodies are not accepted"
                )
            )
            self.close_connection = True
            return
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(_error(400, "bad_request", "Content-Length is not a valid number"))
            self.close_connection = True
            return
        if length > self.server.max_body:
            self._reply(
                _error(
                    413, "body_too_large", f"the body may be at most {self.server.max_body} bytes"
                )
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            return
        request = Request(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            peer=self.address_string(),
        )
        try:
            response = self.server.app(request)
        except Exception:  # the app maps known errors; anything else is a bug, not a crash
            log.exception("unhandled error in %s %s", self.command, self.path.split("?")[0])
            response = _error(500, "internal_error", "internal error; see the service log")
        self._reply(response)

    def _reply(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


def _error(status: int, code: str, message: str) -> Response:
    return Response(status=status, body=json.dumps({"error": code, "message": message}).encode())


class _ServerMixin(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    block_on_close = False
    app: App
    max_body: int
    idle_timeout: float
    max_connections: int

    def init_tracking(self) -> None:
        self.stopping = False
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, bool] = {}  # socket -> busy
        self._workers: set[threading.Thread] = set()

    def mark(self, sock: socket.socket, *, busy: bool) -> None:
        with self._lock:
            if sock in self._connections:
                self._connections[sock] = busy

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections[request] = False
        if full:
            self._refuse(request)
            return
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="attested-http"
        )
        with self._lock:
            self._workers.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.pop(request, None)
                self._workers.discard(threading.current_thread())

    def _refuse(self, request: socket.socket) -> None:
        body = b'{"error": "overloaded", "message": "too many connections; retry later"}'
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(head + body)
        self.shutdown_request(request)

    def drain(self, deadline: float) -> bool:
        """Close idle keep-alive connections and wait for busy ones; True if all ended."""
        self.stopping = True
        while True:
            with self._lock:
                idle = [s for s, busy in self._connections.items() if not busy]
                threads = list(self._workers)
            for sock in idle:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
            if not threads:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            threads[0].join(min(remaining, 0.05))


class _TcpServer(_ServerMixin, http.server.HTTPServer):
    allow_reuse_address = True
    request_queue_size = 256

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _TcpServer6(_TcpServer):
    address_family = socket.AF_INET6


class _UnixServer(_ServerMixin, socketserver.UnixStreamServer):
    request_queue_size = 256
    socket_mode = 0o660

    def server_bind(self) -> None:
        path = str(self.server_address)
        _remove_stale_socket(path)
        old = os.umask(0o777 ^ self.socket_mode)
        try:
            socketserver.UnixStreamServer.server_bind(self)
        finally:
            os.umask(old)
        os.chmod(path, self.socket_mode)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse if a live server owns it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path} is in use by another running server")


class _VsockServer(_ServerMixin, socketserver.TCPServer):
    request_queue_size = 256

    def __init__(self, address: tuple[int, int], handler: type[_Handler]) -> None:
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            raise OSError("AF_VSOCK is not available on this platform")
        self.address_family = socket.AddressFamily(family)
        super().__init__(address, handler)  # type: ignore[arg-type]


class HttpServer:
    """Serves an application on one address until stopped.

    Args:
        address: where to listen (``tcp:``, ``unix:`` or ``vsock:``).
        app: the application.
        max_body: largest accepted request body in bytes.
        idle_timeout: seconds a connection may stay silent.
        max_connections: open connections beyond this get 503 at once.
        socket_mode: file mode of a Unix socket.
    """

    def __init__(
        self,
        address: Address,
        app: App,
        *,
        max_body: int = 64 * 1024,
        idle_timeout: float = 30.0,
        max_connections: int = 512,
        socket_mode: int = 0o660,
    ) -> None:
        self.address = address
        server: _ServerMixin
        if address.kind == "unix":
            unix = _UnixServer.__new__(_UnixServer)
            unix.socket_mode = socket_mode
            _UnixServer.__init__(unix, address.sockaddr(), _Handler)  # type: ignore[arg-type]
            server = unix
        elif address.kind == "vsock":
            server = _VsockServer(address.sockaddr(), _Handler)  # type: ignore[arg-type]
        else:
            cls = _TcpServer6 if address.family == socket.AF_INET6 else _TcpServer
            server = cls(address.sockaddr(), _Handler)  # type: ignore[arg-type]
        server.app = app
        server.max_body = max_body
        server.idle_timeout = idle_timeout
        server.max_connections = max_connections
        server.init_tracking()
        self._server = server
        self._thread: threading.Thread | None = None

    @property
    def bound(self) -> Address:
        """The address actually bound (with the real port when 0 was asked for)."""
        sockaddr: Any = self._server.server_address
        if self.address.kind == "tcp":
            return Address(kind="tcp", host=self.address.host, port=int(sockaddr[1]))
        if self.address.kind == "vsock":
            return Address(kind="vsock", cid=self.address.cid, port=int(sockaddr[1]))
        return self.address

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name=f"attested-http-{self.address.kind}",
        )
        self._thread.start()

    def stop(self, *, deadline: float = 10.0) -> bool:
        """Stop accepting, finish in-flight requests, close the listener.

        Returns:
            ``True`` if every connection ended within ``deadline`` seconds.
        """
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        clean = self._server.drain(time.monotonic() + deadline)
        self._server.server_close()
        if self.address.kind == "unix" and self.address.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)
        return clean

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix domain socket: a client of the local API (demo, tests)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        """Connect to the socket file instead of a host and port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock
