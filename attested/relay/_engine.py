"""The relay engine: one asyncio loop in one thread serves every role and connection.

A :class:`Relay` binds its roles (:mod:`._roles`): each gets a :class:`Listener` (TCP
with ``SO_REUSEADDR``, a Unix socket after removing a stale file, vsock, through
:func:`attested._runtime.listen.open_listener`; a log sink's output file), all or none.
It runs them on a loop in a background thread and stops them gracefully; it is a part
in the sense of :class:`attested._runtime.lifecycle.Lifecycle`. This module is the
control and the loop: starting and stopping, accepting (admission under the cap,
refusals at the door), one small task per connection for its handshake and dialling
(:mod:`._handlers`) and then a :class:`~attested.relay._pipe.Pipe` driven by loop
callbacks (no thread per connection, no coroutine per chunk), lingering refusals, the
idle sweep, and the counters (:meth:`Relay.stats`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence

from attested._runtime.lifecycle import Scoped
from attested._runtime.listen import Listener as RuntimeListener
from attested._runtime.listen import open_listener
from attested.errors import RelayUnavailable
from attested.net import Address
from attested.relay._handlers import Dialer, Handlers, keepalive, nodelay, why
from attested.relay._http import error_response
from attested.relay._logs import LogFile
from attested.relay._pipe import Pipe
from attested.relay._resolve import Resolver, SystemResolver
from attested.relay._roles import EnclaveEgress, LogSink, ParentEgress, RelayOptions, Role
from attested.relay._stats import Counters, Failure, Refusal, RelayStats
from attested.relay._tunnel import TunnelStatus, encode_reply

__all__ = ["Handler", "Listener", "Relay"]

_LOG = logging.getLogger(__name__)
_AGAIN = (BlockingIOError, InterruptedError)
_ACCEPT_BATCH = 128
_MAX_LINGERING = 256
_LINGER_SECONDS = 1.0


class Listener:
    """One role's bound listening socket, its counters and its connection handler.

    Attributes:
        role: what is served.
        sock: the listening socket (non-blocking).
        address: the bound address (the real port for ``tcp:HOST:0``).
        counters: the role's counters.
        log_file: a log sink's output file.
        handler: serves one accepted connection; returns the upstream socket to relay
            to, or ``None`` when it is done with the connection.
    """

    __slots__ = ("address", "counters", "handler", "log_file", "opened", "role", "sock")

    def __init__(self, role: Role, opened: RuntimeListener, address: Address) -> None:
        self.role = role
        self.opened = opened
        self.sock = opened.sock
        self.address = address
        self.counters = Counters(role.name, address)
        self.log_file: LogFile | None = None
        self.handler: Handler

    def close_socket(self) -> None:
        """Close the listening socket (the backlog is reset) and remove its own Unix file."""
        self.opened.close()

    def close(self) -> None:
        """Close the socket and a log sink's file."""
        self.close_socket()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


Handler = Callable[[Listener, socket.socket], Awaitable[socket.socket | None]]


def bind(role: Role, backlog: int, handler: Handler) -> Listener:
    """Bind and listen on ``role.listen``; open a log sink's output.

    A Unix socket's mode is left to the umask, as it always was for relays.

    Raises:
        RelayUnavailable: the address cannot be bound or the file opened.
    """
    address = role.listen
    try:
        opened = open_listener(address, socket_mode=None, backlog=backlog)
        opened.sock.setblocking(False)
        bound = _bound_address(address, opened.sock)
    except (OSError, UnicodeError) as exc:
        raise RelayUnavailable(f"cannot listen on {address}: {why(exc)}") from exc
    listener = Listener(role, opened, bound)
    if isinstance(role, LogSink):
        try:
            listener.log_file = LogFile(role.out)
        except OSError as exc:
            listener.close_socket()
            raise RelayUnavailable(f"cannot open {role.out}: {why(exc)}") from exc
    listener.handler = handler
    return listener


def _bound_address(requested: Address, sock: socket.socket) -> Address:
    name = sock.getsockname()
    if requested.kind == "tcp":
        return Address(kind="tcp", host=str(name[0]), port=int(name[1]))
    if requested.kind == "vsock":
        return Address(kind="vsock", cid=int(name[0]), port=int(name[1]))
    return requested


