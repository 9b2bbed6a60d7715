"""The parent's credential server: the instance role's credentials, for the enclave only.

:class:`CredentialServer` answers each allowed peer (the enclave's CID) with one frame of
the shared protocol (:mod:`attested.kms._credproto`) that the enclave's
:class:`attested.kms.credentials.ParentCredentials` reads; :func:`imds_source` and
:func:`botocore_source` are where the credentials come from. Never logged, never in a
``repr``. Moved from ``attested.kms.credentials``, which re-exports it for one release.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from types import MappingProxyType
from typing import Any, Self

import botocore.session
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from attested._runtime.lifecycle import Scoped
from attested._runtime.listen import Listener, open_listener
from attested.errors import ConfigurationError, CredentialsUnavailable, MalformedError
from attested.kms import _credproto
from attested.kms._credproto import AwsCredentials
from attested.kms.credentials import imds_fetcher, imds_unavailable
from attested.net import Address, parse_address

__all__ = [
    "CredentialServer",
    "CredentialSource",
    "DEFAULT_MAX_CONNECTIONS",
    "botocore_source",
    "imds_source",
]

logger = logging.getLogger("attested.parent.credentials")

CredentialSource = Callable[[], AwsCredentials]
"""What the credential server hands out: called once per request."""


def imds_source(
    *, base_url: str | None = None, timeout: int = 1, attempts: int = 2
) -> CredentialSource:
    """The instance role's credentials from IMDSv2 (token first; IMDSv1 is not used).

    Args:
        base_url: the metadata service (default ``http://169.254.169.254/``; tests
            point it at a loopback server).
        timeout: seconds per IMDS request.
        attempts: tries per IMDS request.
    """
    fetcher = imds_fetcher(base_url=base_url, timeout=timeout, attempts=attempts)

    def source() -> AwsCredentials:
        try:
            data = fetcher.retrieve_iam_role_credentials()
        except BotoCoreError as exc:
            raise imds_unavailable(exc) from None
        if not data:
            raise imds_unavailable(None)
        try:
            expiration = datetime.fromisoformat(str(data["expiry_time"]))
            return AwsCredentials(
                access_key_id=data["access_key"],
                secret_access_key=data["secret_key"],
                session_token=data["token"],
                expiration=expiration,
            )
        except (ValueError, KeyError) as exc:
            raise MalformedError(f"unexpected IMDS credentials ({type(exc).__name__})") from None

    return source


def botocore_source(credentials: Credentials | None = None) -> CredentialSource:
    """Credentials from botocore: the given object, or botocore's default chain.

    The default chain (environment, config files, container, IMDSv2) is resolved on
    first use.
    Refreshable credentials (instance role, assumed role) are sent with their
    expiration; other credentials are sent without one.
    """
    resolved: list[Credentials] = [] if credentials is None else [credentials]
    lock = threading.Lock()

    def source() -> AwsCredentials:
        with lock:
            if not resolved:
                found = botocore.session.Session().get_credentials()
                if found is None:
                    raise CredentialsUnavailable(
                        "botocore found no credentials on the parent (environment, config "
                        "files, container or instance role)"
                    )
                resolved.append(found)
        current = resolved[0]
        expiry: datetime | None = None
        if isinstance(current, RefreshableCredentials):
            current.get_frozen_credentials()  # refresh now if due
            # botocore keeps the expiry private; read it BEFORE the values, so that a
            # refresh in between can only make the expiry we send too early, not late.
            private: Any = current
            expiry = private._expiry_time
        frozen = current.get_frozen_credentials()
        if frozen.access_key is None or frozen.secret_key is None:
            raise CredentialsUnavailable("botocore credentials are incomplete")
        return AwsCredentials(
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token,
            expiration=expiry,
        )

    return source


def normalise_peer(peer: str | int, kind: str) -> str | int:
    if kind == "vsock":
        if not isinstance(peer, int) or isinstance(peer, bool) or not 0 <= peer <= 0xFFFFFFFF:
            raise ConfigurationError(f"allowed vsock peer {peer!r} must be a CID (integer)")
        return peer
    try:
        return str(ipaddress.ip_address(str(peer)))
    except ValueError:
        raise ConfigurationError(f"allowed tcp peer {peer!r} must be an IP address") from None


DEFAULT_MAX_CONNECTIONS = 16
"""Connections the credential server holds at once, by default; more are refused as busy."""

_MAX_LINGERING = 64  # busy refusals waiting for their peer to close, at most
_LINGER_SECONDS = 1.0
_ANSWER_THREADS = 4
_ACCEPTS_PER_WAKEUP = 64


@dataclasses.dataclass(slots=True, eq=False)
class _Connection:
    """A connection the serving loop holds: reading a request, or refused and lingering."""

    sock: socket.socket
    peer: object
    deadline: float
    buffer: bytearray = dataclasses.field(default_factory=bytearray)
    length: int | None = None  # the payload length, once the header is in
    lingering: bool = False


@dataclasses.dataclass(slots=True)
class _Loop:
    """The serving loop's own state (one thread): its selector and the connections held."""

    selector: selectors.BaseSelector
    connections: dict[int, _Connection] = dataclasses.field(default_factory=dict)

    def hold(self, connection: _Connection) -> None:
        self.connections[connection.sock.fileno()] = connection
        self.selector.register(connection.sock, selectors.EVENT_READ, connection)

    def forget(self, connection: _Connection) -> None:
        self.selector.unregister(connection.sock)
        del self.connections[connection.sock.fileno()]


