"""Seeded, bounded fault injection (see :class:`~attested.emulator.FaultConfig`)."""

from __future__ import annotations

import enum
import random
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass

from attested.emulator._config import FaultConfig

__all__ = ["Fault", "FaultDecision", "FaultInjector"]


class Fault(enum.Enum):
    """What happens to one request."""

    NONE = "none"
    DROP = "drop"
    THROTTLE = "throttle"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultDecision:
    """The fault for one request, and the delay to add before answering."""

    fault: Fault
    delay: float


_NO_FAULT = FaultDecision(fault=Fault.NONE, delay=0.0)


class FaultInjector:
    """Draws one decision per request from a generator seeded by the configuration.

    The n-th request the emulator receives always gets the n-th decision of the
    sequence, whatever its operation; requests for operations outside
    ``config.operations`` ignore theirs. Thread-safe.
    """

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)  # noqa: S311 - test faults, not secrets
        self._lock = threading.Lock()
        self._injected = 0
        self._counts = dict.fromkeys((f.value for f in Fault if f is not Fault.NONE), 0)
        self._counts["latency"] = 0

    def decide(self, operation: str) -> FaultDecision:
        """The decision for the next request."""
        config = self.config
        if not config.active:
            return _NO_FAULT
        with self._lock:
            draw = self._rng.random()
            jitter = self._rng.random() * config.latency_jitter
            if config.operations is not None and operation not in config.operations:
                return _NO_FAULT
            fault = Fault.NONE
            if config.max_faults is None or self._injected < config.max_faults:
                if draw < config.drop_rate:
                    fault = Fault.DROP
                elif draw < config.drop_rate + config.throttle_rate:
                    fault = Fault.THROTTLE
                elif draw < config.drop_rate + config.throttle_rate + config.error_rate:
                    fault = Fault.ERROR
            if fault is not Fault.NONE:
                self._injected += 1
                self._counts[fault.value] += 1
            delay = config.latency + jitter
            if delay > 0:
                self._counts["latency"] += 1
        return FaultDecision(fault=fault, delay=delay)

    @property
    def counts(self) -> Mapping[str, int]:
        """How many of each fault were injected (``latency`` counts delayed requests)."""
        with self._lock:
            return types.MappingProxyType(dict(self._counts))
