"""The running service: the NSM, the KMS client, the app and its listeners, started and stopped."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from attested._runtime.http import HttpServer as RuntimeServer
from attested._runtime.lifecycle import Scoped, stop_all
from attested._runtime.listen import make_socket_directory
from attested.enclave import NsmProvider, open_provider
from attested.errors import ConfigurationError, RelayUnavailable
from attested.kms import DataKey, KmsClient, NetworkSettings
from attested.kms.credentials import (
    CredentialsProvider,
    EnvironmentCredentials,
    ImdsCredentials,
    ParentCredentials,
)
from attested.net import Address, parse_address
from attested.nitrotpm import NitroTpmProvider
from attested.provider import AttestationProvider
from attested.relay import EnclaveEgress, Relay
from attested.service._app import OutsideApp, ServiceApp
from attested.service._config import SIMULATED_BACKENDS, ServiceConfig
from attested.service._health import CredentialsProbe, Health
from attested.service._http import HttpServer, Request, Response
from attested.service._kms_endpoint import open_kms_endpoint
from attested.service.cache import CacheLimits, DataKeyCache
from attested.service.metrics import ServiceMetrics

__all__ = ["Service", "open_attestation", "open_credentials"]

log = logging.getLogger("attested.service")


def open_credentials(config: ServiceConfig) -> CredentialsProvider:
    """The AWS credentials that ``config``'s ``credentials.*`` keys name."""
    if config.credentials_source == "environment":
        return EnvironmentCredentials()
    if config.credentials_source == "imds":
        return ImdsCredentials(base_url=config.credentials_imds_url or None)
    return ParentCredentials(config.credentials_parent)


def open_attestation(config: ServiceConfig) -> NsmProvider | NitroTpmProvider:
    """Open the source of attestation documents that ``config``'s ``nsm.*`` keys name.

    Raises:
        AttestationUnavailable: the device, library or tool is missing.
        ConfigurationError: the simulator's state directory cannot be used.
    """
    if config.nsm_backend in SIMULATED_BACKENDS:
        return open_provider(
            config.nsm_backend,
            state_dir=config.nsm_simulated_state or None,
            pcrs=dict(config.nsm_simulated_pcrs) or None,
        )
    return open_provider(
        config.nsm_backend,
        nitrotpm_device=config.nsm_nitrotpm_device or None,
        nitrotpm_tool=config.nsm_nitrotpm_tool or None,
    )


_KMS_POOL = 16  # concurrent HTTPS connections to KMS (through the egress relay)


