"""The enclave side: a TLS-terminating ingress whose certificate carries its attestation.

:class:`AttestedTlsIngress` is a part (:class:`attested._runtime.lifecycle.Lifecycle`):

* At start, and again before the NSM's signing certificate expires, it makes a new
  P-256 key in memory, asks the NSM for a document whose ``user_data`` binds that key
  (:func:`~attested.tls._binding.key_binding`), and issues a self-signed certificate for
  the key carrying the document in an extension. The key is loaded into OpenSSL through
  an anonymous memory file (``memfd``), encrypted with a one-time password: it is never
  written to a disk and never leaves the process.
* It listens (:func:`attested._runtime.listen.open_listener`: TCP on a laptop, vsock in
  an enclave), terminates TLS, and relays the plaintext to the app on loopback (or a
  Unix socket), dialled by the relay's :class:`~attested.relay._handlers.Dialer` under
  :class:`~attested.relay.RelayOptions`' caps and timeouts. The app needs no change.
* A connection whose first request is ``GET /.well-known/attested-tls/attestation?nonce=HEX``
  gets a fresh document with that nonce and the same binding (for clients that want
  proof of freshness); the rest of the connection goes to the app as usual.

Renewal swaps the server context for new handshakes only (through the SNI callback);
connections made earlier keep their certificate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attested._runtime.lifecycle import Scoped
from attested._runtime.listen import Listener, open_listener
from attested.document import parse_attestation
from attested.errors import MalformedError, RelayUnavailable
from attested.net import Address
from attested.provider import AttestationProvider
from attested.relay import RelayOptions, SystemResolver
from attested.relay._handlers import Dialer, Refused, why
from attested.tls._binding import (
    EVIDENCE_OID,
    MAX_REQUEST_HEAD,
    WELL_KNOWN_PATH,
    encode_evidence,
    key_binding,
    parse_fresh_request,
)

__all__ = ["AttestedTlsIngress", "TlsCredentials", "issue_credentials"]

log = logging.getLogger("attested.tls")

RENEW_EVERY = timedelta(hours=1)
RENEW_BEFORE_EXPIRY = timedelta(minutes=30)
_MIN_RENEW_DELAY = 60.0
_RETRY_DELAY = 30.0
_BACKDATE = timedelta(minutes=5)
_CHUNK = 64 * 1024
_FRESH_AT_ONCE = 4
_PROBE = b"GET " + WELL_KNOWN_PATH.encode()


@dataclass(frozen=True, eq=False, kw_only=True)
class TlsCredentials:
    """One generation of the ingress's TLS identity. The private key stays inside ``context``.

    Attributes:
        certificate: the self-signed certificate (DER), carrying ``document``.
        document: the attestation document binding the certificate's key.
        binding: the ``user_data`` of ``document`` (and of every fresh document).
        not_after: when ``document``'s signing certificate expires.
        context: the server context holding the key and the certificate.
    """

    certificate: bytes
    document: bytes
    binding: bytes
    not_after: datetime
    context: ssl.SSLContext

    def __repr__(self) -> str:
        return f"TlsCredentials(binding={self.binding.hex()}, not_after={self.not_after})"


def issue_credentials(
    attestation: AttestationProvider,
    *,
    server_names: Sequence[str] = (),
    now: datetime | None = None,
) -> TlsCredentials:
    """Make a key, a document that binds it and a certificate that carries the document.

    Raises:
        AttestationUnavailable: the NSM gave no document.
        MalformedError: the NSM's answer is not a well-formed document.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    binding = key_binding(spki)
    document = attestation.get_attestation_document(user_data=binding)
    parsed = parse_attestation(document)
    not_after = parsed.signing_certificate.not_valid_after_utc
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, server_names[0] if server_names else "enclave")]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(max(not_after, now + timedelta(minutes=1)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(EVIDENCE_OID, encode_evidence(document)), critical=False
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets. Resumption would let a client skip the certificate,
    # and so the current document, after a renewal. And the tickets the server sends
    # right after the handshake cost a client with TCP_NODELAY (http.client, urllib3,
    # curl, Go, browsers) about 40 ms on its first request: its request crosses them,
    # and the answer waited for a delayed ACK (measured with bench/tls_bench.py).
    context.num_tickets = 0
    _load_key(context, certificate, key)
    return TlsCredentials(
        certificate=certificate.public_bytes(serialization.Encoding.DER),
        document=document,
        binding=binding,
        not_after=not_after,
        context=context,
    )


def _load_key(
    context: ssl.SSLContext, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """Load the key into ``context`` without writing it to a disk.

    The standard library loads keys from files only: a ``memfd`` (memory only, Linux)
    holds the PEM, encrypted with a password used once, for the duration of the call.
    """
    password = secrets.token_bytes(32)
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    memfd_create: Callable[[str], int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("attested-tls")
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}", password=password)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # pragma: no cover - not Linux
        path = os.path.join(directory, "tls.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(pem)
        context.load_cert_chain(path, password=password)


class AttestedTlsIngress(Scoped):
    """A TLS-terminating ingress whose certificate carries an attestation binding its key.

    A part as :class:`attested._runtime.lifecycle.Lifecycle` describes::

        ingress = AttestedTlsIngress(listen=parse_address("vsock:ANY:8443"),
                                     to=parse_address("tcp:127.0.0.1:8080"),
                                     attestation=open_provider("auto"))
        with ingress:
            ...

    Args:
        listen: where relying parties connect (through the parent's ingress forward).
        to: the app, on loopback TCP or a Unix socket, speaking plain HTTP (or any TCP
            protocol in which the client speaks first).
        attestation: the NSM.
        server_names: DNS names for the certificate (the first is its common name).
        name: the listener's name.
        options: caps and timeouts (``max_connections``, ``connect_timeout``,
            ``handshake_timeout``, ``idle_timeout``, ``backlog``).
    """

    def __init__(
        self,
        *,
        listen: Address,
        to: Address,
        attestation: AttestationProvider,
        server_names: Sequence[str] = (),
        name: str = "attested-tls",
        options: RelayOptions | None = None,
    ) -> None:
        self.listen = listen
        self.to = to
        self.name = name
        self._attestation = attestation
        self._server_names = tuple(server_names)
        self._options = options or RelayOptions()
        self._credentials: TlsCredentials | None = None
        self._by_context: dict[int, TlsCredentials] = {}
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewal: asyncio.TimerHandle | None = None
        self._fresh: asyncio.Semaphore | None = None
        self._started = False
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- control -----------------------------------------------------------------------

    @property
    def credentials(self) -> TlsCredentials:
        """The current certificate and document (after :meth:`start`)."""
        if self._credentials is None:
            raise RuntimeError("the ingress has not started")
        return self._credentials

    def start(self, *, timeout: float = 10.0) -> Address:
        """Make the first certificate, bind and serve; all or nothing.

        Returns:
            The bound address.

        Raises:
            AttestationUnavailable: the NSM gave no document.
            RelayUnavailable: the address cannot be bound, or the loop did not start.
            RuntimeError: started before.
        """
        if self._started:
            raise RuntimeError("an AttestedTlsIngress can be started once")
        self._started = True
        self._install(issue_credentials(self._attestation, server_names=self._server_names))
        try:
            self._listener = open_listener(
                self.listen, socket_mode=0o660, backlog=self._options.backlog
            )
        except (OSError, UnicodeError) as exc:
            raise RelayUnavailable(f"cannot listen on {self.listen}: {why(exc)}") from exc
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name=f"attested-tls {self.name}", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout)
        except BaseException as exc:
            self.stop(0.0)
            if isinstance(exc, Exception):
                raise RelayUnavailable(f"{self.name} could not start: {why(exc)}") from exc
            raise
        log.info(
            "%s: attested TLS on %s -> %s; document valid until %s",
            self.name,
            self._listener.address,
            self.to,
            self.credentials.not_after,
        )
        return self._listener.address

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, let connections finish for up to ``deadline`` seconds, then cut."""
        with self._stop_lock:
            loop, thread = self._loop, self._thread
            self._stopped = True
            if loop is None or thread is None:
                self._close_listener()
                return True
            if thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(deadline), loop)
                with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                    future.result(deadline + 10.0)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10.0)
            self._close_listener()
            if not thread.is_alive() and not loop.is_closed():
                loop.close()
            return not thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the ingress serves."""
        return (
            not self._stopped
            and self._thread is not None
            and self._thread.is_alive()
            and self._server is not None
        )

    @property
    def listeners(self) -> Mapping[str, Address]:
        """``{name: bound address}``; empty before start and after stop."""
        if self._stopped or self._listener is None:
            return {}
        return {self.name: self._listener.address}

    def renew(self) -> TlsCredentials:
        """Make a new key, document and certificate now, for new handshakes.

        Raises:
            AttestationUnavailable: the NSM gave no document (the old ones stay).
        """
        credentials = issue_credentials(self._attestation, server_names=self._server_names)
        self._install(credentials)
        return credentials

    def _install(self, credentials: TlsCredentials) -> None:
        old = self._credentials
        self._credentials = credentials
        # Keep the previous generation for connections that were made with it.
        kept = (credentials,) if old is None else (old, credentials)
        self._by_context = {id(c.context): c for c in kept}

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()

    # -- loop thread ---------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_handshake_errors)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_default_executor())

    async def _open(self) -> None:
        assert self._listener is not None  # noqa: S101 - bound before the loop starts
        self._listener.sock.setblocking(False)
        self._fresh = asyncio.Semaphore(_FRESH_AT_ONCE)
        self._server = await asyncio.start_server(
            self._accepted,
            sock=self._listener.sock,
            ssl=self._front_context(self.credentials),
            ssl_handshake_timeout=self._options.handshake_timeout,
            backlog=self._options.backlog,
        )
        self._schedule_renewal()

    def _front_context(self, current: TlsCredentials) -> ssl.SSLContext:
        """The context asyncio wraps with: the first generation's, plus the switcher.

        Every handshake then switches to the current generation's context (key and
        certificate) in the SNI callback, which OpenSSL calls for every ClientHello.
        """
        context = current.context
        context.sni_callback = self._choose_context
        return context

    def _choose_context(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        current = self._credentials
        if current is not None and connection.context is not current.context:
            connection.context = current.context
        return None

    def _schedule_renewal(self) -> None:
        loop = self._loop
        if loop is None or self._stopped:
            return
        credentials = self.credentials
        now = datetime.now(UTC)
        due = min(now + RENEW_EVERY, credentials.not_after - RENEW_BEFORE_EXPIRY)
        delay = max((due - now).total_seconds(), _MIN_RENEW_DELAY)
        self._renewal = loop.call_later(delay, self._renew_in_background)

    def _renew_in_background(self) -> None:
        loop = self._loop
        if loop is None or self._stopped:
            return
        future = loop.run_in_executor(None, self.renew)
        future.add_done_callback(self._renewed)

    def _renewed(self, future: asyncio.Future[TlsCredentials]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            log.info(
                "%s: new certificate; document valid until %s",
                self.name,
                self.credentials.not_after,
            )
            self._schedule_renewal()
            return
        log.error("%s: certificate renewal failed (%s); retrying", self.name, exc)
        loop = self._loop
        if loop is not None and not self._stopped:
            self._renewal = loop.call_later(_RETRY_DELAY, self._renew_in_background)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self._options.max_connections:
            writer.close()
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("%s: connection ended: %s", self.name, why(exc))
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        credentials = self._by_context.get(id(ssl_object.context)) if ssl_object else None
        if credentials is None:
            credentials = self.credentials
        first = await self._front_requests(reader, writer, credentials)
        if first is None:
            return
        dialer = Dialer(self._options.connect_timeout, SystemResolver())
        try:
            upstream = await dialer.address(self.to, what=f"the app at {self.to}")
        except Refused as refused:
            log.warning("%s: %s", self.name, refused)
            await _answer(writer, 502, b"the app behind the attested ingress is not reachable\n")
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        try:
            if first:
                up_writer.write(first)
            last_io = [time.monotonic()]
            pumps = [
                asyncio.create_task(_pump(reader, up_writer, last_io)),
                asyncio.create_task(_pump(up_reader, writer, last_io)),
            ]
            await self._until_done(pumps, last_io)
        finally:
            up_writer.close()

    async def _until_done(self, pumps: list[asyncio.Task[None]], last_io: list[float]) -> None:
        idle = self._options.idle_timeout
        pending = set(pumps)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=None if idle is None else min(idle / 4, 5.0)
                )
                for task in done:
                    if task.exception() is not None:
                        return
                if idle is not None and time.monotonic() - last_io[0] > idle:
                    return
        finally:
            for task in pumps:
                task.cancel()

    async def _front_requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        credentials: TlsCredentials,
    ) -> bytes | None:
        """Answer well-known requests at the start; return what is for the app (``None``: done)."""
        buffer = b""
        while True:
            if len(buffer) >= len(_PROBE) or (buffer and not _PROBE.startswith(buffer)):
                if not buffer.startswith(_PROBE):
                    return buffer
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_REQUEST_HEAD:
                        await _answer(writer, 431, b"request head too large\n")
                        return None
                else:
                    head, buffer = buffer[:end], buffer[end + 4 :]
                    if not await self._answer_fresh(writer, head, credentials):
                        return None
                    if buffer:
                        continue
            chunk = await self._read_front(reader)
            if not chunk:
                return buffer or None
            buffer += chunk

    async def _read_front(self, reader: asyncio.StreamReader) -> bytes:
        idle = self._options.idle_timeout
        try:
            async with asyncio.timeout(idle):
                return await reader.read(_CHUNK)
        except TimeoutError:
            return b""

    async def _answer_fresh(
        self, writer: asyncio.StreamWriter, head: bytes, credentials: TlsCredentials
    ) -> bool:
        """Answer one well-known request; ``False`` when the connection must close."""
        try:
            request = parse_fresh_request(head)
        except MalformedError as exc:
            await _answer(writer, 400, f"{exc}\n".encode())
            return False
        assert self._fresh is not None  # noqa: S101 - made in _open
        loop = asyncio.get_running_loop()
        async with self._fresh:
            try:
                document = await loop.run_in_executor(
                    None,
                    lambda: self._attestation.get_attestation_document(
                        user_data=credentials.binding, nonce=request.nonce
                    ),
                )
            except Exception as exc:  # the NSM's own error: say so, keep serving
                log.error("%s: no fresh document: %s", self.name, exc)
                await _answer(writer, 503, b"no attestation document is available now\n")
                return False
        await _answer(writer, 200, document, content_type="application/cbor", close=request.close)
        return not request.close

    async def _shutdown(self, deadline: float) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        if self._server is not None:
            self._server.close()
        self._close_listener()
        loop = asyncio.get_running_loop()
        end = loop.time() + max(deadline, 0.0)
        while self._tasks and loop.time() < end:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, last_io: list[float]
) -> None:
    while True:
        data = await source.read(_CHUNK)
        if not data:
            break
        last_io[0] = time.monotonic()
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        with contextlib.suppress(OSError):
            sink.write_eof()
    else:
        # TLS has no half-close the standard library offers: end the connection.
        sink.close()


async def _answer(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    close: bool = True,
) -> None:
    reason = {
        200: "OK",
        400: "Bad Request",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()


def _quiet_handshake_errors(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    exc = context.get("exception")
    if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
        log.debug("TLS handshake failed: %s", exc)
        return
    loop.default_exception_handler(context)
