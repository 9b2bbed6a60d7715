"""The HTTP edge: KMS's JSON protocol on the shared HTTP/1.1 server.

The wire is :mod:`attested._runtime.http`'s; this module adds KMS's side:
``X-Amz-Target``, fault injection, SigV4, the counters and KMS-style error bodies. See
``docs/adr/0050-kms-emulator-server.md`` and ``docs/adr/0070-runtime-http-server.md``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import types
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from attested._runtime.http import DropConnection, HttpLimits, HttpServer, Request, Response
from attested._runtime.lifecycle import Scoped
from attested._runtime.listen import open_listener
from attested.emulator._config import DEV_ACCESS_KEY_ID, EmulatorConfig
from attested.emulator._faults import Fault, FaultInjector
from attested.emulator._service import KmsService
from attested.emulator._sigv4 import Caller, verify_sigv4
from attested.emulator._store import KeyStore
from attested.errors import ConfigurationError
from attested.kms import _wire
from attested.kms._wire import ApiError, encode_error
from attested.net import Address, is_loopback

__all__ = ["EmulatorStats", "KmsEmulator"]

logger = logging.getLogger(__name__)


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


_REQUEST_TIMEOUT = 10.0
_LOGGED_MESSAGE = 300  # characters of an error's message in its log line
_STOP_DEADLINE = 10.0


class KmsEmulator(Scoped):
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
        self._server: HttpServer | None = None
        self._store: KeyStore | None = None
        self._service: KmsService | None = None
        self._identities = types.MappingProxyType(dict(config.identities))
        self._anyone = config.anyone()
        self._accepted: set[str] = set()  # unknown access key ids taken for the dev identity

    def start(self) -> Self:
        """Open the state, bind the socket and start serving.

        Raises:
            ConfigurationError: the state file or the TLS files cannot be used.
            OSError: the address cannot be bound (``strerror`` names it).
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
            listener = open_listener(Address(kind="tcp", host=config.host, port=config.port))
        except OSError as exc:
            store.close()
            where = f"{config.host}:{config.port}"
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
        except BaseException:
            store.close()
            raise
        self._server = HttpServer(
            listener,
            self._serve,
            limits=HttpLimits(
                max_body=config.max_body_size,
                max_connections=config.max_connections,
                idle_timeout=config.idle_timeout,
                request_timeout=min(config.idle_timeout, _REQUEST_TIMEOUT),
            ),
            error_page=self._http_error,
            ssl_context=context,
            methods=frozenset({"POST"}),
            server_name="attested-kms-emulator",
            name="kms-emulator",
            logger=logger,
        )
        self._store = store
        self._stopping.clear()
        self._server.start()
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

    def stop(self, deadline: float = _STOP_DEADLINE) -> bool:
        """Stop serving: answers in flight get ``deadline`` seconds, then connections close.

        Idempotent, and safe before :meth:`start`.

        Returns:
            ``True`` if every connection ended in time.
        """
        server = self._server
        if server is None:
            return True
        self._stopping.set()  # injected latency ends at once
        clean = server.stop(deadline)
        if self._store is not None:
            self._store.close()
        self._server = self._store = None
        logger.info("KMS emulator stopped")
        return clean

    @property
    def running(self) -> bool:
        """Whether the emulator is serving (started and not stopping)."""
        server = self._server
        return server is not None and not server.stopping

    @property
    def listeners(self) -> Mapping[str, Address]:
        """``{"kms": ADDRESS}`` (``tcp:HOST:PORT``) while started; empty otherwise."""
        server = self._server
        return types.MappingProxyType({} if server is None else {"kms": server.address})

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port.

        Raises:
            RuntimeError: not started.
        """
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        bound = self._server.address
        return str(bound.host), int(bound.port or 0)

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

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._answers[outcome] += 1

    def _serve(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        with self._lock:
            self._requests += 1
        if "content-length" not in request.headers:
            return self._refuse(
                411, "SerializationException", "Content-Length is required", request_id
            )
        body = request.body
        target = request.headers.get("x-amz-target", "")
        operation = _wire.operation_of(target)
        decision = self._faults.decide(operation)
        if decision.delay > 0:
            self._stopping.wait(decision.delay)
        if decision.fault is Fault.DROP:
            logger.info("fault injection: dropping the connection (%s)", operation or "?")
            self._count("dropped")
            raise DropConnection
        caller: Caller | None = None
        note = ""
        try:
            if decision.fault is Fault.THROTTLE:
                raise ApiError("ThrottlingException", "Rate exceeded")
            if decision.fault is Fault.ERROR:
                raise ApiError(
                    "KMSInternalException",
                    "Internal error injected by the emulator's fault settings",
                )
            caller = self._authenticate(request, operation, body)
            answer = self.service.handle(operation, body, caller, self.config.clock())
            status = 200
            outcome = "OK"
        except ApiError as exc:
            status, answer, outcome = exc.status, encode_error(exc), exc.code
            note = exc.note or str(exc)[:_LOGGED_MESSAGE]  # KMS's messages echo no secret
            if exc.code == "UnrecognizedClientException":
                note = f"{note}: {self._how_to_authenticate()}"
        except Exception:  # a bug: answer like KMS would, keep serving, log it
            logger.exception("internal error while serving %s", operation or "?")
            error = ApiError("KMSInternalException", "Internal error in the KMS emulator")
            status, answer, outcome = error.status, encode_error(error), error.code
        self._count(outcome)
        logger.info(
            "%s %s -> %s %.1f ms%s",
            caller.arn if caller is not None else "-",
            operation or "?",
            outcome,
            (time.perf_counter() - started) * 1000,
            f" ({note})" if note else "",
        )
        return _wire.answer(status, answer, request_id)

    def _how_to_authenticate(self) -> str:
        """What to do about an unrecognized access key, for the log line."""
        known = ", ".join(sorted(self._identities)[:5])
        return (
            f"the emulator knows {known}{', ...' if len(self._identities) > 5 else ''}; "
            f"use one of them (the development identity: AWS_ACCESS_KEY_ID={DEV_ACCESS_KEY_ID}, "
            "AWS_SECRET_ACCESS_KEY as 'attested docs emulator' shows), add yours to an "
            "--identities file, or run with --accept-any-credentials (development only)"
        )

    def _authenticate(self, request: Request, operation: str, body: bytes) -> Caller:
        _wire.check_envelope(request.path, operation, request.headers.get("content-type", ""))
        headers: dict[str, str] = {}
        for name, value in request.header_list:
            lower = name.lower()
            if lower in headers:
                raise ApiError("IncompleteSignatureException", f"Header {lower} appears twice")
            headers[lower] = value
        scheme = "https" if self.config.tls is not None else "http"
        caller = verify_sigv4(
            method="POST",
            url=f"{scheme}://{headers.get('host', '')}{request.path}",
            headers=headers,
            body=body,
            identities=self._identities,
            region=self.config.region,
            now=self.config.clock(),
            anyone=self._anyone,
        )
        if caller.access_key_id not in self._identities:
            with self._lock:
                first = caller.access_key_id not in self._accepted
                self._accepted.add(caller.access_key_id)
            if first:
                logger.warning(
                    "--accept-any-credentials: access key id %r is taken to be %s, with no "
                    "signature checked",
                    caller.access_key_id[:40],
                    caller.arn,
                )
        return caller

    def _refuse(self, status: int, code: str, message: str, request_id: str) -> Response:
        self._count(code)
        return _wire.answer(status, encode_error(ApiError(code, message)), request_id)

    def _http_error(self, status: int, code: str, message: str) -> Response:
        """Errors the HTTP layer finds (framing, caps, overload), counted and KMS-shaped."""
        with self._lock:
            self._requests += 1
        return self._refuse(status, _wire.http_error_code(status), message, str(uuid.uuid4()))
