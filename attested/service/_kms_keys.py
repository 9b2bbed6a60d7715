"""Which keys the KMS endpoint may use: ``kms.allowed_keys``, with names resolved as KMS does.

KMS takes a key by key id, key ARN, alias name or alias ARN; ``kms.allowed_keys`` lists
key ARNs and alias ARNs (or any of the four forms). A request is admitted when:

1. its ``KeyId`` is written exactly as an entry (then it is sent on as written: the
   operator allowed that name, whatever key it names at KMS), or
2. KMS resolves it to the same key as an entry: the request's name is resolved with
   DescribeKey (a key ARN resolves to itself), every entry that is not a key ARN is
   resolved the same way, and the request's **key ARN** is sent on, so that KMS acts on
   exactly the key that was checked even if an alias moves in between.

Resolutions are kept for :data:`RESOLVE_TTL` seconds (an alias moved with UpdateAlias is
followed within that time, as KMS itself takes a while to show alias changes), at most
:data:`MAX_ENTRIES` of them. An entry that cannot be resolved (no such alias, DescribeKey
refused, KMS unreachable) admits nothing until it can be (fail closed), and is logged.

Decrypt without ``KeyId`` names no key before KMS answers: the key ARN in KMS's answer
is checked with :meth:`KeyGate.admit_answer`, and the plaintext is dropped if it is not
admitted. See ``docs/adr/0092-kms-endpoint-keys-and-aliases.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from attested.kms._wire import ApiError

__all__ = ["MAX_ENTRIES", "RESOLVE_TTL", "KeyGate", "is_key_arn"]

log = logging.getLogger("attested.service")

RESOLVE_TTL = 60.0
"""Seconds a name's resolution to a key ARN is kept."""
MAX_ENTRIES = 1024
"""Resolutions kept at most; the oldest goes first."""

Describe = Callable[[str], str]
"""Resolves a key name as KMS does (DescribeKey) to the key ARN; raises :class:`ApiError`."""

_HOW = (
    "kms.allowed_keys of attested serve's configuration, which lists key ARNs and alias "
    "ARNs (a key named another way is resolved with DescribeKey)"
)


def is_key_arn(text: str) -> bool:
    """Whether ``text`` is a KMS key ARN (``arn:PARTITION:kms:REGION:ACCOUNT:key/ID``)."""
    parts = text.split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "kms" and parts[5][:4] == "key/"


class KeyGate:
    """Admits requests to keys of ``kms.allowed_keys``. Thread-safe.

    Args:
        allowed: ``kms.allowed_keys``; ``("*",)`` admits every key, unresolved.
        describe: resolves a name to its key ARN (DescribeKey with the service's
            credentials).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        describe: Describe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = tuple(allowed)
        self._exact = frozenset(self._allowed)
        self._any = self._allowed == ("*",)
        self._describe = describe
        self._clock = clock
        self._lock = threading.Lock()
        # name -> (key ARN, or None for an entry that could not be resolved; expiry)
        self._cache: dict[str, tuple[str | None, float]] = {}

    def admit(self, key_id: str) -> str:
        """The ``KeyId`` to send to KMS for a request naming ``key_id``.

        Raises:
            ApiError: ``AccessDeniedException`` (not allowed, or DescribeKey refused), or
                KMS's own error for DescribeKey (``NotFoundException``, ...).
        """
        if self._any or key_id in self._exact:
            return key_id
        arn = key_id if is_key_arn(key_id) else self._resolve_request(key_id)
        if arn in self._allowed_arns():
            return arn
        shown = f"{key_id!r:.200}" + ("" if arn == key_id else f" (key {arn})")
        raise ApiError(
            "AccessDeniedException",
            f"This enclave's KMS endpoint may not use the key {shown}: it is not in {_HOW}.",
        )

    def admit_answer(self, key_arn: str | None, operation: str) -> None:
        """Check the key KMS says it used when the request named none (Decrypt, ReEncrypt).

        Raises:
            ApiError: ``AccessDeniedException``: the answer is dropped.
        """
        if self._any or (key_arn is not None and key_arn in self._exact):
            return
        if key_arn is not None and key_arn in self._allowed_arns():
            return
        raise ApiError(
            "AccessDeniedException",
            f"This enclave's KMS endpoint may not use the key {key_arn!r:.200}, which the "
            f"ciphertext was made under: it is not in {_HOW}. KMS's {operation} answer was "
            "dropped.",
        )

    def _resolve_request(self, key_id: str) -> str:
        cached = self._cached(key_id)
        if cached is not None:
            return cached
        try:
            arn = self._describe(key_id)
        except ApiError as exc:
            if exc.code != "AccessDeniedException":
                raise
            raise ApiError(
                "AccessDeniedException",
                f"{key_id!r:.200} is not written as in kms.allowed_keys, so this enclave's "
                "KMS endpoint asked KMS which key it names (DescribeKey), and KMS refused: "
                f"{exc}. Name the key as kms.allowed_keys lists it, or allow kms:DescribeKey "
                "to the service's role.",
            ) from None
        self._store(key_id, arn)
        return arn

    def _allowed_arns(self) -> frozenset[str]:
        """Every entry's key ARN (entries that cannot be resolved now are left out)."""
        found: set[str] = set()
        for entry in self._allowed:
            if is_key_arn(entry):
                found.add(entry)
                continue
            with self._lock:
                hit = self._cache.get(entry)
            if hit is not None and hit[1] > self._clock():
                if hit[0] is not None:
                    found.add(hit[0])
                continue
            try:
                arn: str | None = self._describe(entry)
            except ApiError as exc:
                log.warning(
                    "kms.allowed_keys entry %r cannot be resolved now (DescribeKey: %s: %s); "
                    "it admits no key until it can be",
                    entry[:200],
                    exc.code,
                    exc,
                )
                arn = None
            self._store(entry, arn)
            if arn is not None:
                found.add(arn)
        return frozenset(found)

    def _cached(self, name: str) -> str | None:
        with self._lock:
            hit = self._cache.get(name)
        if hit is None or hit[1] <= self._clock():
            return None
        return hit[0]

    def _store(self, name: str, arn: str | None) -> None:
        with self._lock:
            self._cache.pop(name, None)
            while len(self._cache) >= MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]
            self._cache[name] = (arn, self._clock() + RESOLVE_TTL)
