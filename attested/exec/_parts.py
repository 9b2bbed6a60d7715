"""Step 2: the long-running parts ``exec`` runs in its own process, as one lifecycle part.

:class:`EnclaveParts` is the local API (:class:`attested.service.Service`, with its
in-process enclave-egress relay and its counters) plus one relay for the
``[[hosts]]`` tunnels and the ``[[ingress]]`` forwards. Both follow
:class:`attested._runtime.lifecycle.Lifecycle`; together they are one too: ``start()``
all or nothing, ``stop(deadline)`` in parallel within one deadline, ``running`` while
both serve, ``listeners`` of both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from attested._runtime.lifecycle import Scoped, stop_all
from attested.errors import ConfigurationError, RelayUnavailable
from attested.exec._config import ExecConfig
from attested.kms.credentials import CredentialsProvider
from attested.net import Address, parse_address
from attested.provider import AttestationProvider
from attested.relay import Forward, Relay, Role
from attested.service import Service

__all__ = ["EnclaveParts", "relay_roles"]

log = logging.getLogger("attested.exec")


def relay_roles(config: ExecConfig) -> list[Role]:
    """The ``[[hosts]]`` tunnels (one per address and port) and ``[[ingress]]`` forwards."""
    parent = parse_address(config.service.egress_parent)
    roles: list[Role] = []
    for host in config.hosts:
        for port in host.ports:
            listen = Address(kind="tcp", host=host.address, port=port)
            roles.append(
                Forward(
                    listen=listen,
                    to=parent,
                    tunnel_to=(host.name, port),
                    name=f"{host.name}:{port}",
                )
            )
    for index, ingress in enumerate(config.ingress):
        roles.append(Forward(listen=ingress.listen, to=ingress.to, name=f"ingress-{index}"))
    return roles


class EnclaveParts(Scoped):
    """The local API and the relays of one ``attested exec``, started and stopped together.

    Args:
        config: the checked configuration.
        attestation: the NSM (shared with the secrets' KMS client; not closed here).
        credentials: the AWS credentials (shared likewise).
    """

    def __init__(
        self,
        config: ExecConfig,
        *,
        attestation: AttestationProvider,
        credentials: CredentialsProvider,
    ) -> None:
        self.config = config
        roles = relay_roles(config)
        self._relay = Relay(roles) if roles else None
        self.service = Service(
            config.service,
            attestation=attestation,
            credentials=credentials,
            relays=[self._relay] if self._relay is not None else [],
        )
        self._started = False

    def start(self) -> None:
        """Start the local API (and its egress relay), then the hosts and ingress relay.

        Raises:
            ConfigurationError: a listener cannot be bound; nothing is left running.
            AttestedError: the service could not start (see ``Service.start``).
        """
        self.service.start()
        self._started = True
        if self._relay is None:
            return
        try:
            self._relay.start()
        except RelayUnavailable as exc:
            self.service.stop(deadline=1.0)
            self._started = False
            raise ConfigurationError(f"[[hosts]] or [[ingress]]: {exc}") from exc
        except BaseException:
            self.service.stop(deadline=1.0)
            self._started = False
            raise

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop both at once within ``deadline``; safe twice and before start."""
        parts: dict[str, Service | Relay] = {"service": self.service}
        if self._relay is not None:
            parts["relays"] = self._relay
        self._started = False
        return stop_all(parts, deadline)

    @property
    def running(self) -> bool:
        """Whether the local API and the relay (if any) are serving."""
        relay_ok = self._relay is None or self._relay.running
        return self._started and self.service.running and relay_ok

    @property
    def listeners(self) -> Mapping[str, Address]:
        """Listener name to bound address: the service's, then the relay's."""
        found = dict(self.service.listeners)
        if self._relay is not None:
            found.update(self._relay.listeners)
        return MappingProxyType(found)

    def egress_proxy(self) -> str | None:
        """The HTTP CONNECT proxy URL for KMS and the stores (``kms.proxy``, or ours)."""
        if self.config.service.kms_proxy:
            return self.config.service.kms_proxy
        egress = self.service.listeners.get("egress")
        if egress is None or egress.host is None:
            return None
        host = f"[{egress.host}]" if ":" in egress.host else egress.host
        return f"http://{host}:{egress.port}"
