"""The enclave's local API on the shared HTTP/1.1 server (:mod:`attested._runtime.http`).

One server per listener (Unix socket with its mode set at bind, loopback TCP, vsock), with
the limits of ``[limits]`` in the configuration; the wire is the runtime server's (see
``docs/adr/0070-runtime-http-server.md``), the application :mod:`._app`'s.
"""

from __future__ import annotations

import http.client
import logging
import socket

from attested._runtime.http import App, HttpLimits, Request, Response
from attested._runtime.http import HttpServer as _RuntimeServer
from attested._runtime.listen import open_listener
from attested.net import Address

__all__ = ["App", "HttpServer", "Request", "Response", "UnixHTTPConnection"]

log = logging.getLogger(__name__)

_MAX_REQUEST_TIMEOUT = 10.0


class HttpServer(_RuntimeServer):
    """The runtime HTTP server on one address, with the local API's defaults.

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
        if request_timeout is None:
            request_timeout = min(idle_timeout, _MAX_REQUEST_TIMEOUT)
        limits = HttpLimits(
            max_body=max_body,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            request_timeout=request_timeout,
        )
        super().__init__(
            open_listener(address, socket_mode=socket_mode),
            app,
            limits=limits,
            name=f"attested-http-{address.kind}",
            logger=log,
        )


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
