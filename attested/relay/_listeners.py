"""A relay's listening sockets: binding a role's address, and closing it again.

:func:`bind` opens a role's listener (TCP with ``SO_REUSEADDR``, a Unix socket after
removing a stale file with :func:`attested._runtime.listen.remove_stale_socket`, vsock)
and, for a log sink, its output file; any failure is
:class:`~attested.errors.RelayUnavailable` with nothing left open. A :class:`Listener`
also carries the role's counters and the coroutine that serves its connections;
accepting on the loop is the engine's.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from attested._runtime.listen import remove_stale_socket
from attested.errors import RelayUnavailable
from attested.net import Address
from attested.relay._dial import why
from attested.relay._logs import LogFile
from attested.relay._roles import LogSink, Role
from attested.relay._stats import Counters

__all__ = ["Handler", "Listener", "bind"]


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

    __slots__ = ("address", "counters", "created_path", "handler", "log_file", "role", "sock")

    def __init__(
        self, role: Role, sock: socket.socket, address: Address, created: str | None
    ) -> None:
        self.role = role
        self.sock = sock
        self.address = address
        self.created_path = created
        self.counters = Counters(role.name, address)
        self.log_file: LogFile | None = None
        self.handler: Handler

    def close_socket(self) -> None:
        """Close the listening socket: connections still in the backlog are reset."""
        self.sock.close()
        if self.created_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.created_path)
            self.created_path = None

    def close(self) -> None:
        """Close the socket and a log sink's file."""
        self.close_socket()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


Handler = Callable[[Listener, socket.socket], Awaitable[socket.socket | None]]


def bind(role: Role, backlog: int, handler: Handler) -> Listener:
    """Bind and listen on ``role.listen``; open a log sink's output.

    Raises:
        RelayUnavailable: the address cannot be bound or the file opened.
    """
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
        raise RelayUnavailable(f"cannot listen on {address}: {why(exc)}") from exc
    try:
        if address.kind == "unix":
            assert address.path is not None  # noqa: S101
            remove_stale_socket(address.path)
            created = address.path
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
        bound = _bound_address(address, sock)
    except OSError as exc:
        sock.close()
        raise RelayUnavailable(f"cannot listen on {address}: {why(exc)}") from exc
    listener = Listener(role, sock, bound, created)
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
