"""Running everything a :class:`ParentConfig` describes, in one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Self

from attested._runtime.lifecycle import Scoped, stop_all
from attested.net import Address
from attested.parent._config import CredentialsConfig, EgressConfig, ParentConfig
from attested.parent._credentials import (
    CredentialServer,
    CredentialSource,
    botocore_source,
    imds_source,
)
from attested.parent._metrics import MetricsEndpoint, parent_registry
from attested.relay import (
    Forward,
    ListenerStats,
    LogSink,
    ParentEgress,
    Relay,
    Resolver,
    StaticResolver,
    SystemResolver,
)
from attested.relay._load import warn_if_exposed

__all__ = ["Parent"]

_LOG = logging.getLogger("attested.parent")


class Parent(Scoped):
    """The parent instance's companion: egress relay, credentials, ingress, log sink.

    Each part runs on its own thread (one relay event loop per listener, so that a slow
    log disk or a busy ingress never delays the enclave's egress), and all of them
    start and stop together (a :class:`attested._runtime.lifecycle.Lifecycle` of them)::

        config = load_parent_config("/etc/attested/parent.toml")
        with Parent(config) as parent:
            parent.listeners["egress"]      # Address, with the bound port
            ...

    Listener names: ``egress``, ``credentials``, ``ingress-0``, ``ingress-1``, ...,
    ``logs`` (see :meth:`ParentConfig.listener_names`).

    Args:
        config: what to run.
        credential_source: overrides the source named in ``[credentials]`` (for
            embedding; the file's ``source`` is what the command line uses).
    """

    def __init__(
        self, config: ParentConfig, *, credential_source: CredentialSource | None = None
    ) -> None:
        self._config = config
        self._credential_source = credential_source
        self._relays: dict[str, Relay] = {}
        self._credentials: CredentialServer | None = None
        self._metrics: MetricsEndpoint | None = None
        self._listeners: dict[str, Address] = {}
        self._started = False
        self._lock = threading.Lock()

    @property
    def config(self) -> ParentConfig:
        """The configuration this runs."""
        return self._config

    @property
    def listeners(self) -> Mapping[str, Address]:
        """Listener name to bound address (actual ports for port 0); empty before start."""
        return MappingProxyType(dict(self._listeners))

    def start(self) -> Self:
        """Bind every listener and start serving; all or nothing.

        Returns:
            This object.

        Raises:
            UnavailableError: a listener cannot be bound or the log file opened
                (``RelayUnavailable``, ``CredentialsUnavailable``); whatever had started
                is stopped again.
            RuntimeError: started before.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a Parent can be started once")
            self._started = True
            try:
                self._start_all()
            except BaseException:
                stop_all(self._parts(), 0.0)
                self._listeners.clear()
                raise
        for name, address in self._listeners.items():
            _LOG.debug("parent: %s listening on %s", name, address)
        return self

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting everywhere at once; open connections get ``deadline`` seconds.

        Safe to call more than once and before :meth:`start`.

        Returns:
            ``True`` when every thread has ended; ``False`` if one is still running
            after the grace time (they are daemon threads and do not keep the process
            alive).
        """
        with self._lock:
            stopped = stop_all(self._parts(), deadline)
            self._listeners.clear()
            return stopped

    @property
    def running(self) -> bool:
        """Whether every part is serving (``False`` once any of them stopped)."""
        return bool(self._listeners) and all(part.running for part in self._parts().values())

    def reopen(self) -> None:
        """Reopen the log sink's file (call it on SIGHUP, after rotation)."""
        relay = self._relays.get("logs")
        if relay is not None:
            relay.reopen()

    def stats(self) -> Mapping[str, ListenerStats]:
        """Counters of every relay listener by name (the credential server has none)."""
        every = (stats for relay in self._relays.values() for stats in relay.stats().listeners)
        return MappingProxyType({stats.name: stats for stats in every})

    @property
    def credentials_served(self) -> int:
        """Credential requests answered so far (0 without ``[credentials]``)."""
        return 0 if self._credentials is None else self._credentials.served

    @property
    def credentials_refused(self) -> int:
        """Connections to the credential server refused because of their peer."""
        return 0 if self._credentials is None else self._credentials.refused

    def __repr__(self) -> str:
        return f"Parent({', '.join(self._config.listener_names())})"

    def _start_all(self) -> None:
        config = self._config
        if config.egress is not None:
            self._start_egress(config.egress)
        if config.credentials is not None:
            server = CredentialServer(
                config.credentials.listen,
                source=self._credential_source or _source(config.credentials),
                allowed_peers=config.credentials.allowed_peers or None,
            )
            self._credentials = server
            server.start()
            self._listeners.update(server.listeners)
        for index, forward in enumerate(config.ingress):
            name = f"ingress-{index}"
            role_ = Forward(listen=forward.listen, to=forward.to, name=name)
            self._run(name, Relay([role_], options=forward.options))
        if config.logs is not None:
            logs = config.logs
            sink = LogSink(
                listen=logs.listen,
                out=logs.out,
                max_line=logs.max_line,
                max_record=logs.max_record,
                enclaves=logs.enclaves,
                name="logs",
            )
            self._run("logs", Relay([sink]))
        if config.metrics is not None:
            self._start_metrics(config.metrics.listen)

    def _start_metrics(self, listen: Address) -> None:
        server = self._credentials
        registry = parent_registry(
            [relay.stats for relay in self._relays.values()],
            None if server is None else lambda: (server.served, server.refused),
        )
        self._metrics = MetricsEndpoint(listen, registry)
        self._metrics.start()
        self._listeners.update(self._metrics.listeners)

    def _start_egress(self, egress: EgressConfig) -> None:
        if egress.listen is not None:
            warn_if_exposed(egress.listen, "egress", _LOG)
            role = ParentEgress(listen=egress.listen, allowlist=egress.allowlist, name="egress")
            self._run("egress", Relay([role], options=egress.options, resolver=_resolver(egress)))
        for index, forward in enumerate(egress.forwards):
            name = f"egress-forward-{index}"
            warn_if_exposed(forward.listen, name, _LOG)
            to = Address(kind="tcp", host=forward.host, port=forward.port)
            # The relay's guarded forward: the allowlist, the DNS and address rules of
            # the CONNECT path, applied per connection (one copy of them: the Dialer).
            guarded = Forward(listen=forward.listen, to=to, allowlist=egress.allowlist, name=name)
            relay = Relay([guarded], options=forward.options, resolver=_resolver(egress))
            self._run(name, relay)

    def _run(self, name: str, relay: Relay) -> None:
        self._relays[name] = relay
        (address,) = relay.start()  # one role, named after the listener
        self._listeners[name] = address

    def _parts(self) -> dict[str, Relay | CredentialServer | MetricsEndpoint]:
        credentials = {} if self._credentials is None else {"credentials": self._credentials}
        metrics = {} if self._metrics is None else {"metrics": self._metrics}
        return {**self._relays, **credentials, **metrics}


def _resolver(egress: EgressConfig) -> Resolver:
    system = SystemResolver(family=egress.ip_version, cache_seconds=egress.dns_cache)
    if not egress.hosts:
        return system
    return StaticResolver(egress.hosts, fallback=system)


def _source(credentials: CredentialsConfig) -> CredentialSource:
    if credentials.source == "environment":
        return botocore_source()
    if credentials.imds_url is not None:
        return imds_source(base_url=credentials.imds_url)
    return imds_source()
