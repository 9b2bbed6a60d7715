"""Dialling for the relay: where a connection goes, under the allowlist and the DNS rules.

:class:`Dialer` opens the upstream socket of a connection on the running loop: a
configured address (the operator chose it: no allowlist), or a destination the enclave
asked for (allowlisted, resolved per connection, addresses in forbidden ranges skipped
unless listed, each address an equal share of ``connect_timeout``). Every way a dial
fails is a :class:`Refused` carrying the answer for the client and the counter to bump.
Also the small socket helpers the relay modules share.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence

from attested.net import Address
from attested.relay._allowlist import Allowlist, IPAddress
from attested.relay._resolve import Resolver
from attested.relay._stats import Counters, Failure, Refusal
from attested.relay._tunnel import TunnelStatus

__all__ = ["Dialer", "Refused", "count", "ip_literal", "nodelay", "recv_exactly", "why"]

# The engine's logger name, kept when the engine was split (operators filter on it).
_LOG = logging.getLogger("attested.relay._engine")


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
    """

    def __init__(self, connect_timeout: float, resolver: Resolver) -> None:
        self._timeout = connect_timeout
        self._resolver = resolver

    async def connect(
        self, family: int, sockaddr: tuple[str, int] | tuple[int, int] | str, timeout: float
    ) -> socket.socket:
        """Connect a new non-blocking socket within ``timeout`` seconds."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            nodelay(sock)
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


def why(exc: BaseException) -> str:
    """A short reason for an OS error, for messages and logs."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)  # asyncio puts its own text in strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