class Service(Scoped):
    """``attested serve`` as an object, a :class:`attested._runtime.lifecycle.Lifecycle` part.

    Args:
        config: the checked configuration.
        attestation: use this provider instead of opening ``config.nsm_backend`` (tests,
            embedding); the service does not close it.
        credentials: use these instead of ``config.credentials_source``.
        relays: relays running in this process whose ``stats()`` ``/metrics`` shows.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        attestation: AttestationProvider | None = None,
        credentials: CredentialsProvider | None = None,
        relays: Sequence[Any] = (),
    ) -> None:
        self.config = config
        self._given_attestation = attestation
        self._given_credentials = credentials
        self._relays = tuple(relays)
        self._servers: dict[str, RuntimeServer] = {}
        self._egress: Relay | None = None
        self._closers: list[Callable[[], object]] = []
        self._listeners: Mapping[str, Address] = MappingProxyType({})
        self.metrics: ServiceMetrics | None = None
        self._app: ServiceApp | None = None

    @property
    def listeners(self) -> Mapping[str, Address]:
        """Bound addresses (real ports) by name.

        ``unix``, ``tcp``, ``vsock`` (the API), ``egress`` and ``kms_endpoint``.
        """
        return self._listeners

    @property
    def running(self) -> bool:
        """Whether the service is serving (and its in-process egress relay, if any, too)."""
        return bool(self._servers) and (self._egress is None or self._egress.running)

    def start(self) -> None:
        """Open the NSM and the KMS client, then bind and serve every listener.

        Raises:
            AttestationUnavailable: the NSM backend cannot be opened.
            CredentialsUnavailable: ``environment`` credentials are not set.
            ConfigurationError: a listener cannot be bound (in use, no permission).
        """
        if self._servers:
            raise RuntimeError("the service is already running")
        try:
            self._start(self.config)
        except BaseException:
            self.stop(deadline=1.0)
            raise

    def _start(self, config: ServiceConfig) -> None:
        provider, backend = self._attestation(config)
        bound: dict[str, Address] = {}
        egress = self._start_egress(config, bound)
        proxy = config.kms_proxy or (
            None if egress is None else f"http://{_url_host(egress.host or '')}:{egress.port}"
        )
        credentials = self._given_credentials or open_credentials(config)
        network = NetworkSettings(
            endpoint_url=config.kms_endpoint_url or None,
            proxy=proxy,
            ca_bundle=config.kms_ca_bundle or None,
            max_pool_connections=_KMS_POOL,
        )
        kms = KmsClient(
            region=config.region, attestation=provider, credentials=credentials, network=network
        )
        self._closers.append(kms.close)
        expiry = _seconds_to_expiry(credentials.botocore_credentials())
        health = Health()
        health.saw("nsm", True, f"the {backend} NSM opened at start")
        probe = CredentialsProbe(
            health, lambda: credentials.botocore_credentials().get_frozen_credentials()
        )
        cache = self._cache(config)
        relays = [*self._relays, *([self._egress] if self._egress is not None else [])]
        metrics = ServiceMetrics(
            cache=cache, credentials_expiry=expiry, relay_stats=[r.stats for r in relays]
        )
        self.metrics = metrics
        app = ServiceApp(
            config=config,
            kms=kms,
            attestation=provider,
            metrics=metrics,
            cache=cache,
            nsm_backend=backend,
            credentials_expiry=expiry,
            health=health,
            recheck=probe.maybe_recheck,
        )
        self._app = app
        self._listen(config, app, bound)
        if config.kms_endpoint_listen:
            self._listen_kms_endpoint(config, kms, credentials, network, metrics, bound)
        self._listeners = MappingProxyType(bound)
        probe.start()
        self._closers.append(probe.stop)
        log.info(
            "attested service ready: region %s, NSM %s, %d allowed key(s), operations %s",
            config.region,
            backend,
            len(config.allowed_keys),
            ",".join(sorted(config.operations)),
        )

    def _attestation(self, config: ServiceConfig) -> tuple[AttestationProvider, str]:
        if self._given_attestation is not None:
            given = self._given_attestation
            return given, str(getattr(given, "backend", "custom"))
        opened = open_attestation(config)
        self._closers.append(opened.close)
        return opened, opened.backend

    def _start_egress(self, config: ServiceConfig, bound: dict[str, Address]) -> Address | None:
        """Start the in-process enclave-egress relay, if configured; its bound address."""
        if not config.egress_listen:
            return None
        listen, parent = parse_address(config.egress_listen), parse_address(config.egress_parent)
        egress = Relay([EnclaveEgress(listen=listen, parent=parent)])
        try:
            (address,) = egress.start()
        except RelayUnavailable as exc:
            raise ConfigurationError(f"egress.listen: {exc}") from exc
        self._egress = egress
        # After the listeners: requests draining at stop may still need KMS through it.
        self._closers.append(functools.partial(egress.stop, 5.0))
        bound["egress"] = address
        log.info("enclave-egress relay on %s -> %s", address, config.egress_parent)
        return address

    def _cache(self, config: ServiceConfig) -> DataKeyCache[DataKey] | None:
        if not config.cache_enabled:
            return None
        cache: DataKeyCache[DataKey] = DataKeyCache(
            CacheLimits(
                max_age=config.cache_max_age,
                max_messages=config.cache_max_messages,
                max_bytes=config.cache_max_bytes,
            ),
            clock=time.monotonic,
        )
        self._closers.append(cache.clear)
        return cache

    def _listen(self, config: ServiceConfig, app: ServiceApp, bound: dict[str, Address]) -> None:
        for kind, address in config.addresses().items():
            try:
                if address.kind == "unix" and address.path:
                    made = make_socket_directory(address.path)  # only the last component
                    if made is not None:
                        log.info("created the directory %s for the socket", made)
                server = HttpServer(
                    address,
                    app_for_listener(kind, app, config),
                    max_body=config.max_body,
                    idle_timeout=config.idle_timeout,
                    max_connections=config.max_connections,
                    socket_mode=config.api_unix_mode,
                )
            except OSError as exc:
                raise ConfigurationError(
                    f"api.{kind}: cannot listen on {address}: {exc.strerror or exc}"
                ) from exc
            self._servers[kind] = server
            server.start()
            bound[kind] = server.address
            log.info("listening on %s", server.address)

    def _listen_kms_endpoint(
        self,
        config: ServiceConfig,
        kms: KmsClient,
        credentials: CredentialsProvider,
        network: NetworkSettings,
        metrics: ServiceMetrics,
        bound: dict[str, Address],
    ) -> None:
        """The KMS-compatible endpoint for stock SDKs (``[kms_endpoint]``, ADR 0090)."""
        try:
            server, plain = open_kms_endpoint(
                config,
                kms=kms,
                credentials=credentials.botocore_credentials(),
                network=network,
                metrics=metrics,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"kms_endpoint.listen: cannot listen on {config.kms_endpoint_listen}: "
                f"{exc.strerror or exc}"
            ) from exc
        self._closers.append(plain.close)
        self._servers["kms_endpoint"] = server
        server.start()
        bound["kms_endpoint"] = server.address
        log.info(
            "KMS endpoint listening on %s (attested: %s; ReEncrypt %s)",
            server.address,
            ",".join(sorted(o for o in config.operations if o != "attestation")),
            "allowed" if config.kms_endpoint_allow_reencrypt else "refused",
        )

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, let in-flight requests finish, remove the socket file.

        Every listener drains at once, within the one deadline; then the egress relay,
        the KMS client and the NSM are closed. Safe to call twice, and before start.

        Args:
            deadline: seconds to wait for in-flight requests.

        Returns:
            ``True`` if every request finished in time.
        """
        servers, self._servers = self._servers, {}
        clean = stop_all(servers, deadline)
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
        if servers:
            log.info("attested service stopped%s", "" if clean else " (requests cut off)")
        self._egress = None
        self._listeners = MappingProxyType({})
        return clean


def app_for_listener(
    kind: str, app: Callable[[Request], Response], config: ServiceConfig
) -> Callable[[Request], Response]:
    """What one listener serves: the vsock listener faces the parent, outside the enclave.

    Args:
        kind: ``unix``, ``tcp`` (loopback only, checked by the configuration) or ``vsock``.
        app: the full API.
        config: the configuration (``api_vsock_allow_secrets``).
    """
    if kind != "vsock":
        return app
    if config.api_vsock_allow_secrets:
        log.warning(
            "api.vsock_allow_secrets is set: the whole API, plaintexts and keys included, "
            "is served over vsock to the parent instance"
        )
        return app
    return OutsideApp(app)


def _seconds_to_expiry(credentials: object) -> Callable[[], float | None]:
    """Seconds until botocore credentials expire (``None``: they do not say)."""

    def expiry() -> float | None:
        expires: Any = getattr(credentials, "_expiry_time", None)
        if not isinstance(expires, datetime):
            return None
        return (expires - datetime.now(UTC)).total_seconds()

    return expiry


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
