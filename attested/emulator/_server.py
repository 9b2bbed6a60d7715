"""The HTTP edge: a threaded HTTP/1.1 server speaking KMS's JSON protocol.

Built on the standard library's ``ThreadingHTTPServer`` with what it needs to perform and
to be safe on a developer machine: HTTP/1.1 keep-alive with ``TCP_NODELAY`` (without it,
Nagle's algorithm against delayed ACKs stalls every keep-alive request by about 40 ms),
``Content-Length`` required and capped, idle and read timeouts, a cap on open
connections, optional TLS (handshake in the connection's own thread), and a stop that
lets requests in flight finish, closes idle keep-alive connections and joins every
thread. See ``docs/adr/0050-kms-emulator-server.md``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import types
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from attested.emulator._config import EmulatorConfig, is_loopback
from attested.emulator._faults import Fault, FaultInjector
from attested.emulator._protocol import ApiError, encode_error
from attested.emulator._service import KmsService
from attested.emulator._sigv4 import Caller, verify_sigv4
from attested.emulator._store import KeyStore
from attested.errors import ConfigurationError

__all__ = ["EmulatorStats", "KmsEmulator"]

logger = logging.getLogger(__name__)

_TARGET_PREFIX = "TrentService."
_CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorStats:
    """Counters since the emulator started.

    Attributes:
        requests: HTTP requests received.
        answers: answers by outcome: ``"OK"`` or the error code.
        faults: injected faults by kind (``drop``, ``throttle``, ``error``, ``latency``).
    """

    requests: int
    answers: Mapping[str, int]
    faults: Mapping[str, int]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "attested-kms-emulator"
    disable_nagle_algorithm = True
    server: _HttpServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        self.server.emulator._serve(self)

    def answer(self, status: int, body: bytes, *, request_id: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        emulator: KmsEmulator,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        idle_timeout: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
        if full:
            logger.warning("refusing a connection: %d already open", self.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def stop_reading(self) -> None:
        """Make every connection's next read see end-of-file; answers in flight finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            # The plain socket's shutdown: SSLSocket.shutdown would drop the TLS layer
            # under a response that is still being written.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RD)


