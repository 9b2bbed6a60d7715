"""Name resolution for the parent's egress relay.

The standard library's ``getaddrinfo`` does not return the DNS TTL, so the relay cannot
honour TTLs by caching itself. The decision (ADR 0042): resolve **per connection**
through the system resolver, which honours TTLs when a caching resolver runs
(systemd-resolved, nscd, or the VPC resolver behind ``/etc/resolv.conf``), and
coalesce concurrent lookups of the same name into one call. An optional positive cache
(``cache_seconds``, at most 60) trades freshness for fewer lookups: use it only if your
records' TTLs are at least that long. Every address returned is tried, in order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, Protocol

from attested.relay._allowlist import IPAddress, normalize_host

__all__ = ["MAX_ADDRESSES", "Resolver", "StaticResolver", "SystemResolver"]

MAX_ADDRESSES = 16
"""At most this many addresses of one name are tried."""
_MAX_CACHE_SECONDS = 60.0
_MAX_CACHE_ENTRIES = 1024


class Resolver(Protocol):
    """Turns a host name into addresses to try, in order."""

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Resolve ``host``.

        Args:
            host: a canonical host name (never an IP literal).
            port: the destination port (some resolvers answer per service).

        Returns:
            The addresses, best first; empty if the name has none.

        Raises:
            OSError: the name could not be resolved.
        """
        ...


class SystemResolver:
    """``getaddrinfo`` through the event loop's executor, with in-flight coalescing.

    Args:
        family: ``4`` or ``6`` to keep only that family (vsock-proxy's ``-4``/``-6``);
            ``None`` for both, in the order the system resolver gives.
        cache_seconds: keep positive answers this long (0, the default, resolves per
            connection; at most 60).
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        *,
        family: Literal[4, 6] | None = None,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if family not in (None, 4, 6):
            raise ValueError("family must be 4, 6 or None")
        if not 0 <= cache_seconds <= _MAX_CACHE_SECONDS:
            raise ValueError(f"cache_seconds must be from 0 to {_MAX_CACHE_SECONDS:g}")
        self._family = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._inflight: dict[tuple[str, int], asyncio.Future[tuple[IPAddress, ...]]] = {}
        self._cache: dict[tuple[str, int], tuple[float, tuple[IPAddress, ...]]] = {}

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Resolve ``host`` (see :class:`Resolver`)."""
        key = (host, port)
        if self._cache_seconds:
            hit = self._cache.get(key)
            if hit is not None and self._clock() < hit[0]:
                return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[IPAddress, ...]] = loop.create_future()
        self._inflight[key] = future
        try:
            infos = await loop.getaddrinfo(host, port, family=self._family, type=socket.SOCK_STREAM)
            addresses = _unique(info[4][0] for info in infos)
        except asyncio.CancelledError:
            _fail(future, OSError("the name lookup was cancelled"))
            raise
        except OSError as exc:
            _fail(future, exc)
            raise
        except (UnicodeError, ValueError) as exc:
            error = OSError(f"cannot resolve {host!r}: {exc}")
            _fail(future, error)
            raise error from exc
        finally:
            del self._inflight[key]
        future.set_result(addresses)
        if self._cache_seconds and addresses:
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (self._clock() + self._cache_seconds, addresses)
        return addresses


class StaticResolver:
    """A fixed name-to-addresses table, for tests, demos and air-gapped setups.

    Names not in the table go to ``fallback`` (like ``/etc/hosts`` before DNS), or fail
    to resolve like an unknown name would when there is none.

    Args:
        table: host name to IP literals, for example ``{"kms.test": ["127.0.0.1"]}``.
        fallback: the resolver for every other name (``None``: no other name resolves).

    Raises:
        ValueError: a name or an address is not valid.
    """

    def __init__(
        self, table: Mapping[str, Sequence[str]], *, fallback: Resolver | None = None
    ) -> None:
        self._fallback = fallback
        self._table = {
            normalize_host(name): tuple(ipaddress.ip_address(a) for a in addresses)
            for name, addresses in table.items()
        }

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Look ``host`` up in the table (see :class:`Resolver`)."""
        try:
            return self._table[host]
        except KeyError:
            if self._fallback is not None:
                return await self._fallback.resolve(host, port)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


def _fail(future: asyncio.Future[tuple[IPAddress, ...]], error: OSError) -> None:
    future.set_exception(error)
    future.exception()  # retrieved here; coalesced waiters, if any, re-raise it


def _unique(raw: Iterable[object]) -> tuple[IPAddress, ...]:
    seen: list[IPAddress] = []
    for text in raw:
        address = ipaddress.ip_address(str(text).partition("%")[0])
        if address not in seen:
            seen.append(address)
        if len(seen) >= MAX_ADDRESSES:
            break
    return tuple(seen)
