"""systemd's notification protocol (``sd_notify``), spoken directly: no libsystemd.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket: a
path, or ``@NAME`` in the abstract namespace) and waits for ``READY=1``; ``WatchdogSec=``
adds ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): ``WATCHDOG=1`` must come that often. One
datagram of ``KEY=VALUE`` lines per message. Only the sending side; other socket forms
(``vsock:``) are not spoken; a failed send is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("attested.cli")

_SEND_TIMEOUT = 1.0


class Notifier:
    """Sends notifications to the socket in ``NOTIFY_SOCKET``, if any.

    Args:
        environ: where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``.

    Attributes:
        watchdog_interval: seconds between ``WATCHDOG=1`` pings (half of
            ``WATCHDOG_USEC``, as ``sd_watchdog_enabled`` advises), or ``None`` when
            systemd does not watch this process.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        where = environ.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if where.startswith("@"):
            self._address = "\0" + where[1:]  # the abstract namespace
        elif where.startswith("/"):
            self._address = where
        elif where:
            log.warning("NOTIFY_SOCKET=%r is not a path or @name; not notifying systemd", where)
        self.watchdog_interval: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        ours = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        if self._address is not None and ours and usec.isdigit() and int(usec) > 0:
            self.watchdog_interval = int(usec) / 2e6

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``READY=1``, ``STATUS=...``) as one datagram.

        Returns:
            ``True`` if it was sent; ``False`` without a socket or when sending failed.
        """
        if self._address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(_SEND_TIMEOUT)
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", lines[0], exc.strerror or exc)
            return False
        return True