class KmsEmulator:
    """A local KMS that enforces attestation, served over real HTTP on a background thread.

    >>> with KmsEmulator(EmulatorConfig(trust_root=root)) as emu:        # doctest: +SKIP
    ...     kms = boto3.client("kms", endpoint_url=emu.endpoint_url, ...)

    Unmodified boto3 talks to it with ``endpoint_url``; requests are authenticated with
    SigV4 against :attr:`EmulatorConfig.identities`. **Development only**: see
    ``docs/emulator.md`` for what it enforces and what it does not emulate.

    Args:
        config: the configuration.

    Raises:
        ConfigurationError: the host is not loopback and ``allow_remote`` is not set, or
            the identities belong to several accounts and no account is given.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        if not isinstance(config, EmulatorConfig):
            raise TypeError("config must be an EmulatorConfig")
        if not is_loopback(config.host) and not config.allow_remote:
            raise ConfigurationError(
                f"refusing to listen on {config.host}, which is not a loopback address: the "
                "emulator is a development tool; set allow_remote (--allow-remote) to do it "
                "anyway"
            )
        self.config = config
        self.account_id = config.resolved_account()
        self._faults = FaultInjector(config.faults)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests = 0
        self._answers: Counter[str] = Counter()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._store: KeyStore | None = None
        self._service: KmsService | None = None
        self._identities = types.MappingProxyType(dict(config.identities))

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Open the state, bind the socket and start serving.

        Raises:
            ConfigurationError: the state file or the TLS files cannot be used.
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        config = self.config
        context = self._ssl_context()
        store = KeyStore(config.state_path, region=config.region, account_id=self.account_id)
        try:
            self._service = KmsService(
                region=config.region,
                account_id=self.account_id,
                trust_root=config.trust_root,
                store=store,
                secure_transport=context is not None,
                partition=config.partition,
            )
            self._server = _HttpServer(
                (config.host, config.port),
                emulator=self,
                ssl_context=context,
                max_connections=config.max_connections,
                idle_timeout=config.idle_timeout,
            )
        except BaseException:
            store.close()
            raise
        self._store = store
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kms-emulator",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "KMS emulator listening on %s (region %s, account %s, trust root %s)",
            self.endpoint_url,
            config.region,
            self.account_id,
            config.trust_root.name,
        )
        return self

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls is None:
            return None
        cert, key = self.config.tls
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the TLS certificate and key: {exc}") from exc
        return context

    def stop(self) -> None:
        """Stop serving: finish answers in flight, close connections, join threads.

        Idempotent.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.stop_reading()
        server.server_close()
        if thread is not None:
            thread.join()
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = None
        logger.info("KMS emulator stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- introspection ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port.

        Raises:
            RuntimeError: not started.
        """
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT`` (``https`` with TLS), for boto3's ``endpoint_url``."""
        host, port = self.address
        scheme = "https" if self.config.tls is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    @property
    def service(self) -> KmsService:
        """The KMS service behind the HTTP layer (for in-process tools and tests).

        Raises:
            RuntimeError: not started.
        """
        if self._service is None:
            raise RuntimeError("the emulator is not running")
        return self._service

    @property
    def request_count(self) -> int:
        """HTTP requests received since start."""
        with self._lock:
            return self._requests

    def stats(self) -> EmulatorStats:
        """Counters: requests, answers by outcome, injected faults."""
        with self._lock:
            return EmulatorStats(
                requests=self._requests,
                answers=types.MappingProxyType(dict(self._answers)),
                faults=self._faults.counts,
            )

    # --- one request -----------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._answers[outcome] += 1

    def _serve(self, handler: _Handler) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        with self._lock:
            self._requests += 1
        if handler.headers.get("Transfer-Encoding") is not None:
            self._refuse(
                handler, 411, "SerializationException", "Content-Length is required", request_id
            )
            return
        try:
            length = int(handler.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(
                handler, 411, "SerializationException", "Content-Length is required", request_id
            )
            return
        if length > self.config.max_body_size:
            self._refuse(
                handler,
                413,
                "SerializationException",
                f"The request body is larger than {self.config.max_body_size} bytes",
                request_id,
            )
            return
        body = handler.rfile.read(length)
        if len(body) != length:
            handler.close_connection = True
            return
        target = handler.headers.get("X-Amz-Target", "")
        operation = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
        decision = self._faults.decide(operation)
        if decision.delay > 0:
            self._stopping.wait(decision.delay)
        if decision.fault is Fault.DROP:
            logger.info("fault injection: dropping the connection (%s)", operation or "?")
            self._count("dropped")
            handler.close_connection = True
            return
        caller: Caller | None = None
        try:
            if decision.fault is Fault.THROTTLE:
                raise ApiError("ThrottlingException", "Rate exceeded")
            if decision.fault is Fault.ERROR:
                raise ApiError(
                    "KMSInternalException",
                    "Internal error injected by the emulator's fault settings",
                )
            caller, answer = self._process(handler, operation, body)
            status = 200
            outcome = "OK"
        except ApiError as exc:
            status, answer, outcome = exc.status, encode_error(exc), exc.code
        except Exception:  # a bug: answer like KMS would, keep serving, log it
            logger.exception("internal error while serving %s", operation or "?")
            error = ApiError("KMSInternalException", "Internal error in the KMS emulator")
            status, answer, outcome = error.status, encode_error(error), error.code
        self._count(outcome)
        handler.answer(status, answer, request_id=request_id)
        logger.info(
            "%s %s -> %s %.1f ms",
            caller.arn if caller is not None else "-",
            operation or "?",
            outcome,
            (time.perf_counter() - started) * 1000,
        )

    def _process(self, handler: _Handler, operation: str, body: bytes) -> tuple[Caller, bytes]:
        if handler.path != "/" or not operation:
            raise ApiError(
                "UnknownOperationException",
                "Send POST / with X-Amz-Target: TrentService.<Operation>",
            )
        content_type = handler.headers.get("Content-Type", "")
        if not content_type.startswith("application/x-amz-json-1."):
            raise ApiError("UnknownOperationException", f"Content-Type must be {_CONTENT_TYPE}")
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            lower = name.lower()
            if lower in headers:
                raise ApiError("IncompleteSignatureException", f"Header {lower} appears twice")
            headers[lower] = value
        now = self.config.clock()
        scheme = "https" if self.config.tls is not None else "http"
        caller = verify_sigv4(
            method="POST",
            url=f"{scheme}://{headers.get('host', '')}{handler.path}",
            headers=headers,
            body=body,
            identities=self._identities,
            region=self.config.region,
            now=now,
        )
        return caller, self.service.handle(operation, body, caller, now)

    def _refuse(
        self, handler: _Handler, status: int, code: str, message: str, request_id: str
    ) -> None:
        self._count(code)
        handler.answer(
            status, encode_error(ApiError(code, message)), request_id=request_id, close=True
        )
