"""The service's metrics: their definitions and the Prometheus text exposition.

:class:`ServiceMetrics` defines every metric ``/metrics`` shows (requests, latencies,
KMS errors, credentials, the data-key cache, relays). Below it, without a client
library: counters, gauges (read from callables at scrape time) and histograms with fixed
buckets, each with labels. Thread-safe. Rendered in the text format version 0.0.4. Label
values never carry secrets: routes, error types, key aliases the operator configured.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from attested.service.cache import DataKeyCache

__all__ = ["Counter", "Gauge", "Histogram", "Registry", "ServiceMetrics"]

_DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        return tuple(str(v) for v in labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1) to the count for ``labels``."""
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The current count for ``labels``."""
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        """Exposition lines."""
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items
        ]


class Gauge(_Metric):
    """Values read from a callable at scrape time: ``{label values: value}``."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[Sequence[str], float]]],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        self._read = read

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = self.header()
        for values, value in sorted(self._read(), key=lambda item: tuple(item[0])):
            lines.append(f"{self.name}{_labels(self.label_names, values)} {_number(value)}")
        return lines


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = _DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._data: dict[tuple[str, ...], tuple[list[int], float, int]] = {}

    def observe(self, value: float, *labels: str) -> None:
        """Record one observation."""
        key = self._key(labels)
        with self._lock:
            counts, total, count = self._data.get(key, ([0] * len(self.buckets), 0.0, 0))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._data[key] = (counts, total + value, count + 1)

    def count(self, *labels: str) -> int:
        """How many observations were recorded for ``labels``."""
        with self._lock:
            entry = self._data.get(self._key(labels))
        return 0 if entry is None else entry[2]

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(c), t, n)) for k, (c, t, n) in self._data.items())
        for key, (counts, total, count) in items:
            for bound, n in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {n}")
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{_labels(self.label_names, key, inf)} {count}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {count}")
        return lines


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """Holds metrics and renders them all."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def register(self, metric: _M) -> _M:
        """Add a metric (names must be unique) and return it."""
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The text exposition of every metric."""
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class _ReadCounter(Gauge):
    """A counter whose values are read at scrape time (counts kept elsewhere)."""

    kind = "counter"


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
        self._relay_stats = tuple(relay_stats)
        self._register_relays()

    def _register_cache(self, cache: DataKeyCache[Any] | None) -> None:
        def read(value: Callable[[DataKeyCache[Any]], float]) -> Callable[[], list[Any]]:
            return lambda: [((), float(value(cache)))] if cache is not None else []

        reg = self.registry.register
        reg(
            _ReadCounter(
                "attested_service_datakey_cache_hits_total",
                "GenerateDataKey answers served from the data-key cache.",
                read(lambda c: c.hits),
            )
        )
        reg(
            _ReadCounter(
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

    def _register_relays(self) -> None:
        reg = self.registry.register
        for metric, attribute, help_text in (
            ("connections_total", "connections_total", "Connections accepted by relays."),
            ("bytes_up_total", "bytes_up", "Bytes relayed towards the destination."),
            ("bytes_down_total", "bytes_down", "Bytes relayed back from the destination."),
        ):
            reg(
                _ReadCounter(
                    f"attested_relay_{metric}",
                    help_text,
                    self._relay_reader(attribute),
                    ("listener",),
                )
            )
        reg(
            Gauge(
                "attested_relay_connections_active",
                "Relay connections open now.",
                self._relay_reader("connections_active"),
                ("listener",),
            )
        )
        reg(
            _ReadCounter(
                "attested_relay_refusals_total",
                "Relay connections refused, by listener and reason.",
                self._relay_refusals,
                ("listener", "reason"),
            )
        )

    def _relay_reader(self, attribute: str) -> Callable[[], Iterable[tuple[Sequence[str], float]]]:
        def read() -> Iterable[tuple[Sequence[str], float]]:
            rows = []
            for stats in self._relay_stats:
                for listener in stats().listeners:
                    rows.append(((listener.name,), float(getattr(listener, attribute))))
            return rows

        return read

    def _relay_refusals(self) -> Iterable[tuple[Sequence[str], float]]:
        rows = []
        for stats in self._relay_stats:
            for listener in stats().listeners:
                for reason, count in listener.refusals.items():
                    label = getattr(reason, "value", str(reason))
                    rows.append(((listener.name, str(label)), float(count)))
        return rows

    def render(self) -> str:
        """The text exposition."""
        return self.registry.render()
