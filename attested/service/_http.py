"""The enclave's local API on the shared HTTP/1.1 server (:mod:`attested._runtime.http`).

One listener per address family (Unix socket with its mode set at bind, loopback TCP,
vsock), JSON error bodies ``{"error": CODE, "message": TEXT}``, and the limits of
``[limits]`` in the configuration. Framing, caps, deadlines and graceful refusals are the
runtime server's; see ``docs/adr/0070-runtime-http-server.md``.

The application is a plain callable ``Request -> Response`` (see :mod:`._app`), so the
routing and validation are tested without sockets.
"""

from __future__ import annotations

import http.client
import logging
import socket

from attested._runtime.http import App, HttpLimits, Request, Response, ServerStats, json_error_page
from attested._runtime.http import HttpServer as _RuntimeServer
from attested._runtime.listen import open_listener
from attested.net import Address

__all__ = ["App", "HttpServer", "Request", "Response", "UnixHTTPConnection"]

log = logging.getLogger(__name__)

_MAX_REQUEST_TIMEOUT = 10.0


class HttpServer:
    """Serves an application on one address until stopped.

    Args:
        address: where to listen (``tcp:``, ``unix:`` or ``vsock:``).
        app: the application.
        max_body: largest accepted request body in bytes.
        idle_timeout: seconds a connection may stay silent between requests.
        max_connections: open connections beyond this get 503 ``overloaded``.
        socket_mode: file mode of a Unix socket.
        request_timeout: seconds from a request's first byte to its last; by default
            ``min(idle_timeout, 10)``.

    Raises:
        OSError: the address cannot be bound (in use, not a socket, no permission).
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
        request_timeout: float | None = None,
    ) -> None:
        self.address = address
        limits = HttpLimits(
            max_body=max_body,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            request_timeout=(
                min(idle_timeout, _MAX_REQUEST_TIMEOUT)
                if request_timeout is None
                else request_timeout
            ),
        )
        listener = open_listener(address, socket_mode=socket_mode)
        self._server = _RuntimeServer(
            listener,
            app,
            limits=limits,
            error_page=json_error_page,
            server_name="attested",
            name=f"attested-http-{address.kind}",
            logger=log,
        )

    @property
    def bound(self) -> Address:
        """The address actually bound (with the real port when 0 was asked for)."""
        return self._server.address

    @property
    def limits(self) -> HttpLimits:
        """The limits in force."""
        return self._server.limits

    def start(self) -> None:
        """Serve in a background thread."""
        self._server.start()

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, finish in-flight requests, close the listener.

        Returns:
            ``True`` if every connection ended within ``deadline`` seconds.
        """
        return self._server.stop(deadline)

    def stats(self) -> ServerStats:
        """Connection and request counters."""
        return self._server.stats()

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
