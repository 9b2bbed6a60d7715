"""The service's metrics: what ``/metrics`` shows.

:class:`ServiceMetrics` defines every metric (requests, latencies, KMS errors,
credentials, the data-key cache, relays). The primitives and the text exposition are the
runtime kit's (:mod:`attested._runtime.metrics`), re-exported here. Label values never
carry secrets: routes, error types, key aliases the operator configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attested._runtime.metrics import (
    Counter,
    Gauge,
    Histogram,
    ReadCounter,
    Registry,
    register_relay_metrics,
)
from attested.service.cache import DataKeyCache

__all__ = ["Counter", "Gauge", "Histogram", "Registry", "ServiceMetrics"]


class ServiceMetrics:
    """The service's Prometheus metrics.

    Args:
        cache: the data-key cache, if enabled (hits, misses, entries).
        credentials_expiry: seconds until the credentials expire, or ``None``.
        relay_stats: callables returning relay snapshots (``Relay.stats``).
    """

    def __init__(
        self,
        *,
        cache: DataKeyCache[Any] | None = None,
        credentials_expiry: Callable[[], float | None] = lambda: None,
        relay_stats: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.registry = Registry()
        reg = self.registry.register
        self.requests = reg(
            Counter(
                "attested_service_requests_total",
                "API requests by route and status.",
                ("route", "status"),
            )
        )
        self.latency = reg(
            Histogram(
                "attested_service_request_duration_seconds",
                "API request latency by route.",
                ("route",),
            )
        )
        self.kms_errors = reg(
            Counter(
                "attested_service_kms_errors_total",
                "KMS, credential and NSM failures by operation and error code.",
                ("operation", "type"),
            )
        )

        def expiry() -> Iterable[tuple[Sequence[str], float]]:
            seconds = credentials_expiry()
            return [] if seconds is None else [((), seconds)]

        reg(
            Gauge(
                "attested_service_credentials_expiry_seconds",
                "Seconds until the AWS credentials expire (absent when unknown).",
                expiry,
            )
        )
        self._register_cache(cache)
        register_relay_metrics(self.registry, relay_stats)

    def _register_cache(self, cache: DataKeyCache[Any] | None) -> None:
        def read(value: Callable[[DataKeyCache[Any]], float]) -> Callable[[], list[Any]]:
            return lambda: [((), float(value(cache)))] if cache is not None else []

        reg = self.registry.register
        reg(
            ReadCounter(
                "attested_service_datakey_cache_hits_total",
                "GenerateDataKey answers served from the data-key cache.",
                read(lambda c: c.hits),
            )
        )
        reg(
            ReadCounter(
                "attested_service_datakey_cache_misses_total",
                "GenerateDataKey requests that called KMS with the cache enabled.",
                read(lambda c: c.misses),
            )
        )
        reg(
            Gauge(
                "attested_service_datakey_cache_entries",
                "Data keys held in the cache now.",
                read(len),
            )
        )

    def render(self) -> str:
        """The text exposition."""
        return self.registry.render()