class CredentialServer(Scoped):
    """The parent side: hands role credentials to the enclave, on request.

    Listens on ``address`` and answers each connection from an allowed peer with one
    credentials frame (or an error frame). Connections from other peers are closed
    without an answer and logged.

    Connections are served concurrently: one thread reads every request (a selector
    loop), and a few threads call ``source`` and send the answers. Each connection must
    deliver its whole request frame within ``timeout`` of being accepted, however it
    dribbles it in, or it is closed; so a slow peer never delays another. At most
    ``max_connections`` are held at once; past that, a connection is answered with an
    error frame saying the server is busy (the enclave sees ``CredentialsUnavailable``).

    Args:
        address: where to listen: ``vsock:ANY:8001`` in production,
            ``tcp:127.0.0.1:0`` in tests (port 0 picks a free port).
        source: where credentials come from (:func:`imds_source`,
            :func:`botocore_source`, or any callable returning :class:`AwsCredentials`).
        allowed_peers: vsock CIDs (the enclave's ``--enclave-cid``) or, for tcp, IP
            addresses allowed to connect. Required for vsock; for tcp the default is
            loopback only.
        timeout: seconds for a whole request to arrive (from accept), and again for the
            answer to be sent.
        max_connections: connections held at once (reading a request or being
            answered); at least 1.

    Raises:
        ConfigurationError: a unix address, no/invalid allowed peers for vsock, or a
            bad timeout or connection cap.
    """

    def __init__(
        self,
        address: Address | str,
        *,
        source: CredentialSource,
        allowed_peers: Collection[str | int] | None = None,
        timeout: float = 5.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._address = parse_address(address) if isinstance(address, str) else address
        kind = self._address.kind
        if kind == "unix":
            raise ConfigurationError("the credential server listens on vsock or tcp")
        if allowed_peers is None:
            if kind == "vsock":
                raise ConfigurationError(
                    "a vsock credential server needs allowed_peers: the enclave CID(s)"
                )
            allowed_peers = ("127.0.0.1", "::1")
        if not allowed_peers:
            raise ConfigurationError("allowed_peers is empty: nobody could connect")
        if not timeout > 0:
            raise ConfigurationError("the credential server's timeout must be positive")
        cap: object = max_connections
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise ConfigurationError("max_connections must be an integer of at least 1")
        self._allowed = frozenset(normalise_peer(p, kind) for p in allowed_peers)
        self._source = source
        self._timeout = timeout
        self._max_connections = max_connections
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._answers: ThreadPoolExecutor | None = None
        self._answering: dict[Future[None], socket.socket] = {}  # answers under way
        self._lock = threading.Lock()
        self._held = 0  # connections reading a request or being answered
        self.served = 0
        """Connections answered (with credentials or an error frame)."""
        self.refused = 0
        """Connections closed because the peer is not allowed."""
        self.busy = 0
        """Connections refused because ``max_connections`` were held."""
        self.timed_out = 0
        """Connections closed because their request did not arrive within ``timeout``."""

    @property
    def address(self) -> Address:
        """The listening address (with the actual port once started)."""
        return self._address if self._listener is None else self._listener.address

    @property
    def listeners(self) -> Mapping[str, Address]:
        """``{"credentials": ADDRESS}`` while started (the bound port); empty otherwise."""
        bound = {} if self._listener is None else {"credentials": self._listener.address}
        return MappingProxyType(bound)

    def start(self) -> Self:
        """Bind, listen, and serve in background threads.

        Raises:
            UnavailableError: the address cannot be bound (``CredentialsUnavailable``).
        """
        if self._thread is not None:
            raise RuntimeError("the credential server is already running")
        try:
            listener = open_listener(self._address, backlog=min(self._max_connections, 128))
        except OSError as exc:
            raise CredentialsUnavailable(
                f"the credential server cannot listen on {self._address}: {exc.strerror or exc}"
            ) from None
        listener.sock.setblocking(False)
        self._listener = listener
        self._wake = socket.socketpair()
        for end in self._wake:
            end.setblocking(False)
        self._answers = ThreadPoolExecutor(
            max_workers=min(_ANSWER_THREADS, self._max_connections),
            thread_name_prefix="attested-credentials-answer",
        )
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"attested-credentials {self.address}", daemon=True
        )
        self._thread.start()
        logger.info("credential server listening on %s", self.address)
        return self

    @property
    def running(self) -> bool:
        """Whether the server's thread is serving."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting at once; answers under way get ``deadline`` seconds, then are cut.

        Safe to call more than once and before :meth:`start`.

        Returns:
            ``True`` if every answer under way was sent in time.
        """
        end = time.monotonic() + max(0.0, deadline)
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join()  # the loop sees the wake-up at once
            self._thread = None
        late: set[Future[None]] = set()
        if self._answers is not None:
            late = wait(list(self._answering), max(0.0, end - time.monotonic())).not_done
            for future in late:  # the source cannot be cut, sending its answer can
                with contextlib.suppress(OSError, KeyError):
                    self._answering[future].shutdown(socket.SHUT_RDWR)
            self._answers.shutdown(wait=not late)  # idle workers end at once
            self._answers = None
        if self._wake is not None:
            for sock in self._wake:
                sock.close()
            self._wake = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        return not late

    # -- the serving loop (one thread) ---------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None  # noqa: S101
        assert self._wake is not None  # noqa: S101
        listener, wake = self._listener.sock, self._wake[0]
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            loop = _Loop(selector)
            try:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    deadlines = [c.deadline for c in loop.connections.values()]
                    wait = min([1.0, *(max(0.0, d - now) for d in deadlines)])
                    for key, _ in selector.select(wait):
                        if key.fileobj is listener:
                            self._accept(listener, loop)
                        elif key.fileobj is wake:
                            with contextlib.suppress(OSError):
                                wake.recv(64)
                        else:
                            self._readable(key.data, loop)
                    self._expire(loop)
            finally:
                for connection in loop.connections.values():
                    connection.sock.close()
                    if not connection.lingering:
                        self._release()

    def _accept(self, listener: socket.socket, loop: _Loop) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._stopping.is_set():
                    logger.exception("credential server: accept failed")
                return
            conn.setblocking(False)
            if not self._peer_allowed(peer):
                self.refused += 1
                logger.warning("credential server: refused a connection from %s", peer)
                conn.close()
                continue
            with self._lock:
                busy = self._held >= self._max_connections
                if not busy:
                    self._held += 1
            if busy:
                self._refuse_busy(conn, peer, loop)
                continue
            loop.hold(_Connection(conn, peer, time.monotonic() + self._timeout))

    def _refuse_busy(self, conn: socket.socket, peer: object, loop: _Loop) -> None:
        self.busy += 1
        logger.warning(
            "credential server: %d connections are open (the cap); refused %s as busy",
            self._max_connections,
            peer,
        )
        lingering = sum(1 for c in loop.connections.values() if c.lingering)
        try:
            conn.send(
                _credproto.encode_error(
                    f"the credential server is busy ({self._max_connections} connections "
                    "open); try again shortly"
                )
            )
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            lingering = _MAX_LINGERING
        if lingering >= _MAX_LINGERING:
            conn.close()
            return
        # Keep reading what the peer sends until it closes (or briefly), so that closing
        # with its request unread does not reset the connection before it reads the answer.
        loop.hold(_Connection(conn, peer, time.monotonic() + _LINGER_SECONDS, lingering=True))

    def _readable(self, connection: _Connection, loop: _Loop) -> None:
        want = (
            _credproto.HEADER_SIZE
            if connection.length is None
            else _credproto.HEADER_SIZE + connection.length
        ) - len(connection.buffer)
        try:
            chunk = connection.sock.recv(max(want, 1) if not connection.lingering else 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(connection, loop, f"read failed: {exc}")
            return
        if connection.lingering:
            if not chunk:
                self._drop(connection, loop, None)
            return
        if not chunk:
            self._drop(connection, loop, "closed before sending a whole request")
            return
        connection.buffer += chunk
        try:
            if connection.length is None and len(connection.buffer) >= _credproto.HEADER_SIZE:
                connection.length = _credproto.frame_length(bytes(connection.buffer))
            if connection.length is None or len(connection.buffer) < (
                _credproto.HEADER_SIZE + connection.length
            ):
                return
            _credproto.decode_request(bytes(connection.buffer[_credproto.HEADER_SIZE :]))
        except MalformedError as exc:
            self._drop(connection, loop, f"bad request: {exc}")
            return
        loop.forget(connection)
        assert self._answers is not None  # noqa: S101
        future = self._answers.submit(self._answer, connection.sock, connection.peer)
        self._answering[future] = connection.sock
        future.add_done_callback(self._answered)

    def _expire(self, loop: _Loop) -> None:
        now = time.monotonic()
        for connection in [c for c in loop.connections.values() if c.deadline <= now]:
            if connection.lingering:
                self._drop(connection, loop, None)
                continue
            self.timed_out += 1
            why = f"did not send a whole request within {self._timeout:g} s; closed"
            self._drop(connection, loop, why)

    def _drop(self, connection: _Connection, loop: _Loop, why: str | None) -> None:
        if why is not None:
            logger.warning("credential server: %s: %s", connection.peer, why)
        loop.forget(connection)
        connection.sock.close()
        if not connection.lingering:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._held -= 1

    def _peer_allowed(self, peer: object) -> bool:
        if not isinstance(peer, tuple) or not peer:
            return False
        if self._address.kind == "vsock":
            return peer[0] in self._allowed
        try:
            host = ipaddress.ip_address(str(peer[0]))
        except ValueError:
            return False
        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        return str(host) in self._allowed

    # -- answering (a few threads) ---------------------------------------------------------

    def _answered(self, future: Future[None]) -> None:
        self._answering.pop(future, None)

    def _answer(self, conn: socket.socket, peer: object) -> None:
        try:
            with conn:
                self._send_answer(conn, peer)
        finally:
            self._release()

    def _send_answer(self, conn: socket.socket, peer: object) -> None:
        try:
            answer = _credproto.encode_credentials(self._source())
        except CredentialsUnavailable as exc:
            logger.warning("credential server: no credentials to give: %s", exc)
            answer = _credproto.encode_error(str(exc))
        except Exception as exc:  # the server outlives any failure of its source
            logger.warning("credential server: credential source failed (%s)", type(exc).__name__)
            answer = _credproto.encode_error(
                f"the parent's credential source failed ({type(exc).__name__}); see its log"
            )
        # Counted before sending, so that a client holding the answer sees it counted.
        with self._lock:
            self.served += 1
        try:
            conn.settimeout(self._timeout)
            conn.sendall(answer)
        except OSError as exc:
            logger.warning("credential server: could not answer %s: %s", peer, exc)
            return
        logger.info("credential server: answered %s", peer)
