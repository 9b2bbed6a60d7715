"""How every long-running part starts and stops: one protocol, one parallel stop.

A *part* is anything that listens and serves in background threads: the local API
(:class:`attested.service.Service`), the parent companion, a relay, the credential server,
the KMS emulator. They all look the same from outside (:class:`Lifecycle`; the contract
in full, and each part's listener names, in ``docs/adr/0072-one-lifecycle-one-daemon-wrapper.md``).
:func:`stop_all` stops several parts at once within one shared deadline, so a part with
long-lived connections does not eat the others' time. The CLI's daemon wrapper
(``attested/cli/_daemon.py``) runs any part.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Protocol, TypeVar, runtime_checkable

from attested.net import Address

__all__ = ["Lifecycle", "Scoped", "Stoppable", "stop_all"]

log = logging.getLogger(__name__)

_JOIN_SLACK = 30.0  # beyond the deadline, how long to wait for a part's own stop()


@runtime_checkable
class Stoppable(Protocol):
    """What :func:`stop_all` needs: a stop with a deadline."""

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop within ``deadline`` seconds; ``True`` if everything ended in time."""
        ...


@runtime_checkable
class Lifecycle(Stoppable, Protocol):
    """A long-running part.

    ``stop(deadline)`` stops accepting at once, lets work in flight finish for up to
    ``deadline`` seconds, then cuts it; it is safe to call twice, and before ``start``.
    """

    def start(self) -> object:
        """Bind and serve, all or nothing: on failure, raise with nothing left running."""
        ...

    @property
    def running(self) -> bool:
        """Whether the part serves: false before start, after stop, and when a thread died."""
        ...

    @property
    def listeners(self) -> Mapping[str, Address]:
        """Listener name to bound address; empty before start and after stop."""
        ...


_Part = TypeVar("_Part", bound=Lifecycle)


class Scoped:
    """Mixin for a :class:`Lifecycle` part: ``with part:`` starts it, and stops it after."""

    def __enter__(self: _Part) -> _Part:
        self.start()
        return self

    def __exit__(self: Lifecycle, *exc_info: object) -> None:
        self.stop()


def stop_all(parts: Mapping[str, Stoppable], deadline: float) -> bool:
    """Stop every part at once, all within one deadline.

    Args:
        parts: name (for logs) to part.
        deadline: seconds every part gets, counted from now.

    Returns:
        ``True`` if every part stopped cleanly in time. A part whose ``stop`` raises is
        logged and counts as not clean; the others are stopped regardless.
    """
    end = time.monotonic() + max(deadline, 0.0)
    results: dict[str, bool] = {}

    def stop(name: str, part: Stoppable) -> None:
        try:
            results[name] = part.stop(max(0.0, end - time.monotonic()))
        except Exception:  # one broken part must not keep the others running
            log.exception("stopping %s failed", name)
            results[name] = False

    threads = [
        threading.Thread(target=stop, args=(name, part), name=f"attested-stop {name}", daemon=True)
        for name, part in parts.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()) + _JOIN_SLACK)
    return all(results.get(name, False) for name in parts) and not any(
        thread.is_alive() for thread in threads
    )
