"""A relay's listening sockets: binding a role's address, and closing it again.

:func:`bind` opens a role's listener (TCP with ``SO_REUSEADDR``, a Unix socket after
removing a stale file: :func:`attested._runtime.listen.open_listener`, vsock)
and, for a log sink, its output file; any failure is
:class:`~attested.errors.RelayUnavailable` with nothing left open. A :class:`Listener`
also carries the role's counters and the coroutine that serves its connections;
accepting on the loop is the engine's.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from attested._runtime.listen import Listener as RuntimeListener
from attested._runtime.listen import open_listener
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
