"""How a relay serves one connection, per role, up to the point where bytes flow.

Each handler takes an accepted connection and returns the upstream socket to relay to
(the engine then hands both to a :class:`~attested.relay._pipe.Pipe`), or ``None`` when
it has finished with the connection itself:

* enclave egress: read the CONNECT request, open a tunnel to the parent (tunnel
  header, wait for its reply), answer ``200 Connection established``;
* parent egress: read the tunnel header, dial the destination under the allowlist,
  reply ``OK``;
* forward: dial the fixed destination (with the egress DNS rules when guarded), or
  open a tunnel to it through the parent (``tunnel_to``);
* log sink: append the JSON lines to the output and acknowledge them, to the end.

:class:`Dialer` opens the upstream socket: a configured address (the operator chose it:
no allowlist), or a destination the enclave asked for (allowlisted, resolved per
connection, addresses in forbidden ranges skipped unless listed, each address an equal
share of ``connect_timeout``). Every way a dial fails is a :class:`Refused`, answered in
the client's protocol (HTTP status, tunnel status) through the engine's lingering close,
and counted on the listener. Also the small socket helpers the relay modules share.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from attested.errors import MalformedError
from attested.net import Address
from attested.relay._allowlist import Allowlist, IPAddress, normalize_host
from attested.relay._http import (
    ESTABLISHED,
    MAX_HEAD_SIZE,
    HttpRefusal,
    error_response,
    find_head_end,
    parse_connect,
)
from attested.relay._logs import ACK, LineSplitter, received_stamp
from attested.relay._resolve import Resolver
from attested.relay._roles import EnclaveEgress, Forward, LogSink, ParentEgress, RelayOptions, Role
from attested.relay._stats import Counters, Failure, Refusal
from attested.relay._tunnel import (
    PREFIX_SIZE,
    VERSION,
    TunnelRequest,
    TunnelStatus,
    UnsupportedVersionError,
    encode_reply,
    encode_request,
    parse_reply,
    parse_request,
    reply_size,
    request_size,
)

if TYPE_CHECKING:
    from attested.relay._engine import Handler, Listener

__all__ = [
    "Dialer",
    "Handlers",
    "Refused",
    "ip_literal",
    "keepalive",
    "nodelay",
    "peer_of",
    "why",
]

# The engine's logger name, kept when the engine was split (operators filter on it).
_LOG = logging.getLogger("attested.relay._engine")
_AGAIN = (BlockingIOError, InterruptedError)
_KEEPALIVE_INTERVAL = 15
_KEEPALIVE_PROBES = 4
_HTTP_REFUSALS = {
    "bad_request": Refusal.BAD_REQUEST,
    "method_not_allowed": Refusal.METHOD_NOT_ALLOWED,
    "header_too_large": Refusal.HEADER_TOO_LARGE,
}


class Refused(Exception):
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
    def of(cls, status: TunnelStatus, reason: str) -> Refused:
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


def count(counters: Counters, reason: Refusal | Failure) -> None:
    """Count a refusal or a failure."""
    if isinstance(reason, Refusal):
        counters.refuse(reason)
    else:
        counters.fail(reason)


class Dialer:
    """Opens upstream connections on the running loop.

    Args:
        connect_timeout: seconds to resolve and dial, over all of a name's addresses.
        resolver: name resolution for destinations.
        keepalive: TCP keepalive idle seconds for the dialled sockets (``None``: the
            kernel's setting).
    """

    def __init__(
        self, connect_timeout: float, resolver: Resolver, *, keepalive: float | None = None
    ) -> None:
        self._timeout = connect_timeout
        self._resolver = resolver
        self._keepalive = keepalive

    async def connect(
        self, family: int, sockaddr: tuple[str, int] | tuple[int, int] | str, timeout: float
    ) -> socket.socket:
        """Connect a new non-blocking socket within ``timeout`` seconds."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            nodelay(sock)
            keepalive(sock, self._keepalive)
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    async def address(self, address: Address, *, what: str) -> socket.socket:
        """Dial a configured address (no allowlist: the operator chose it)."""
        timeout = self._timeout
        if address.kind == "tcp":
            assert address.host is not None  # noqa: S101 - tcp addresses have both
            assert address.port is not None  # noqa: S101
            literal = ip_literal(address.host)
            if literal is not None:
                return await self.try_addresses([literal], address.port, what=what)
            addresses = await self.resolve(address.host, address.port)
            return await self.try_addresses(addresses, address.port, what=what)
        try:
            return await self.connect(address.family, address.sockaddr(), timeout)
        except TimeoutError:
            raise Refused.of(
                TunnelStatus.CONNECT_TIMEOUT, f"cannot reach {what}: timed out after {timeout:g} s"
            ) from None
        except OSError as exc:
            raise Refused.of(
                TunnelStatus.CONNECT_FAILED, f"cannot reach {what}: {why(exc)}"
            ) from None

    async def destination(self, allowlist: Allowlist, host: str, port: int) -> socket.socket:
        """Dial what the enclave asked for, under the allowlist and the DNS rules."""
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not allowlist.permits(host, port):
            raise Refused.of(TunnelStatus.NOT_ALLOWED, f"{shown} is not in the parent's allowlist")
        literal = ip_literal(host)
        if literal is not None:
            return await self.try_addresses([literal], port, what=shown)
        addresses = await self.resolve(host, port)
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
            raise Refused.of(
                TunnelStatus.FORBIDDEN_ADDRESS,
                f"{host} resolves only to forbidden addresses: {', '.join(skipped)[:160]}; "
                "list the address itself to allow it",
            )
        return await self.try_addresses(usable, port, what=shown)

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Resolve ``host`` within the connect timeout; at least one address."""
        timeout = self._timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver.resolve(host, port)
        except TimeoutError:
            raise Refused.of(
                TunnelStatus.RESOLVE_FAILED, f"resolving {host} timed out after {timeout:g} s"
            ) from None
        except OSError as exc:
            raise Refused.of(
                TunnelStatus.RESOLVE_FAILED, f"cannot resolve {host}: {why(exc)}"
            ) from None
        if not addresses:
            raise Refused.of(TunnelStatus.RESOLVE_FAILED, f"{host} has no address")
        return addresses

    async def try_addresses(
        self, addresses: Sequence[IPAddress], port: int, *, what: str
    ) -> socket.socket:
        """Try each address in turn; each gets an equal share of the time left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self._timeout
        errors: list[str] = []
        timeouts = 0
        for index, ip in enumerate(addresses):
            left = end - loop.time()
            if left <= 0:
                break
            share = left / (len(addresses) - index)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            try:
                return await self.connect(family, (ip.compressed, port), share)
            except TimeoutError:
                timeouts += 1
                errors.append(f"{ip}: timed out after {share:.3g} s")
            except OSError as exc:
                errors.append(f"{ip}: {why(exc)}")
        if len(addresses) == 1 and errors:
            errors = [errors[0].partition(": ")[2]]
        status = (
            TunnelStatus.CONNECT_TIMEOUT
            if errors and timeouts == len(errors)
            else TunnelStatus.CONNECT_FAILED
        )
        detail = "; ".join(errors)[:180] or "no time left"
        raise Refused.of(status, f"cannot reach {what}: {detail}")


async def recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """Receive exactly ``size`` bytes; ``EOFError`` if the peer closes first."""
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("peer closed the connection")
        data += chunk
    return bytes(data)


def ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address, or ``None`` for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def nodelay(sock: socket.socket) -> None:
    """Turn Nagle off on a TCP socket."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keepalive(sock: socket.socket, idle: float | None) -> None:
    """Turn TCP keepalive on a TCP socket: probes after ``idle`` silent seconds.

    Then one probe every ``min(idle, 15)`` seconds; after 4 unanswered ones the kernel
    ends the connection. ``None`` leaves the kernel's setting; other families (vsock,
    Unix) are left alone.
    """
    if idle is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    seconds = max(1, int(idle))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), seconds),
        (
            socket.IPPROTO_TCP,
            getattr(socket, "TCP_KEEPINTVL", None),
            min(seconds, _KEEPALIVE_INTERVAL),
        ),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), _KEEPALIVE_PROBES),
    ]
    for level, option, value in options:
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


def peer_of(sock: socket.socket) -> tuple[str, str | None]:
    """The sender of an accepted connection, and the key its name is looked up by.

    ``("vsock:16:1234", "16")`` (the CID is assigned by the host, not chosen by the
    sender), ``("tcp:127.0.0.1:5555", "127.0.0.1")``, ``("unix", None)``.
    """
    try:
        name = sock.getpeername()
    except OSError:
        return "unknown", None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host, port = str(name[0]), int(name[1])
        shown = f"[{host}]" if ":" in host else host
        return f"tcp:{shown}:{port}", host
    if sock.family == getattr(socket, "AF_VSOCK", -1):
        return f"vsock:{int(name[0])}:{int(name[1])}", str(int(name[0]))
    return "unix", None


def why(exc: BaseException) -> str:
    """A short reason for an OS error, for messages and logs."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)  # asyncio puts its own text in strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Handlers:
    """The per-role connection handlers of one relay.

    Args:
        options: the relay's timeouts.
        dialer: opens upstream connections.
        linger: sends a refusal and closes the connection gracefully (the engine's).
    """

    def __init__(
        self, options: RelayOptions, dialer: Dialer, linger: Callable[[socket.socket, bytes], None]
    ) -> None:
        self._options = options
        self._dial = dialer
        self._linger = linger

    def for_role(self, role: Role) -> Handler:
        """The handler of ``role``'s connections."""
        if isinstance(role, EnclaveEgress):
            return self.connect
        if isinstance(role, ParentEgress):
            return self.tunnel
        if isinstance(role, Forward):
            return self.forward
        return self.logs

    async def forward(self, listener: Listener, sock: socket.socket) -> socket.socket | None:
        """A forward: dial the fixed destination, or tunnel to it through the parent."""
        role = listener.role
        assert isinstance(role, Forward)  # noqa: S101
        try:
            if role.tunnel_to is not None:
                host, port = role.tunnel_to
                return await self._open_tunnel(role.to, TunnelRequest(host=host, port=port))
            if role.allowlist is not None:
                assert role.to.host is not None  # noqa: S101 - checked at construction
                assert role.to.port is not None  # noqa: S101
                return await self._dial.destination(
                    role.allowlist, normalize_host(role.to.host), role.to.port
                )
            return await self._dial.address(role.to, what=str(role.to))
        except Refused as refused:
            self._log_refusal(listener, refused)
            sock.close()
            return None

    async def connect(self, listener: Listener, sock: socket.socket) -> socket.socket | None:
        """Enclave egress: a CONNECT request, then a tunnel through the parent."""
        role = listener.role
        assert isinstance(role, EnclaveEgress)  # noqa: S101
        loop = asyncio.get_running_loop()
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
        except Refused as refused:
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

    async def _open_tunnel(self, parent: Address, request: TunnelRequest) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            upstream = await self._dial.address(parent, what=f"the parent relay at {parent}")
        except Refused as refused:
            refused.code = "parent_unavailable"
            raise
        wait = self._options.handshake_timeout + self._options.connect_timeout
        try:
            async with asyncio.timeout(wait):
                await loop.sock_sendall(upstream, encode_request(request.host, request.port))
                prefix = await recv_exactly(loop, upstream, PREFIX_SIZE)
                rest = await recv_exactly(loop, upstream, reply_size(prefix) - PREFIX_SIZE)
            reply = parse_reply(prefix + rest)
        except TimeoutError:
            upstream.close()
            raise Refused(
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
            raise Refused(
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
            raise Refused.of(reply.status, reply.reason or f"parent answered {reply.status.name}")
        return upstream

    async def tunnel(self, listener: Listener, sock: socket.socket) -> socket.socket | None:
        """Parent egress: a tunnel header, then the allowlisted destination."""
        role = listener.role
        assert isinstance(role, ParentEgress)  # noqa: S101
        loop = asyncio.get_running_loop()
        counters = listener.counters
        try:
            async with asyncio.timeout(self._options.handshake_timeout):
                prefix = await recv_exactly(loop, sock, PREFIX_SIZE)
                rest = await recv_exactly(loop, sock, request_size(prefix) - PREFIX_SIZE)
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
            upstream = await self._dial.destination(role.allowlist, request.host, request.port)
        except Refused as refused:
            self._log_refusal(listener, refused)
            self._linger(sock, encode_reply(refused.status, refused.reason))
            return None
        try:
            await loop.sock_sendall(sock, encode_reply(TunnelStatus.OK))
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def logs(self, listener: Listener, sock: socket.socket) -> socket.socket | None:
        """A log sink: append and acknowledge lines until the sender closes."""
        role = listener.role
        assert isinstance(role, LogSink)  # noqa: S101
        out = listener.log_file
        assert out is not None  # noqa: S101 - opened at bind
        loop = asyncio.get_running_loop()
        counters = listener.counters
        splitter = LineSplitter(role.max_line, max_record=role.max_record)
        peer, key = peer_of(sock)
        enclave = role.enclaves.get(key) if key is not None else None
        received = 0
        acks = bytearray()
        try:
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                counters.bytes_up += len(data)
                lines, ended = splitter.feed(data, received_stamp(peer, enclave))
                if lines:
                    try:
                        out.write(lines)
                    except OSError as exc:  # unacknowledged: the sender keeps the lines
                        _LOG.warning("%s: cannot write log lines: %s", role.name, why(exc))
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
            tail = splitter.finish(received_stamp(peer, enclave)) if not data else []
            if tail:
                out.write(tail)
                counters.records += len(tail)
        except OSError as exc:
            _LOG.debug("%s: connection ended: %s", role.name, why(exc))
        finally:
            sock.close()
        return None

    def _log_refusal(self, listener: Listener, refused: Refused) -> None:
        count(listener.counters, refused.counter)
        _LOG.info("%s: %s", listener.role.name, refused.reason)
