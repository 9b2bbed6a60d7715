"""vsock relays: egress from the enclave, ingress to it, the parent's allowlist, logs.

An enclave has only vsock. These relays connect it to the world with one engine and
several roles (see ``docs/relay.md``):

* :class:`EnclaveEgress`: an HTTP CONNECT proxy inside the enclave; each tunnel is a
  new connection to the parent carrying a small header naming the destination.
* :class:`ParentEgress`: on the parent, accepts those tunnels and dials the destination
  if the :class:`Allowlist` (vsock-proxy's YAML format) permits it, with DNS answers
  checked against the address rules (loopback, metadata and other special ranges).
* :class:`Forward`: raw bytes from one address to another (ingress both ways, apps that
  cannot use a proxy, and vsock-proxy-style fixed destinations with ``allowlist=``).
* :class:`LogSink` and :class:`VsockLogHandler`: JSON log lines out of the enclave
  through a bounded buffer that never blocks the app.

A :class:`Relay` runs any mix of roles on one event loop in a background thread::

    relay = Relay([EnclaveEgress(listen=parse_address("tcp:127.0.0.1:3128"),
                                 parent=parse_address("vsock:3:8000"))])
    relay.start()
    ...
    relay.stats()   # RelayStats: per-listener counters, frozen
    relay.stop(deadline=10.0)
"""

from __future__ import annotations

from attested.errors import RelayUnavailable
from attested.relay._allowlist import AllowEntry, Allowlist, forbidden_range
from attested.relay._engine import Relay
from attested.relay._load import DEFAULT_ALLOWLIST_PATH, load_allowlist
from attested.relay._logs import LogShipperStats, VsockLogHandler
from attested.relay._resolve import Resolver, StaticResolver, SystemResolver
from attested.relay._roles import EnclaveEgress, Forward, LogSink, ParentEgress, RelayOptions, Role
from attested.relay._stats import Failure, ListenerStats, Refusal, RelayStats

__all__ = [
    "AllowEntry",
    "Allowlist",
    "DEFAULT_ALLOWLIST_PATH",
    "EnclaveEgress",
    "Failure",
    "Forward",
    "ListenerStats",
    "LogShipperStats",
    "LogSink",
    "ParentEgress",
    "Refusal",
    "Relay",
    "RelayOptions",
    "RelayStats",
    "RelayUnavailable",
    "Resolver",
    "Role",
    "StaticResolver",
    "SystemResolver",
    "VsockLogHandler",
    "forbidden_range",
    "load_allowlist",
]