class Relay(Scoped):
    """Runs relay roles on one event loop in a background thread.

    A part as :class:`attested._runtime.lifecycle.Lifecycle` describes: ``start()``
    binds every role or none, ``stop(deadline)``, ``running``, ``listeners``; ``with
    relay:`` starts and stops it.

    Example (the parent side, in process)::

        relay = Relay([ParentEgress(listen=parse_address("vsock:ANY:8000"),
                                    allowlist=load_allowlist(path))])
        relay.start()
        relay.listeners["parent-egress"]        # Address(vsock:ANY:8000)
        relay.stats().listeners[0].connections_active
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
        self._listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._buffer = memoryview(bytearray(self._options.buffer_size))
        self._tasks: dict[asyncio.Task[None], Listener] = {}
        self._pipes: dict[Pipe, Listener] = {}
        self._lingering: dict[socket.socket, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False
        self._started = False
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- control from any thread -------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> tuple[Address, ...]:
        """Bind every role and start serving; all or nothing.

        Returns:
            The bound addresses, in role order (ports chosen by the system for
            ``tcp:HOST:0``); :attr:`listeners` has them by role name.

        Raises:
            RelayUnavailable: an address cannot be bound, a log file opened, or the loop
                thread did not start within ``timeout`` seconds; nothing is left open.
            RuntimeError: the relay was started before.
        """
        if self._started:
            raise RuntimeError("a Relay can be started once")
        self._started = True
        dialer = Dialer(
            self._options.connect_timeout, self._resolver, keepalive=self._options.keepalive
        )
        handlers = Handlers(self._options, dialer, self._linger)
        try:
            for role in self._roles:
                self._listeners.append(bind(role, self._options.backlog, handlers.for_role(role)))
        except BaseException:
            self._close_listeners()
            self._listeners.clear()
            raise
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop, ready), name="attested-relay", daemon=True
        )
        try:
            self._thread.start()
            ready.result(timeout)
        except BaseException as exc:
            self.stop(0.0)
            self._listeners.clear()
            if isinstance(exc, Exception):
                raise RelayUnavailable(f"the relay could not start: {why(exc)}") from exc
            raise
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
            self._stopped = True
            if thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(deadline), loop)
                try:
                    future.result(deadline + 10.0)
                finally:
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join(10.0)
            if not thread.is_alive():
                self._close_listeners()  # also when the loop thread had died
                if not loop.is_closed():
                    loop.close()
            return not thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the relay's loop thread is serving."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def listeners(self) -> Mapping[str, Address]:
        """Role name to bound address; empty before :meth:`start` and after :meth:`stop`."""
        if self._stopped:
            return {}
        return {listener.role.name: listener.address for listener in self._listeners}

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

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()

    # -- loop thread -------------------------------------------------------------------

    def _run_loop(
        self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            for listener in self._listeners:
                loop.add_reader(listener.sock.fileno(), self._on_acceptable, listener)
            self._schedule_sweep()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
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
                    _LOG.warning("%s: cannot reopen its output: %s", listener.role.name, why(exc))

    def _on_acceptable(self, listener: Listener) -> None:
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
                _LOG.warning("%s: accept failed (%s); pausing 0.5 s", listener.role.name, why(exc))
                loop.remove_reader(listener.sock.fileno())
                loop.call_later(0.5, self._resume_accept, listener)
                return
            self._admit(listener, sock)

    def _resume_accept(self, listener: Listener) -> None:
        if not self._stopping:
            self._loop_or_fail().add_reader(listener.sock.fileno(), self._on_acceptable, listener)

    def _admit(self, listener: Listener, sock: socket.socket) -> None:
        counters = listener.counters
        counters.total += 1
        sock.setblocking(False)
        nodelay(sock)
        keepalive(sock, self._options.keepalive)
        if self._stopping:
            self._refuse_at_door(listener, sock, Refusal.SHUTTING_DOWN)
            return
        if counters.active >= self._options.max_connections:
            self._refuse_at_door(listener, sock, Refusal.BUSY)
            return
        counters.active += 1
        task = self._loop_or_fail().create_task(self._serve(listener, sock))
        self._tasks[task] = listener
        task.add_done_callback(lambda done: self._task_done(done, sock))

    def _task_done(self, task: asyncio.Task[None], sock: socket.socket) -> None:
        listener = self._tasks.pop(task, None)
        if listener is not None and task.cancelled() and sock.fileno() != -1:
            # Cancelled (by stop) before its first step: _serve's own clean-up never ran.
            sock.close()
            listener.counters.active -= 1
            if not isinstance(listener.role, LogSink):
                listener.counters.fail(Failure.SHUTDOWN)

    def _refuse_at_door(self, listener: Listener, sock: socket.socket, reason: Refusal) -> None:
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

    async def _serve(self, listener: Listener, sock: socket.socket) -> None:
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
            _LOG.debug("%s: connection failed: %s", listener.role.name, why(exc))
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
        for listener in self._listeners:
            listener.close_socket()
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
