"""What ``/v1/health`` knows: credentials, NSM and KMS as last seen, live and ready.

The service is *live* while it answers at all; it is *ready* when nothing it needs for a
KMS call is known to fail: credentials can be had and the NSM answers (ADR 0076). KMS's
reachability is reported (``degraded``) but does not decide readiness: it is seen only
through calls, and a service taken out of rotation gets no calls that could clear it.

The credentials are looked at once in the background at start (``attested parent``'s
credential server unreachable is the usual first mistake, and nothing else would fetch
them before the first KMS call), and again, in the background, when a health request
finds them failing or not yet known and the last look is older than
:data:`RECHECK_AFTER`. A health request never waits for the network.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from attested.errors import (
    AttestationUnavailable,
    AttestedError,
    CredentialsUnavailable,
    KmsCredentialsRejected,
    KmsError,
    KmsUnreachable,
)

__all__ = ["CHECKS", "RECHECK_AFTER", "Check", "CredentialsProbe", "Health"]

log = logging.getLogger("attested.service")

CHECKS = ("credentials", "nsm", "kms")
RECHECK_AFTER = 10.0  # seconds between background looks at failing credentials
_MAX_DETAIL = 300

State = Literal["ok", "unknown", "failing"]


@dataclass(frozen=True)
class Check:
    """One part as last seen.

    Attributes:
        status: ``ok``, ``unknown`` (not seen yet) or ``failing``.
        detail: why it fails (one line, never a secret), or what was seen.
        at: when it was seen (monotonic seconds), ``None`` if never.
    """

    status: State = "unknown"
    detail: str = ""
    at: float | None = None


class Health:
    """The last-seen state of the parts a KMS call needs. Thread-safe.

    Args:
        clock: monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = dict.fromkeys(CHECKS, Check())

    def saw(self, part: str, ok: bool, detail: str = "") -> None:
        """Record what a call or a probe saw of ``part`` (``credentials``, ``nsm``, ``kms``)."""
        line = " ".join(detail.split())[:_MAX_DETAIL]
        check = Check("ok" if ok else "failing", line, self._clock())
        with self._lock:
            previous = self._checks[part]
            self._checks[part] = check
        if previous.status != check.status and (previous.status != "unknown" or not ok):
            log.log(
                logging.INFO if ok else logging.WARNING,
                "health: %s %s%s",
                part,
                "recovered" if ok else "failing",
                f": {line}" if line and not ok else "",
            )

    def saw_call(self, operation: str, error: BaseException | None) -> None:
        """Record what one KMS call (or ``attestation``) tells about the parts."""
        if error is None:
            self.saw("nsm", True)
            if operation != "attestation":
                self.saw("credentials", True)
                self.saw("kms", True)
            return
        if isinstance(error, AttestationUnavailable):
            self.saw("nsm", False, str(error))
        elif isinstance(error, CredentialsUnavailable | KmsCredentialsRejected):
            self.saw("credentials", False, str(error))
        elif isinstance(error, KmsUnreachable):
            self.saw("kms", False, str(error))
        elif isinstance(error, KmsError):  # KMS answered: reached, with these credentials
            self.saw("nsm", True)
            self.saw("credentials", True)
            self.saw("kms", True)

    def checks(self) -> Mapping[str, Check]:
        """Every part's last-seen state."""
        with self._lock:
            return dict(self._checks)

    def report(self, *, credentials_expire_in: float | None) -> dict[str, object]:
        """``status``, ``live``, ``ready`` and ``checks`` for the health answers.

        Args:
            credentials_expire_in: seconds until the credentials expire; below zero they
                are failing whatever was last seen.
        """
        now = self._clock()
        checks = dict(self.checks())
        if credentials_expire_in is not None and credentials_expire_in <= 0:
            checks["credentials"] = Check(
                "failing", f"expired {-credentials_expire_in:.0f} s ago and not renewed", now
            )
        ready = all(checks[part].status != "failing" for part in ("credentials", "nsm"))
        degraded = any(check.status == "failing" for check in checks.values())
        return {
            "status": "degraded" if degraded else "ok",
            "live": True,
            "ready": ready,
            "checks": {
                part: {
                    "status": check.status,
                    "detail": check.detail,
                    "seen_ago": None if check.at is None else round(max(now - check.at, 0.0), 1),
                }
                for part, check in checks.items()
            },
        }


class CredentialsProbe:
    """Looks at the credentials in a background thread: at start, and when asked again.

    Args:
        health: where the outcome goes.
        fetch: gets the credentials (raises when they cannot be had); it may block on
            the network for its own timeout.
        recheck_after: the least seconds between two looks.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        health: Health,
        fetch: Callable[[], object],
        *,
        recheck_after: float = RECHECK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health = health
        self._fetch = fetch
        self._recheck_after = recheck_after
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = False
        self._last: float | None = None
        self._thread = threading.Thread(
            target=self._loop, name="attested-credentials-probe", daemon=True
        )

    def start(self) -> None:
        """Start the thread; its first look is at once."""
        self._wake.set()
        self._thread.start()

    def maybe_recheck(self) -> None:
        """Look again, in the background, if the credentials are not known to be fine."""
        if self._health.checks()["credentials"].status == "ok":
            return
        last = self._last
        if last is None or self._clock() - last >= self._recheck_after:
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a look in progress ends within its own timeout)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._last = self._clock()
            try:
                self._fetch()
            except (AttestedError, OSError, ValueError) as exc:
                self._health.saw("credentials", False, str(exc))
            except Exception as exc:  # botocore's own errors: reported, never raised here
                self._health.saw("credentials", False, f"{type(exc).__name__}: {exc}")
            else:
                self._health.saw("credentials", True)
            self._last = self._clock()
