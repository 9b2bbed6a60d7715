"""The relay engine: one asyncio loop in one thread serves every role and connection.

Roles are frozen descriptions (:class:`EnclaveEgress`, :class:`ParentEgress`,
:class:`Forward`, :class:`LogSink`); a :class:`Relay` binds them, runs them on a loop
in a background thread, and stops them gracefully. Per connection there is one small
task for the handshake (CONNECT request, tunnel header, dialling) and then a
:class:`~attested.relay._pipe.Pipe` driven by loop callbacks: no thread per
connection, no coroutine per chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from attested._runtime.listen import remove_stale_socket
from attested.errors import ConfigurationError, MalformedError, RelayUnavailable
from attested.net import Address
from attested.relay._allowlist import Allowlist, IPAddress, normalize_host
from attested.relay._http import (
    ESTABLISHED,
    MAX_HEAD_SIZE,
    ConnectRequest,
    HttpRefusal,
    error_response,
    find_head_end,
    parse_connect,
)
from attested.relay._logs import ACK, DEFAULT_MAX_LINE, LineSplitter, LogFile
from attested.relay._pipe import Pipe
from attested.relay._resolve import Resolver, SystemResolver
from attested.relay._stats import Counters, Failure, Refusal, RelayStats
from attested.relay._tunnel import (
    PREFIX_SIZE,
    VERSION,
    TunnelStatus,
    UnsupportedVersionError,
    encode_reply,
    encode_request,
    parse_reply,
    parse_request,
    reply_size,
    request_size,
)

__all__ = [
    "EnclaveEgress",
    "Forward",
    "LogSink",
    "ParentEgress",
    "Relay",
    "RelayOptions",
    "Role",
]

_LOG = logging.getLogger(__name__)
_AGAIN = (BlockingIOError, InterruptedError)
_ACCEPT_BATCH = 128
_MAX_LINGERING = 256
_LINGER_SECONDS = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayOptions:
    """Tuning shared by every role of a :class:`Relay`.

    Attributes:
        max_connections: open connections per listener; the next one is refused at
            once (503 for CONNECT, ``BUSY`` for tunnels, closed for raw forwards and
            log sinks) instead of waiting in a queue.
        connect_timeout: seconds to resolve and dial a destination, over all its
            addresses (each address gets an equal share of what is left).
        handshake_timeout: seconds for a client to send its CONNECT request or tunnel
            header; the enclave waits this plus ``connect_timeout`` for the parent's reply.
        idle_timeout: a tunnel in which no byte moved for this long is closed
            (``None``: never).
        buffer_size: the loop-wide relay buffer (one, shared by all connections).
        splice_after: bytes after which one direction of a tunnel switches to
            ``os.splice`` on Linux (``None``: never).
        backlog: the listen backlog.
    """

    max_connections: int = 4096
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    idle_timeout: float | None = 600.0
    buffer_size: int = 256 * 1024
    splice_after: int | None = 256 * 1024
    backlog: int = 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.backlog < 1:
            raise ValueError("max_connections and backlog must be positive")
        if self.connect_timeout <= 0 or self.handshake_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive or None")
        if self.buffer_size < 4096:
            raise ValueError("buffer_size must be at least 4096")
        if self.splice_after is not None and self.splice_after < 0:
            raise ValueError("splice_after must be >= 0 or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnclaveEgress:
    """Inside the enclave: an HTTP CONNECT proxy whose tunnels go to the parent.

    Point ``HTTPS_PROXY`` at ``listen``. Each CONNECT opens a new connection to
    ``parent`` carrying the tunnel header; TLS stays end to end.

    Attributes:
        listen: where the proxy listens (``tcp:127.0.0.1:3128``).
        parent: the parent's :class:`ParentEgress` (``vsock:3:8000``).
        name: the name in counters and logs.
    """

    listen: Address
    parent: Address
    name: str = "enclave-egress"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentEgress:
    """On the parent: accepts tunnels from the enclave and dials allowlisted destinations.

    Attributes:
        listen: where the enclave connects (``vsock:ANY:8000``).
        allowlist: the destinations that may be dialled (deny by default).
        name: the name in counters and logs.
    """

    listen: Address
    allowlist: Allowlist
    name: str = "parent-egress"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Raw bytes from ``listen`` to ``to``, no header (socat and vsock-proxy compatible).

    Used for ingress (parent ``tcp:0.0.0.0:8443`` to ``vsock:16:8443``, then enclave
    ``vsock:ANY:8443`` to ``tcp:127.0.0.1:8443``), for enclave apps that cannot use a
    proxy, and for the parent's fixed-destination egress (vsock-proxy's command line).

    Attributes:
        listen: where to accept connections.
        to: where each connection goes.
        allowlist: when set, ``to`` must be a TCP destination this allowlist permits
            (checked at construction), and every connection is dialled with the
            egress DNS rules: the name is resolved per connection and addresses in
            forbidden ranges are skipped unless listed. Use it on the parent whenever
            the other side is the enclave. ``Allowlist.of((host, port))`` lists just
            the destination.
        name: the name in counters and logs.

    Raises:
        ConfigurationError: ``allowlist`` is set and does not permit ``to``.
    """

    listen: Address
    to: Address
    allowlist: Allowlist | None = None
    name: str = "forward"

    def __post_init__(self) -> None:
        if self.allowlist is None:
            return
        if self.to.kind != "tcp" or self.to.host is None or self.to.port is None:
            raise ConfigurationError(f"a guarded forward needs a tcp destination, not {self.to}")
        try:
            host = normalize_host(self.to.host)
        except ValueError as exc:
            raise ConfigurationError(f"forward destination {self.to}: {exc}") from exc
        if not self.allowlist.permits(host, self.to.port):
            raise ConfigurationError(f"forward destination {self.to} is not in the allowlist")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSink:
    """On the parent: receives JSON log lines from enclaves and appends them to a file.

    Attributes:
        listen: where the enclave's :class:`~attested.relay.VsockLogHandler` connects.
        out: the output file (appended to; reopened by :meth:`Relay.reopen`), or
            ``None`` for standard output.
        max_line: longest line kept whole; longer ones are cut and marked.
        name: the name in counters and logs.
    """

    listen: Address
    out: Path | None = None
    max_line: int = DEFAULT_MAX_LINE
    name: str = "logs"


