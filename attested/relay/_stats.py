"""Relay counters and their frozen snapshots (what ``/metrics`` reads)."""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass

from attested.net import Address

__all__ = ["Counters", "Failure", "ListenerStats", "Refusal", "RelayStats"]


class Refusal(enum.StrEnum):
    """Why a connection was refused on purpose (policy or capacity, not a fault)."""

    BUSY = "busy"
    """The listener was at its connection cap (503 / ``BUSY`` / immediate close)."""
    SHUTTING_DOWN = "shutting_down"
    """The relay was stopping."""
    NOT_ALLOWED = "not_allowed"
    """The destination is not in the allowlist (403)."""
    FORBIDDEN_ADDRESS = "forbidden_address"
    """The destination resolved only to forbidden ranges, such as loopback (403)."""
    BAD_REQUEST = "bad_request"
    """Malformed CONNECT request or tunnel header (400)."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """An HTTP method other than CONNECT (405)."""
    HEADER_TOO_LARGE = "header_too_large"
    """The request head was over its size cap (431)."""


class Failure(enum.StrEnum):
    """Why a connection failed (a fault somewhere, not a decision)."""

    RESOLVE = "resolve"
    """The destination name did not resolve."""
    CONNECT = "connect"
    """Dialling the destination (or the parent) failed."""
    CONNECT_TIMEOUT = "connect_timeout"
    """Dialling the destination (or the parent) timed out."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """The client did not finish its request, or the parent its reply, in time."""
    PROTOCOL = "protocol"
    """The peer answered something that is not the tunnel protocol."""
    IDLE_TIMEOUT = "idle_timeout"
    """No byte moved either way for the idle timeout; the tunnel was closed."""
    RESET = "reset"
    """A socket error in the middle of a tunnel (reset, broken pipe)."""
    ACCEPT = "accept"
    """``accept()`` failed, usually because the process ran out of file descriptors."""
    SHUTDOWN = "shutdown"
    """The tunnel was still open at the shutdown deadline and was cut."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerStats:
    """A consistent snapshot of one listener's counters.

    Attributes:
        name: the role's name (``"enclave-egress"``, ``"parent-egress"``, ...).
        listen: the bound address.
        connections_total: connections accepted since start (including refused ones).
        connections_active: connections open now (in handshake or relaying).
        bytes_up: bytes relayed from the accepting side to the destination.
        bytes_down: bytes relayed from the destination back.
        records: log records written (log sinks only; 0 otherwise).
        refusals: count per :class:`Refusal`, every reason present.
        failures: count per :class:`Failure`, every reason present.
    """

    name: str
    listen: Address
    connections_total: int
    connections_active: int
    bytes_up: int
    bytes_down: int
    records: int
    refusals: Mapping[Refusal, int]
    failures: Mapping[Failure, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStats:
    """A snapshot of every listener of a :class:`~attested.relay.Relay`.

    Attributes:
        listeners: one entry per role, in the order the roles were given.
    """

    listeners: tuple[ListenerStats, ...]

    def __getitem__(self, name: str) -> ListenerStats:
        """The listener called ``name``.

        Raises:
            KeyError: no listener has that name.
        """
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


class Counters:
    """Mutable counters of one listener; only the relay's event loop writes them."""

    __slots__ = (
        "active",
        "bytes_down",
        "bytes_up",
        "failures",
        "listen",
        "name",
        "records",
        "refusals",
        "total",
    )

    def __init__(self, name: str, listen: Address) -> None:
        self.name = name
        self.listen = listen
        self.total = 0
        self.active = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.records = 0
        self.refusals = dict.fromkeys(Refusal, 0)
        self.failures = dict.fromkeys(Failure, 0)

    def refuse(self, reason: Refusal) -> None:
        """Count one refusal."""
        self.refusals[reason] += 1

    def fail(self, reason: Failure) -> None:
        """Count one failure."""
        self.failures[reason] += 1

    def snapshot(self) -> ListenerStats:
        """A frozen copy."""
        return ListenerStats(
            name=self.name,
            listen=self.listen,
            connections_total=self.total,
            connections_active=self.active,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            records=self.records,
            refusals=types.MappingProxyType(dict(self.refusals)),
            failures=types.MappingProxyType(dict(self.failures)),
        )
