"""A bounded cache of data keys for GenerateDataKey, off by default.

Bounds follow the AWS Encryption SDK's caching cryptographic materials manager: an entry
is used at most ``max_age`` after it was made, for at most ``max_messages`` requests,
and for at most ``max_bytes`` of data the callers said they will encrypt with it. Entries
are keyed by key id, data-key size and the exact encryption context, so a key is never
handed out for another context. The cache holds plaintext data keys in enclave memory
only; Python cannot zero memory, so entries are simply dropped when they expire.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["CacheLimits", "DataKeyCache"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheLimits:
    """Bounds of one cache entry, and of the cache.

    Attributes:
        max_age: seconds an entry may be used after it was made (required, > 0).
        max_messages: requests one entry may serve.
        max_bytes: total declared plaintext bytes one entry may cover.
        capacity: entries kept at most (least recently used dropped first).
    """

    max_age: float
    max_messages: int = 2**32
    max_bytes: int = 2**63 - 1
    capacity: int = 100

    def __post_init__(self) -> None:
        if not self.max_age > 0:
            raise ValueError("max_age must be positive")
        if self.max_messages < 1 or self.max_bytes < 1 or self.capacity < 1:
            raise ValueError("max_messages, max_bytes and capacity must be at least 1")


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T = field(repr=False)
    created: float
    messages: int = 0
    bytes: int = 0


class DataKeyCache(Generic[T]):
    """Thread-safe, bounded, keyed by (key id, size, encryption context).

    Args:
        limits: the bounds.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, limits: CacheLimits, *, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._entries: OrderedDict[tuple[object, ...], _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(key_id: str, size: str, context: Mapping[str, str] | None) -> tuple[object, ...]:
        """The cache key: exact key id, data-key size and encryption context."""
        return (key_id, size, tuple(sorted((context or {}).items())))

    def get_or_make(
        self, key: tuple[object, ...], make: Callable[[], T], *, plaintext_bytes: int = 0
    ) -> tuple[T, bool]:
        """Return a cached value that still has room for one more use, or make one.

        Returns:
            The value and whether it came from the cache.
        """
        if plaintext_bytes < 0:
            raise ValueError("plaintext_bytes must not be negative")
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._usable(entry, now, plaintext_bytes):
                entry.messages += 1
                entry.bytes += plaintext_bytes
                self._entries.move_to_end(key)
                self.hits += 1
                if entry.messages >= self.limits.max_messages:
                    del self._entries[key]
                return entry.value, True
            if entry is not None:
                del self._entries[key]
            self.misses += 1
        value = make()  # outside the lock: this is a KMS call
        if plaintext_bytes > self.limits.max_bytes:
            return value, False  # too large for any entry: use once, never cache
        with self._lock:
            fresh = _Entry(value=value, created=self._clock(), messages=1, bytes=plaintext_bytes)
            if fresh.messages < self.limits.max_messages:
                self._entries[key] = fresh
                self._entries.move_to_end(key)
                while len(self._entries) > self.limits.capacity:
                    self._entries.popitem(last=False)
        return value, False

    def _usable(self, entry: _Entry[T], now: float, plaintext_bytes: int) -> bool:
        return (
            now - entry.created < self.limits.max_age
            and entry.messages < self.limits.max_messages
            and entry.bytes + plaintext_bytes <= self.limits.max_bytes
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