Role = EnclaveEgress | ParentEgress | Forward | LogSink


class _Refused(Exception):
    """A connection ends early, with an answer for the client and a counter."""

    def __init__(
        self,
        *,
        http: int,
        code: str,
        reason: str,
        counter: Refusal | Failure,
        status: TunnelStatus,
    ) -> None:
        super().__init__(reason)
        self.http = http
        self.code = code
        self.reason = reason
        self.counter = counter
        self.status = status

    @classmethod
    def of(cls, status: TunnelStatus, reason: str) -> _Refused:
        counter, code = _STATUS_COUNTERS[status]
        return cls(
            http=status.http_status, code=code, reason=reason, counter=counter, status=status
        )


_STATUS_COUNTERS: dict[TunnelStatus, tuple[Refusal | Failure, str]] = {
    TunnelStatus.NOT_ALLOWED: (Refusal.NOT_ALLOWED, "not_allowed"),
    TunnelStatus.FORBIDDEN_ADDRESS: (Refusal.FORBIDDEN_ADDRESS, "forbidden_address"),
    TunnelStatus.RESOLVE_FAILED: (Failure.RESOLVE, "resolve_failed"),
    TunnelStatus.CONNECT_FAILED: (Failure.CONNECT, "connect_failed"),
    TunnelStatus.CONNECT_TIMEOUT: (Failure.CONNECT_TIMEOUT, "connect_timeout"),
    TunnelStatus.BUSY: (Refusal.BUSY, "busy"),
    TunnelStatus.BAD_REQUEST: (Failure.PROTOCOL, "bad_request"),
    TunnelStatus.UNSUPPORTED_VERSION: (Failure.PROTOCOL, "unsupported_version"),
}
_HTTP_REFUSALS = {
    "bad_request": Refusal.BAD_REQUEST,
    "method_not_allowed": Refusal.METHOD_NOT_ALLOWED,
    "header_too_large": Refusal.HEADER_TOO_LARGE,
}


