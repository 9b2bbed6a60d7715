"""The running service: the NSM, the KMS client, the app and its listeners, started and stopped."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Self

from attested.enclave import open_provider
from attested.errors import ConfigurationError, RelayUnavailable
from attested.kms import DataKey, KmsClient, NetworkSettings
from attested.kms.credentials import CredentialsProvider, EnvironmentCredentials, ParentCredentials
from attested.net import Address, parse_address
from attested.provider import AttestationProvider
from attested.relay import EnclaveEgress, Relay
from attested.service._app import OutsideApp, ServiceApp, ServiceMetrics
from attested.service._config import ServiceConfig
from attested.service._http import HttpServer, Request, Response
from attested.service.cache import CacheLimits, DataKeyCache

__all__ = ["Service"]

log = logging.getLogger("attested.service")

_KMS_POOL = 16  # concurrent HTTPS connections to KMS (through the egress relay)


class Service:
    """``attested serve`` as an object: :meth:`start`, :meth:`stop`, or ``with``.

    Args:
        config: the checked configuration.
        attestation: use this provider instead of opening ``config.nsm_backend`` (tests,
            embedding); the service does not close it.
        credentials: use these instead of ``config.credentials_source``.
        relays: relays running in this process whose ``stats()`` ``/metrics`` shows.

    Attributes:
        listeners: the bound address of every listener by kind (``unix``, ``tcp``,
            ``vsock``, and ``egress`` for the in-process egress relay), with the real port
            when 0 was configured; empty until started.
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
        self._servers: list[HttpServer] = []
        self._closers: list[Callable[[], None]] = []
        self.listeners: Mapping[str, Address] = MappingProxyType({})
        self.metrics: ServiceMetrics | None = None
        self._app: ServiceApp | None = None

    def start(self) -> None:
        """Open the NSM and the KMS client, then bind and serve every listener.

        Raises:
            AttestationUnavailable: the NSM backend cannot be opened.
            CredentialsUnavailable: ``environment`` credentials are not set.
            ConfigurationError: a listener cannot be bound (in use, no permission).
        """
        if self._servers:
            raise RuntimeError("the service is already running")
        config = self.config
        try:
            self._start(config)
        except BaseException:
            self._close_all(deadline=1.0)
            raise

    def _start(self, config: ServiceConfig) -> None:
        if self._given_attestation is not None:
            provider = self._given_attestation
            backend = str(getattr(provider, "backend", "custom"))
        else:
            opened = (
                open_provider(
                    "simulated",
                    state_dir=config.nsm_simulated_state or None,
                    pcrs=dict(config.nsm_simulated_pcrs) or None,
                )
                if config.nsm_backend == "simulated"
                else open_provider(config.nsm_backend)
            )
            self._closers.append(opened.close)
            provider, backend = opened, opened.backend
        relays = list(self._relays)
        proxy = config.kms_proxy or None
        bound: dict[str, Address] = {}
        if config.egress_listen:
            egress = Relay(
                [
                    EnclaveEgress(
                        listen=parse_address(config.egress_listen),
                        parent=parse_address(config.egress_parent),
                    )
                ]
            )
            try:
                (egress_address,) = egress.start()
            except RelayUnavailable as exc:
                raise ConfigurationError(f"egress.listen: {exc}") from exc

            def stop_egress() -> None:
                egress.stop(5.0)

            self._closers.append(stop_egress)
            relays.append(egress)
            bound["egress"] = egress_address
            if proxy is None:
                proxy = f"http://{_url_host(egress_address.host or '')}:{egress_address.port}"
            log.info("enclave-egress relay on %s -> %s", egress_address, config.egress_parent)
        credentials = self._given_credentials or (
            EnvironmentCredentials()
            if config.credentials_source == "environment"
            else ParentCredentials(config.credentials_parent)
        )
        kms = KmsClient(
            region=config.region,
            attestation=provider,
            credentials=credentials,
            network=NetworkSettings(
                endpoint_url=config.kms_endpoint_url or None,
                proxy=proxy,
                ca_bundle=config.kms_ca_bundle or None,
                max_pool_connections=_KMS_POOL,
            ),
        )
        self._closers.append(kms.close)
        botocore_credentials = credentials.botocore_credentials()

        def expiry() -> float | None:
            expires: Any = getattr(botocore_credentials, "_expiry_time", None)
            if not isinstance(expires, datetime):
                return None
            return (expires - datetime.now(UTC)).total_seconds()

        cache: DataKeyCache[DataKey] | None = None
        if config.cache_enabled:
            cache = DataKeyCache(
                CacheLimits(
                    max_age=config.cache_max_age,
                    max_messages=config.cache_max_messages,
                    max_bytes=config.cache_max_bytes,
                ),
                clock=time.monotonic,
            )
            self._closers.append(cache.clear)
        metrics = ServiceMetrics(
            cache=cache,
            credentials_expiry=expiry,
            relay_stats=[relay.stats for relay in relays],
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
        )
        self._app = app
        for kind, address in config.addresses().items():
            try:
                if address.kind == "unix" and address.path:
                    # /run/attested usually does not exist in a fresh enclave image.
                    os.makedirs(os.path.dirname(address.path), mode=0o755, exist_ok=True)
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
            self._servers.append(server)
            server.start()
            bound[kind] = server.bound
            log.info("listening on %s", server.bound)
        self.listeners = MappingProxyType(bound)
        log.info(
            "attested service ready: region %s, NSM %s, %d allowed key(s), operations %s",
            config.region,
            backend,
            len(config.allowed_keys),
            ",".join(sorted(config.operations)),
        )

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop accepting, let in-flight requests finish, remove the socket file.

        Args:
            deadline: seconds to wait for in-flight requests.

        Returns:
            ``True`` if every request finished in time.
        """
        return self._close_all(deadline=deadline)

    def _close_all(self, *, deadline: float) -> bool:
        end = time.monotonic() + deadline
        servers, self._servers = self._servers, []
        results: list[bool] = []

        def stop(server: HttpServer) -> None:
            results.append(server.stop(deadline=max(0.0, end - time.monotonic())))

        # Every listener drains at once, within one shared deadline.
        threads = [threading.Thread(target=stop, args=(s,), daemon=True) for s in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clean = all(results) and len(results) == len(servers)
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
        if servers:
            log.info("attested service stopped%s", "" if clean else " (requests cut off)")
        self.listeners = MappingProxyType({})
        return clean

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
