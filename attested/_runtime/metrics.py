"""Prometheus metrics without a client library: one home for every part that has them.

Counters, gauges (read from callables at scrape time) and histograms with fixed buckets,
each with labels; a :class:`Registry` renders them in the text format version 0.0.4.
Thread-safe. :func:`register_relay_metrics` adds the relay counters (``Relay.stats``
snapshots), shared by the service's ``/metrics`` and the parent's metrics endpoint. Label
values never carry secrets: routes, error types, listener names the operator configured.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "ReadCounter",
    "Registry",
    "register_relay_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


class ReadCounter(Gauge):
    """A counter whose values are read at scrape time (counts kept elsewhere)."""

    kind = "counter"


Rows = Iterable[tuple[Sequence[str], float]]


def register_relay_metrics(registry: Registry, relay_stats: Sequence[Callable[[], Any]]) -> None:
    """Add the relay counters, read at scrape time from ``Relay.stats`` snapshots.

    ``attested_relay_connections_total``, ``_bytes_up_total``, ``_bytes_down_total``,
    ``_records_total`` and ``_connections_active`` by listener; ``_refusals_total`` and
    ``_failures_total`` by listener and reason (every reason, zeros included).
    """
    stats = tuple(relay_stats)

    def reader(attribute: str) -> Callable[[], Rows]:
        def read() -> Rows:
            return [
                ((listener.name,), float(getattr(listener, attribute)))
                for snapshot in stats
                for listener in snapshot().listeners
            ]

        return read

    def by_reason(attribute: str) -> Callable[[], Rows]:
        def read() -> Rows:
            rows = []
            for snapshot in stats:
                for listener in snapshot().listeners:
                    for reason, count in getattr(listener, attribute).items():
                        label = getattr(reason, "value", str(reason))
                        rows.append(((listener.name, str(label)), float(count)))
            return rows

        return read

    reg = registry.register
    for metric, attribute, help_text in (
        ("connections_total", "connections_total", "Connections accepted by relays."),
        ("bytes_up_total", "bytes_up", "Bytes relayed towards the destination."),
        ("bytes_down_total", "bytes_down", "Bytes relayed back from the destination."),
        ("records_total", "records", "Log records written by log sinks."),
    ):
        reg(ReadCounter(f"attested_relay_{metric}", help_text, reader(attribute), ("listener",)))
    reg(
        Gauge(
            "attested_relay_connections_active",
            "Relay connections open now.",
            reader("connections_active"),
            ("listener",),
        )
    )
    reg(
        ReadCounter(
            "attested_relay_refusals_total",
            "Relay connections refused, by listener and reason.",
            by_reason("refusals"),
            ("listener", "reason"),
        )
    )
    reg(
        ReadCounter(
            "attested_relay_failures_total",
            "Relay connections that failed, by listener and reason.",
            by_reason("failures"),
            ("listener", "reason"),
        )
    )