def _count(counters: Counters, reason: Refusal | Failure) -> None:
    if isinstance(reason, Refusal):
        counters.refuse(reason)
    else:
        counters.fail(reason)


class _Listener:
    __slots__ = ("address", "counters", "created_path", "handler", "log_file", "role", "sock")

    def __init__(self, role: Role, sock: socket.socket, address: Address, created: str | None):
        self.role = role
        self.sock = sock
        self.address = address
        self.created_path = created
        self.counters = Counters(role.name, address)
        self.log_file: LogFile | None = None
        self.handler: Callable[[_Listener, socket.socket], Awaitable[socket.socket | None]]


class Relay:
    """Runs relay roles on one event loop in a background thread.

    Example (the parent side, in process)::

        relay = Relay([ParentEgress(listen=parse_address("vsock:ANY:8000"),
                                    allowlist=load_allowlist(path))])
        (bound,) = relay.start()
        ...
        relay.stats()["parent-egress"].connections_active
        relay.stop(deadline=10)

    Args:
        roles: what to serve; names must be distinct.
        options: timeouts, caps and buffer sizes.
        resolver: name resolution for egress (default :class:`SystemResolver`).

    Raises:
        ValueError: no roles, or two roles with the same name.
    """

    def __init__(
        self,
        roles: Sequence[Role],
        *,
        options: RelayOptions | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if not roles:
            raise ValueError("a relay needs at least one role")
        names = [role.name for role in roles]
        if len(set(names)) != len(names):
            raise ValueError("roles need distinct names (pass name=...)")
        self._roles = tuple(roles)
        self._options = options or RelayOptions()
        self._resolver: Resolver = resolver or SystemResolver()
        self._listeners: list[_Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._buffer = memoryview(bytearray(self._options.buffer_size))
        self._tasks: dict[asyncio.Task[None], _Listener] = {}
        self._pipes: dict[Pipe, _Listener] = {}
        self._lingering: dict[socket.socket, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False
        self._started = False
        self._stop_lock = threading.Lock()

    # -- control from any thread -------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> tuple[Address, ...]:
        """Bind every role and start serving.

        Returns:
            The bound addresses, in role order (ports chosen by the system for
            ``tcp:HOST:0``).

        Raises:
            RelayUnavailable: an address cannot be bound or a log file opened.
            RuntimeError: the relay was started before.
        """
        if self._started:
            raise RuntimeError("a Relay can be started once")
        self._started = True
        try:
            for role in self._roles:
                self._listeners.append(self._bind(role))
        except BaseException:
            self._close_listeners()
            raise
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop, ready), name="attested-relay", daemon=True
        )
        self._thread.start()
        ready.result(timeout)
        return tuple(listener.address for listener in self._listeners)

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, let open tunnels finish for up to ``deadline`` seconds, then cut.

        Log-sink connections are closed at once (their senders reconnect and resend
        what was not acknowledged). Safe to call more than once, from any thread; a
        second caller waits for the first to finish.

        Returns:
            ``True`` when the loop thread has ended (or never started); ``False`` if it
            is still running after the grace time (it is a daemon thread).
        """
        with self._stop_lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                self._close_listeners()
                return True
            if thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(deadline), loop)
                try:
                    future.result(deadline + 10.0)
                finally:
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join(10.0)
            if not thread.is_alive() and not loop.is_closed():
                loop.close()
            return not thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the relay's loop thread is serving."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def stats(self) -> RelayStats:
        """A consistent snapshot of every listener's counters."""
        loop = self._loop
        thread = self._thread
        on_other_thread = thread is not None and thread is not threading.current_thread()
        if loop is not None and thread is not None and thread.is_alive() and on_other_thread:
            future = asyncio.run_coroutine_threadsafe(self._snapshot(), loop)
            try:
                return future.result(5.0)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
        return RelayStats(listeners=tuple(lsn.counters.snapshot() for lsn in self._listeners))

    def reopen(self) -> None:
        """Reopen every log sink's output file (call it on SIGHUP, after rotation)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._reopen)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- binding --------------------------------------------------------------------

    def _bind(self, role: Role) -> _Listener:
        address = role.listen
        created: str | None = None
        try:
            if address.kind == "tcp":
                assert address.host is not None  # noqa: S101 - tcp addresses have hosts
                infos = socket.getaddrinfo(
                    address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
                family, _, _, _, resolved = infos[0]
                sockaddr: Any = resolved
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                sock = socket.socket(address.family, socket.SOCK_STREAM)
                sockaddr = address.sockaddr()
        except (OSError, UnicodeError) as exc:
            raise RelayUnavailable(f"cannot listen on {address}: {_why(exc)}") from exc
        try:
            if address.kind == "unix":
                assert address.path is not None  # noqa: S101
                remove_stale_socket(address.path)
                created = address.path
            sock.bind(sockaddr)
            sock.listen(self._options.backlog)
            sock.setblocking(False)
            bound = _bound_address(address, sock)
        except OSError as exc:
            sock.close()
            raise RelayUnavailable(f"cannot listen on {address}: {_why(exc)}") from exc
        listener = _Listener(role, sock, bound, created)
        if isinstance(role, LogSink):
            try:
                listener.log_file = LogFile(role.out)
            except OSError as exc:
                sock.close()
                raise RelayUnavailable(f"cannot open {role.out}: {_why(exc)}") from exc
        listener.handler = self._handler_for(role)
        return listener

    def _handler_for(
        self, role: Role
    ) -> Callable[[_Listener, socket.socket], Awaitable[socket.socket | None]]:
        if isinstance(role, EnclaveEgress):
            return self._serve_connect
        if isinstance(role, ParentEgress):
            return self._serve_tunnel
        if isinstance(role, Forward):
            return self._serve_forward
        return self._serve_logs

    def _close_listeners(self) -> None:
        self._close_listening_sockets()
        for listener in self._listeners:
            if listener.log_file is not None:
                listener.log_file.close()
                listener.log_file = None

    def _close_listening_sockets(self) -> None:
        """Close the listening sockets: connections still in the backlog are reset."""
        for listener in self._listeners:
            listener.sock.close()
            if listener.created_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(listener.created_path)
                listener.created_path = None

    # -- loop thread -------------------------------------------------------------------

    def _run_loop(
        self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        for listener in self._listeners:
            loop.add_reader(listener.sock.fileno(), self._on_acceptable, listener)
        self._schedule_sweep()
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.run_until_complete(loop.shutdown_default_executor())

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None  # noqa: S101 - only called on the running loop
        return loop

    async def _snapshot(self) -> RelayStats:
        return RelayStats(listeners=tuple(lsn.counters.snapshot() for lsn in self._listeners))

    def _reopen(self) -> None:
        for listener in self._listeners:
            if listener.log_file is not None:
                try:
                    listener.log_file.reopen()
                except OSError as exc:
                    _LOG.warning("%s: cannot reopen its output: %s", listener.role.name, _why(exc))

    def _on_acceptable(self, listener: _Listener) -> None:
        loop = self._loop_or_fail()
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = listener.sock.accept()
            except _AGAIN:
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                listener.counters.fail(Failure.ACCEPT)
                _LOG.warning("%s: accept failed (%s); pausing 0.5 s", listener.role.name, _why(exc))
                loop.remove_reader(listener.sock.fileno())
                loop.call_later(0.5, self._resume_accept, listener)
                return
            self._admit(listener, sock)

    def _resume_accept(self, listener: _Listener) -> None:
        if not self._stopping:
            self._loop_or_fail().add_reader(listener.sock.fileno(), self._on_acceptable, listener)

    def _admit(self, listener: _Listener, sock: socket.socket) -> None:
        counters = listener.counters
        counters.total += 1
        sock.setblocking(False)
        _nodelay(sock)
        if self._stopping:
            self._refuse_at_door(listener, sock, Refusal.SHUTTING_DOWN)
            return
        if counters.active >= self._options.max_connections:
            self._refuse_at_door(listener, sock, Refusal.BUSY)
            return
        counters.active += 1
        task = self._loop_or_fail().create_task(self._serve(listener, sock))
        self._tasks[task] = listener
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _refuse_at_door(self, listener: _Listener, sock: socket.socket, reason: Refusal) -> None:
        listener.counters.refuse(reason)
        role = listener.role
        why = (
            "the relay is shutting down"
            if reason is Refusal.SHUTTING_DOWN
            else f"{role.name} is at its cap of {self._options.max_connections} connections"
        )
        _LOG.info("%s: refused a connection: %s", role.name, why)
        if isinstance(role, EnclaveEgress):
            self._linger(sock, error_response(503, reason.value, why))
        elif isinstance(role, ParentEgress):
            self._linger(sock, encode_reply(TunnelStatus.BUSY, why))
        else:
            sock.close()

    async def _serve(self, listener: _Listener, sock: socket.socket) -> None:
        counters = listener.counters
        try:
            upstream = await listener.handler(listener, sock)
        except asyncio.CancelledError:
            sock.close()
            counters.active -= 1
            if not isinstance(listener.role, LogSink):
                counters.fail(Failure.SHUTDOWN)
            raise
        except OSError as exc:
            _LOG.debug("%s: connection failed: %s", listener.role.name, _why(exc))
            sock.close()
            counters.active -= 1
            counters.fail(Failure.RESET)
            return
        except Exception:
            _LOG.exception("%s: unexpected error; connection closed", listener.role.name)
            sock.close()
            counters.active -= 1
            counters.fail(Failure.RESET)
            return
        if upstream is None:
            counters.active -= 1
            return
        pipe = Pipe(
            self._loop_or_fail(),
            sock,
            upstream,
            counters=counters,
            buffer=self._buffer,
            splice_after=self._options.splice_after,
            on_done=self._pipe_done,
        )
        self._pipes[pipe] = listener

    def _pipe_done(self, pipe: Pipe, failure: Failure | None) -> None:
        listener = self._pipes.pop(pipe, None)
        if listener is None:
            return
        listener.counters.active -= 1
        if failure is not None:
            listener.counters.fail(failure)

    # -- lingering refusals -------------------------------------------------------------

    def _linger(self, sock: socket.socket, data: bytes) -> None:
        """Send a short refusal, then read and discard for a moment before closing.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy the refusal before the client reads it.
        """
        try:
            sock.send(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= _MAX_LINGERING or self._stopping:
            sock.close()
            return
        loop = self._loop_or_fail()
        self._lingering[sock] = loop.call_later(_LINGER_SECONDS, self._unlinger, sock)
        loop.add_reader(sock.fileno(), self._linger_read, sock)

    def _linger_read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except _AGAIN:
            return
        except OSError:
            data = b""
        if not data:
            self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        handle = self._lingering.pop(sock, None)
        if handle is None:
            return
        handle.cancel()
        self._loop_or_fail().remove_reader(sock.fileno())
        sock.close()

    # -- idle sweep and shutdown ---------------------------------------------------------

    def _schedule_sweep(self) -> None:
        idle = self._options.idle_timeout
        if idle is None or self._stopping:
            return
        self._sweeper = self._loop_or_fail().call_later(min(idle / 4, 5.0), self._sweep)

    def _sweep(self) -> None:
        idle = self._options.idle_timeout
        assert idle is not None  # noqa: S101 - only scheduled with an idle timeout
        now = self._loop_or_fail().time()
        for pipe in [p for p in self._pipes if now - p.last_io > idle]:
            pipe.abort(Failure.IDLE_TIMEOUT)
        self._schedule_sweep()

    async def _shutdown(self, deadline: float) -> None:
        loop = self._loop_or_fail()
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for listener in self._listeners:
            if listener.sock.fileno() >= 0:
                loop.remove_reader(listener.sock.fileno())
        self._close_listening_sockets()
        for task, listener in list(self._tasks.items()):
            if isinstance(listener.role, LogSink):
                task.cancel()
        end = loop.time() + max(deadline, 0.0)
        while loop.time() < end and (self._tasks or self._pipes):
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self._pipes):
            pipe.abort(Failure.SHUTDOWN)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for sock in list(self._lingering):
            self._unlinger(sock)
        self._close_listeners()

    # -- role handlers: each returns the upstream socket to relay to, or None ------------

    async def _serve_forward(
        self, listener: _Listener, sock: socket.socket
    ) -> socket.socket | None:
        role = listener.role
        assert isinstance(role, Forward)  # noqa: S101
        try:
            if role.allowlist is not None:
                assert role.to.host is not None  # noqa: S101 - checked at construction
                assert role.to.port is not None  # noqa: S101
                return await self._dial_destination(
                    role.allowlist, normalize_host(role.to.host), role.to.port
                )
            return await self._dial_address(role.to, what=str(role.to))
        except _Refused as refused:
            self._log_refusal(listener, refused)
            sock.close()
            return None

    async def _serve_connect(
        self, listener: _Listener, sock: socket.socket
    ) -> socket.socket | None:
        role = listener.role
        assert isinstance(role, EnclaveEgress)  # noqa: S101
        loop = self._loop_or_fail()
        counters = listener.counters
        buffer = bytearray()
        timeout = self._options.handshake_timeout
        try:
            async with asyncio.timeout(timeout):
                while (end := find_head_end(buffer)) is None:
                    chunk = await loop.sock_recv(sock, MAX_HEAD_SIZE)
                    if not chunk:
                        sock.close()
                        return None
                    buffer += chunk
            request = parse_connect(bytes(buffer[:end]))
        except TimeoutError:
            counters.fail(Failure.HANDSHAKE_TIMEOUT)
            detail = f"no complete CONNECT request within {timeout:g} s"
            self._linger(sock, error_response(408, "handshake_timeout", detail))
            return None
        except HttpRefusal as refusal:
            counters.refuse(_HTTP_REFUSALS.get(refusal.code, Refusal.BAD_REQUEST))
            _LOG.info("%s: refused a request: %s", role.name, refusal.detail)
            self._linger(sock, error_response(refusal.status, refusal.code, refusal.detail))
            return None
        try:
            upstream = await self._open_tunnel(role.parent, request)
        except _Refused as refused:
            self._log_refusal(listener, refused)
            self._linger(sock, error_response(refused.http, refused.code, refused.reason))
            return None
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(sock, ESTABLISHED)
                if len(buffer) > end:
                    await loop.sock_sendall(upstream, bytes(buffer[end:]))
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _open_tunnel(self, parent: Address, request: ConnectRequest) -> socket.socket:
        loop = self._loop_or_fail()
        try:
            upstream = await self._dial_address(parent, what=f"the parent relay at {parent}")
        except _Refused as refused:
            refused.code = "parent_unavailable"
            raise
        wait = self._options.handshake_timeout + self._options.connect_timeout
        try:
            async with asyncio.timeout(wait):
                await loop.sock_sendall(upstream, encode_request(request.host, request.port))
                prefix = await _recv_exactly(loop, upstream, PREFIX_SIZE)
                rest = await _recv_exactly(loop, upstream, reply_size(prefix) - PREFIX_SIZE)
            reply = parse_reply(prefix + rest)
        except TimeoutError:
            upstream.close()
            raise _Refused(
                http=504,
                code="parent_timeout",
                reason=f"the parent relay at {parent} did not answer within {wait:g} s",
                counter=Failure.HANDSHAKE_TIMEOUT,
                status=TunnelStatus.CONNECT_TIMEOUT,
            ) from None
        except (MalformedError, EOFError, OSError) as exc:
            upstream.close()
            if isinstance(exc, EOFError | ConnectionError):
                why = "closed the connection without answering"
            elif isinstance(exc, UnsupportedVersionError):
                why = f"speaks tunnel version {exc.version}, this relay speaks {VERSION}"
            else:
                why = (
                    "does not speak the attested tunnel protocol (for a plain "
                    "vsock-proxy or socat, use a forward instead)"
                )
            raise _Refused(
                http=502,
                code="parent_protocol",
                reason=f"the parent relay at {parent} {why}",
                counter=Failure.PROTOCOL,
                status=TunnelStatus.BAD_REQUEST,
            ) from None
        except BaseException:
            upstream.close()
            raise
        if reply.status is not TunnelStatus.OK:
            upstream.close()
            raise _Refused.of(reply.status, reply.reason or f"parent answered {reply.status.name}")
        return upstream

    async def _serve_tunnel(self, listener: _Listener, sock: socket.socket) -> socket.socket | None:
        role = listener.role
        assert isinstance(role, ParentEgress)  # noqa: S101
        loop = self._loop_or_fail()
        counters = listener.counters
        try:
            async with asyncio.timeout(self._options.handshake_timeout):
                prefix = await _recv_exactly(loop, sock, PREFIX_SIZE)
                rest = await _recv_exactly(loop, sock, request_size(prefix) - PREFIX_SIZE)
            request = parse_request(prefix + rest)
        except TimeoutError:
            counters.fail(Failure.HANDSHAKE_TIMEOUT)
            sock.close()
            return None
        except EOFError:
            sock.close()
            return None
        except MalformedError as exc:
            counters.refuse(Refusal.BAD_REQUEST)
            _LOG.info("%s: refused a malformed tunnel request: %s", role.name, exc)
            status = (
                TunnelStatus.UNSUPPORTED_VERSION
                if isinstance(exc, UnsupportedVersionError)
                else TunnelStatus.BAD_REQUEST
            )
            self._linger(sock, encode_reply(status, str(exc)))
            return None
        try:
            upstream = await self._dial_destination(role.allowlist, request.host, request.port)
        except _Refused as refused:
            self._log_refusal(listener, refused)
            self._linger(sock, encode_reply(refused.status, refused.reason))
            return None
        try:
            await loop.sock_sendall(sock, encode_reply(TunnelStatus.OK))
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _serve_logs(self, listener: _Listener, sock: socket.socket) -> socket.socket | None:
        role = listener.role
        assert isinstance(role, LogSink)  # noqa: S101
        out = listener.log_file
        assert out is not None  # noqa: S101 - opened at bind
        loop = self._loop_or_fail()
        counters = listener.counters
        splitter = LineSplitter(role.max_line)
        received = 0
        acks = bytearray()
        try:
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                counters.bytes_up += len(data)
                lines, ended = splitter.feed(data)
                if lines:
                    try:
                        out.write(lines)
                    except OSError as exc:  # unacknowledged: the sender keeps the lines
                        _LOG.warning("%s: cannot write log lines: %s", role.name, _why(exc))
                        counters.fail(Failure.RESET)
                        break
                    counters.records += len(lines)
                if ended:
                    received += ended
                    if not acks:  # a reader that never reads acks does not stall us
                        acks += ACK.pack(received)
                if acks:
                    with contextlib.suppress(*_AGAIN):
                        del acks[: sock.send(acks)]
            tail = splitter.finish() if not data else []
            if tail:
                out.write(tail)
                counters.records += len(tail)
        except OSError as exc:
            _LOG.debug("%s: connection ended: %s", role.name, _why(exc))
        finally:
            sock.close()
        return None

    # -- dialling ------------------------------------------------------------------------

    def _log_refusal(self, listener: _Listener, refused: _Refused) -> None:
        _count(listener.counters, refused.counter)
        _LOG.info("%s: %s", listener.role.name, refused.reason)

    async def _connect(
        self, family: int, sockaddr: tuple[str, int] | tuple[int, int] | str, timeout: float
    ) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            _nodelay(sock)
            async with asyncio.timeout(timeout):
                await self._loop_or_fail().sock_connect(sock, sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _dial_address(self, address: Address, *, what: str) -> socket.socket:
        """Dial a configured address (no allowlist: the operator chose it)."""
        timeout = self._options.connect_timeout
        if address.kind == "tcp":
            assert address.host is not None  # noqa: S101 - tcp addresses have both
            assert address.port is not None  # noqa: S101
            literal = _ip_literal(address.host)
            if literal is not None:
                return await self._try_addresses([literal], address.port, what=what)
            addresses = await self._resolve(address.host, address.port)
            return await self._try_addresses(addresses, address.port, what=what)
        try:
            return await self._connect(address.family, address.sockaddr(), timeout)
        except TimeoutError:
            raise _Refused.of(
                TunnelStatus.CONNECT_TIMEOUT, f"cannot reach {what}: timed out after {timeout:g} s"
            ) from None
        except OSError as exc:
            raise _Refused.of(
                TunnelStatus.CONNECT_FAILED, f"cannot reach {what}: {_why(exc)}"
            ) from None

    async def _dial_destination(self, allowlist: Allowlist, host: str, port: int) -> socket.socket:
        """Dial what the enclave asked for, under the allowlist and the DNS rules."""
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not allowlist.permits(host, port):
            raise _Refused.of(TunnelStatus.NOT_ALLOWED, f"{shown} is not in the parent's allowlist")
        literal = _ip_literal(host)
        if literal is not None:
            return await self._try_addresses([literal], port, what=shown)
        addresses = await self._resolve(host, port)
        usable: list[IPAddress] = []
        skipped: list[str] = []
        for ip in addresses:
            why = allowlist.may_dial(ip, port)
            if why is None:
                usable.append(ip)
            else:
                skipped.append(f"{ip} ({why})")
        if skipped:
            _LOG.info("%s resolves to forbidden addresses, skipped: %s", host, ", ".join(skipped))
        if not usable:
            raise _Refused.of(
                TunnelStatus.FORBIDDEN_ADDRESS,
                f"{host} resolves only to forbidden addresses: {', '.join(skipped)[:160]}; "
                "list the address itself to allow it",
            )
        return await self._try_addresses(usable, port, what=shown)

    async def _resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        timeout = self._options.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver.resolve(host, port)
        except TimeoutError:
            raise _Refused.of(
                TunnelStatus.RESOLVE_FAILED, f"resolving {host} timed out after {timeout:g} s"
            ) from None
        except OSError as exc:
            raise _Refused.of(
                TunnelStatus.RESOLVE_FAILED, f"cannot resolve {host}: {_why(exc)}"
            ) from None
        if not addresses:
            raise _Refused.of(TunnelStatus.RESOLVE_FAILED, f"{host} has no address")
        return addresses

    async def _try_addresses(
        self, addresses: Sequence[IPAddress], port: int, *, what: str
    ) -> socket.socket:
        """Try each address in turn; each gets an equal share of the time left."""
        loop = self._loop_or_fail()
        end = loop.time() + self._options.connect_timeout
        errors: list[str] = []
        timeouts = 0
        for index, ip in enumerate(addresses):
            left = end - loop.time()
            if left <= 0:
                break
            share = left / (len(addresses) - index)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            try:
                return await self._connect(family, (ip.compressed, port), share)
            except TimeoutError:
                timeouts += 1
                errors.append(f"{ip}: timed out after {share:.3g} s")
            except OSError as exc:
                errors.append(f"{ip}: {_why(exc)}")
        if len(addresses) == 1 and errors:
            errors = [errors[0].partition(": ")[2]]
        status = (
            TunnelStatus.CONNECT_TIMEOUT
            if errors and timeouts == len(errors)
            else TunnelStatus.CONNECT_FAILED
        )
        detail = "; ".join(errors)[:180] or "no time left"
        raise _Refused.of(status, f"cannot reach {what}: {detail}")


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("peer closed the connection")
        data += chunk
    return bytes(data)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)  # asyncio puts its own text in strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _bound_address(requested: Address, sock: socket.socket) -> Address:
    name = sock.getsockname()
    if requested.kind == "tcp":
        return Address(kind="tcp", host=str(name[0]), port=int(name[1]))
    if requested.kind == "vsock":
        return Address(kind="vsock", cid=int(name[0]), port=int(name[1]))
    return requested
