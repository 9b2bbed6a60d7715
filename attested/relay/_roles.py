"""What a relay serves: its roles, as frozen descriptions, and the options they share.

:class:`EnclaveEgress`, :class:`ParentEgress`, :class:`Forward` and :class:`LogSink` say
where to listen and where connections go; :class:`RelayOptions` holds the timeouts, caps
and buffer sizes. Plain data, checked at construction; :class:`~._engine.Relay` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from attested.errors import ConfigurationError
from attested.net import Address
from attested.relay._allowlist import Allowlist, normalize_host
from attested.relay._logs import DEFAULT_MAX_LINE

__all__ = [
    "MAX_KEEPALIVE",
    "EnclaveEgress",
    "Forward",
    "LogSink",
    "ParentEgress",
    "RelayOptions",
    "Role",
]

MAX_KEEPALIVE = 32767  # Linux's limit for TCP_KEEPIDLE


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
            (``None``: never). TCP keepalive probes carry no bytes, so they do not
            keep a tunnel from being idle: for long, mostly silent protocols (NFS,
            database sessions) raise this or set it to ``None``.
        keepalive: seconds of silence after which TCP keepalive probes start on the
            relay's TCP sockets, both the accepted and the dialled one (then every
            ``min(keepalive, 15)`` seconds, 4 unanswered probes end the connection);
            ``None``: the kernel's setting (usually off). A dead peer or a NAT or
            load balancer that forgot the connection is then noticed, and a middlebox's
            own idle timer sees traffic. vsock sockets have no keepalive; the host
            resets them when the enclave ends.
        buffer_size: the loop-wide relay buffer (one, shared by all connections).
        splice_after: bytes after which one direction of a tunnel switches to
            ``os.splice`` on Linux (``None``: never).
        backlog: the listen backlog.
    """

    max_connections: int = 4096
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    idle_timeout: float | None = 600.0
    keepalive: float | None = 60.0
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
        if self.keepalive is not None and not 1 <= self.keepalive <= MAX_KEEPALIVE:
            raise ValueError(f"keepalive must be 1 to {MAX_KEEPALIVE} seconds or None")
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
    With ``tunnel_to``, ``to`` is the parent's :class:`ParentEgress` and each connection
    opens a tunnel naming that destination, as a CONNECT through :class:`EnclaveEgress`
    would: the parent's allowlist decides (``attested exec``'s ``[[hosts]]``).

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
        tunnel_to: ``(host, port)``: open a tunnel through the parent-egress relay at
            ``to`` to this destination, instead of sending raw bytes to ``to``.

    Raises:
        ConfigurationError: ``allowlist`` is set and does not permit ``to``;
            ``tunnel_to`` is not a valid host and port, or is given with ``allowlist``.
    """

    listen: Address
    to: Address
    allowlist: Allowlist | None = None
    name: str = "forward"
    tunnel_to: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.tunnel_to is not None:
            host, port = self.tunnel_to
            if self.allowlist is not None:
                raise ConfigurationError("a tunnel forward leaves the allowlist to the parent")
            try:
                canonical = normalize_host(host)
            except ValueError as exc:
                raise ConfigurationError(f"tunnel destination: {exc}") from exc
            if not 1 <= port <= 65535:
                raise ConfigurationError(f"tunnel destination port {port} is out of range")
            object.__setattr__(self, "tunnel_to", (canonical, port))
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
        max_line: longest output line; a longer record is cut inside its message.
        max_record: longest input line read whole (``None``: 1 MiB or ``4 * max_line``).
        enclaves: names for senders, written as ``enclave`` on their records: keys are
            vsock CIDs (``"16"``) or IP addresses (for a tcp listener).
        name: the name in counters and logs.
    """

    listen: Address
    out: Path | None = None
    max_line: int = DEFAULT_MAX_LINE
    max_record: int | None = None
    enclaves: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    name: str = "logs"


Role = EnclaveEgress | ParentEgress | Forward | LogSink
