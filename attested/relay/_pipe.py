"""Relay bytes both ways between two connected stream sockets, on an asyncio loop.

This is the hot path, so it avoids asyncio transports and coroutines per chunk (see
ADR 0040). Each direction is driven by ``add_reader``/``add_writer`` callbacks:

* ``recv_into`` one loop-wide buffer, then ``send`` at once. Only when the destination
  cannot take everything is the remainder copied aside; reading from the source then
  stops until it drains (flow control: a slow or stalled reader costs one buffer, and
  never a busy loop or unbounded memory).
* After a direction has carried ``splice_after`` bytes it switches, on Linux, to
  ``os.splice`` through a private pipe: the bytes then move between the sockets inside
  the kernel. If the kernel refuses (an address family without splice support, or the
  per-user pipe quota), that direction stays on ``recv_into``.
* End of stream on one side becomes ``shutdown(SHUT_WR)`` on the other once the
  pending bytes are out (half-close). The pipe finishes when both directions have
  ended, or at the first socket error (both sockets are then closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable

from attested.relay._stats import Counters, Failure

__all__ = ["SPLICE_AVAILABLE", "Pipe"]

SPLICE_AVAILABLE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1024 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})
_AGAIN = (BlockingIOError, InterruptedError)


class _Flow:
    """One direction of a pipe."""

    __slots__ = (
        "done",
        "dst",
        "dst_fd",
        "eof",
        "in_pipe",
        "moved",
        "pending",
        "pipe_r",
        "pipe_w",
        "splice",
        "src",
        "src_fd",
        "up",
    )

    def __init__(self, src: socket.socket, dst: socket.socket, *, up: bool, splice: bool) -> None:
        # The loop is given descriptors, not socket objects: on a miss, selectors
        # format the object into a KeyError message, and a socket's repr costs two
        # system calls.
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.up = up
        self.pending: memoryview | None = None
        self.eof = False
        self.done = False
        self.moved = 0
        self.in_pipe = 0
        self.pipe_r = -1
        self.pipe_w = -1
        # 0: not yet, 1: splicing, -1: never (disabled or refused by the kernel)
        self.splice = 0 if splice else -1


class Pipe:
    """A bidirectional relay between ``a`` (the accepting side) and ``b`` (the destination).

    Both sockets must be connected and non-blocking; the pipe owns and closes them.

    Args:
        loop: the running event loop.
        a: the accepted connection ("up" is ``a`` to ``b``).
        b: the connection to the destination.
        counters: byte counters to add to.
        buffer: a buffer shared by every pipe on this loop.
        splice_after: bytes after which a direction switches to ``os.splice``
            (``None`` never switches).
        on_done: called once when the pipe has finished, with the failure if any.
    """

    __slots__ = (
        "_buffer",
        "_counters",
        "_down",
        "_loop",
        "_on_done",
        "_splice_after",
        "_up",
        "closed",
        "last_io",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        a: socket.socket,
        b: socket.socket,
        *,
        counters: Counters,
        buffer: memoryview,
        splice_after: int | None,
        on_done: Callable[[Pipe, Failure | None], None],
    ) -> None:
        self._loop = loop
        self._buffer = buffer
        self._counters = counters
        self._on_done = on_done
        splice = splice_after is not None and SPLICE_AVAILABLE
        self._up = _Flow(a, b, up=True, splice=splice)
        self._down = _Flow(b, a, up=False, splice=splice)
        self._splice_after = splice_after or 0
        self.closed = False
        self.last_io = loop.time()
        loop.add_reader(self._up.src_fd, self._readable, self._up)
        loop.add_reader(self._down.src_fd, self._readable, self._down)

    def abort(self, reason: Failure) -> None:
        """Close both sockets now and report ``reason``."""
        self._finish(reason)

    def _readable(self, flow: _Flow) -> None:
        if flow.splice == 1:
            self._splice_readable(flow)
            return
        try:
            n = flow.src.recv_into(self._buffer)
        except _AGAIN:
            return
        except OSError:
            self._finish(Failure.RESET)
            return
        if n == 0:
            self._source_ended(flow)
            return
        self.last_io = self._loop.time()
        view = self._buffer[:n]
        try:
            sent = flow.dst.send(view)
        except _AGAIN:
            sent = 0
        except OSError:
            self._finish(Failure.RESET)
            return
        self._count(flow, sent)
        if sent < n:
            flow.pending = memoryview(bytes(view[sent:]))  # copy: the buffer is shared
            self._wait_writable(flow)
        elif flow.splice == 0 and flow.moved >= self._splice_after:
            self._start_splice(flow)

    def _splice_readable(self, flow: _Flow) -> None:
        try:
            n = os.splice(flow.src_fd, flow.pipe_w, _PIPE_SIZE, flags=_SPLICE_FLAGS)
        except _AGAIN:
            return
        except OSError as exc:
            if exc.errno in _NO_SPLICE and flow.in_pipe == 0:
                self._stop_splice(flow)  # the socket is still readable: recv_into takes over
                return
            self._finish(Failure.RESET)
            return
        if n == 0:
            self._source_ended(flow)
            return
        self.last_io = self._loop.time()
        flow.in_pipe += n
        if not self._drain_pipe(flow) and not self.closed:
            self._wait_writable(flow)

    def _source_ended(self, flow: _Flow) -> None:
        self._loop.remove_reader(flow.src_fd)
        flow.eof = True
        if flow.pending is None and flow.in_pipe == 0:
            self._shut(flow)

    def _wait_writable(self, flow: _Flow) -> None:
        self._loop.remove_reader(flow.src_fd)
        self._loop.add_writer(flow.dst_fd, self._writable, flow)

    def _writable(self, flow: _Flow) -> None:
        pending = flow.pending
        if pending is not None:
            try:
                sent = flow.dst.send(pending)
            except _AGAIN:
                return
            except OSError:
                self._finish(Failure.RESET)
                return
            self._count(flow, sent)
            self.last_io = self._loop.time()
            if sent < len(pending):
                flow.pending = pending[sent:]
                return
            flow.pending = None
        if flow.in_pipe and not self._drain_pipe(flow):
            return
        if self.closed:
            return
        self._loop.remove_writer(flow.dst_fd)
        if flow.eof:
            self._shut(flow)
        else:
            self._loop.add_reader(flow.src_fd, self._readable, flow)

    def _count(self, flow: _Flow, n: int) -> None:
        flow.moved += n
        if flow.up:
            self._counters.bytes_up += n
        else:
            self._counters.bytes_down += n

    def _shut(self, flow: _Flow) -> None:
        flow.done = True
        self._close_pipe(flow)
        with contextlib.suppress(OSError):  # the peer is gone; the other direction will notice
            flow.dst.shutdown(socket.SHUT_WR)
        if self._up.done and self._down.done:
            self._finish(None)

    def _start_splice(self, flow: _Flow) -> None:
        try:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            flow.splice = -1
            return
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:  # over the per-user pipe quota: a 64 KiB pipe is slower than recv_into
            os.close(r)
            os.close(w)
            flow.splice = -1
            return
        flow.pipe_r, flow.pipe_w, flow.splice = r, w, 1

    def _drain_pipe(self, flow: _Flow) -> bool:
        """Move what is in the pipe to the destination; True once it is empty."""
        while flow.in_pipe:
            try:
                n = os.splice(flow.pipe_r, flow.dst_fd, flow.in_pipe, flags=_SPLICE_FLAGS)
            except _AGAIN:
                return False
            except OSError as exc:
                if exc.errno in _NO_SPLICE:
                    return self._unsplice_pending(flow)
                self._finish(Failure.RESET)
                return False
            if n == 0:
                return False
            flow.in_pipe -= n
            self._count(flow, n)
        return True

    def _unsplice_pending(self, flow: _Flow) -> bool:
        """The destination refuses splice: take the pipe's bytes back as pending data."""
        chunks = []
        while flow.in_pipe:
            try:
                chunk = os.read(flow.pipe_r, flow.in_pipe)
            except OSError:
                self._finish(Failure.RESET)
                return False
            if not chunk:
                break
            chunks.append(chunk)
            flow.in_pipe -= len(chunk)
        self._stop_splice(flow)
        flow.pending = memoryview(b"".join(chunks)) if chunks else None
        return flow.pending is None

    def _stop_splice(self, flow: _Flow) -> None:
        self._close_pipe(flow)
        flow.in_pipe = 0
        flow.splice = -1

    @staticmethod
    def _close_pipe(flow: _Flow) -> None:
        if flow.pipe_r >= 0:
            os.close(flow.pipe_r)
            os.close(flow.pipe_w)
            flow.pipe_r = flow.pipe_w = -1

    def _finish(self, failure: Failure | None) -> None:
        if self.closed:
            return
        self.closed = True
        for flow in (self._up, self._down):
            self._loop.remove_reader(flow.src_fd)
            self._loop.remove_writer(flow.dst_fd)
            self._close_pipe(flow)
            flow.pending = None
        self._up.src.close()
        self._up.dst.close()
        self._on_done(self, failure)
