"""The one daemon wrapper: how every long-running subcommand runs its part.

``attested serve``, ``parent``, ``relay`` and ``emulator kms`` build a part (an
:class:`attested._runtime.lifecycle.Lifecycle`) and hand it to :func:`run_part`: signals (SIGTERM
and SIGINT stop gracefully, SIGHUP reopens log files), the ready file, systemd
notification and watchdog, and the exit statuses are the same for all of them.

:class:`Notifier` speaks systemd's notification protocol (``sd_notify``) directly, without
libsystemd. Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram
socket: a path, or ``@NAME`` in the abstract namespace) and waits for ``READY=1``;
``WatchdogSec=`` adds ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): ``WATCHDOG=1`` must come
that often. One datagram of ``KEY=VALUE`` lines per message. Only the sending side; other
socket forms (``vsock:``) are not spoken; a failed send is logged, never raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from attested._runtime.lifecycle import Lifecycle
from attested.cli._common import EXIT_ENV, EXIT_OK, EXIT_USAGE, CliError, env_error
from attested.errors import AttestedError
from attested.net import Address

__all__ = [
    "LOG_LEVELS",
    "Diagnostics",
    "Notifier",
    "add_daemon_arguments",
    "diagnostics_on_stderr",
    "run_part",
    "write_ready_file",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_NOFILE_WANTED = 65536
_POLL = 0.2  # seconds between looks at the part's running
_SEND_TIMEOUT = 1.0

log = logging.getLogger("attested.cli")


def add_daemon_arguments(
    parser: argparse.ArgumentParser,
    *,
    ready: str,
    log_level: str = "diagnostics on stderr (default INFO)",
    shutdown: str | None = None,
) -> None:
    """Add what every daemon takes: ``--ready-file``, ``--log-level``, ``--shutdown-timeout``.

    Args:
        parser: the subcommand's parser.
        ready: the help of ``--ready-file``: when it is written and what it holds.
        log_level: the help of ``--log-level`` (case does not matter in the value).
        shutdown: what may finish within ``--shutdown-timeout`` on SIGTERM
            (``open connections``); ``None`` for no such option.
    """
    parser.add_argument("--ready-file", type=Path, metavar="PATH", help=ready)
    if shutdown is not None:
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help=f"on SIGTERM, how long {shutdown} may finish (default 10)",
        )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help=log_level
    )


class Diagnostics(logging.Handler):
    """The library's log records on stderr, held back until the command is under way.

    A command that fails to start says so in one line (``attested serve: cannot start:
    ...``); the INFO lines of the steps before the failure would only bury it. Records
    are kept until :meth:`show` (the part started, the command succeeded), then written,
    and later ones as they come. Never shown, they are dropped, unless the level is
    DEBUG: whoever asked for DEBUG gets everything.

    Args:
        level: the lowest level shown.
        hold: keep records until :meth:`show`; ``False`` writes them at once.
    """

    def __init__(self, level: str, *, hold: bool = True) -> None:
        super().__init__(level)
        self._stderr = logging.StreamHandler(sys.stderr)
        self._stderr.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self._held: list[logging.LogRecord] | None = [] if hold else None
        self._debug = self.level <= logging.DEBUG

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, or keep it until :meth:`show` (called under ``self.lock``)."""
        if self._held is not None:
            self._held.append(record)
        else:
            self._stderr.handle(record)

    def show(self) -> None:
        """Write the records held so far, and from now on write them as they come."""
        with self.lock:  # type: ignore[union-attr]  # set by Handler.__init__
            held, self._held = self._held, None
            for record in held or ():
                self._stderr.handle(record)

    def finish(self) -> None:
        """At the end: records still held are dropped (written at DEBUG)."""
        if self._debug:
            self.show()
        with self.lock:  # type: ignore[union-attr]
            self._held = None


@contextmanager
def diagnostics_on_stderr(level: str, *, hold: bool = True) -> Iterator[Diagnostics]:
    """Send the library's log records at ``level`` and above to stderr, for the duration.

    Args:
        level: the lowest level shown.
        hold: keep them until ``show()`` (:func:`run_part` calls it once the part
            started), so that a command that cannot start prints its one-line error alone.
    """
    diagnostics = Diagnostics(level, hold=hold)
    library = logging.getLogger("attested")
    previous_level = library.level
    library.addHandler(diagnostics)
    library.setLevel(level)
    try:
        yield diagnostics
    finally:
        library.removeHandler(diagnostics)
        library.setLevel(previous_level)
        diagnostics.finish()


def _raise_nofile() -> None:
    """Raise the soft open-file limit: each tunnel holds 2-6 descriptors, 1024 is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            logging.getLogger("attested").warning("cannot raise the open-file limit")


def run_part(
    part: Lifecycle,
    *,
    command: str,
    what: str,
    ready_file: Path | None = None,
    deadline: float = 10.0,
    reopen: Callable[[], None] | None = None,
    usage_errors: tuple[type[Exception], ...] = (),
    on_ready: Callable[[], None] | None = None,
    diagnostics: Diagnostics | None = None,
) -> int:
    """Run a part until SIGTERM or SIGINT: the one way every daemon runs (ADR 0072).

    Handlers first, then: start, the ready file, ``attested COMMAND: NAME listening on
    ADDRESS`` on stderr, ``on_ready``, systemd's ``READY=1``; then ``running`` is watched
    and the watchdog fed until a stop signal; then ``STOPPING=1``, ``stop(deadline)``, the
    ready file removed.

    Args:
        part: what to run.
        command: the subcommand, for the lines on stderr (``parent``, ``serve``, ...).
        what: the part in messages (``the relay``).
        ready_file: where to write ``{"pid": N, "listeners": {NAME: ADDRESS}}``.
        deadline: seconds work in flight gets when stopping.
        reopen: what SIGHUP does (reopen log files); without it SIGHUP is only logged.
        usage_errors: errors of ``start`` that are the user's arguments (exit 2).
        on_ready: the command's own announcement, after the ready file.
        diagnostics: shown once the part started (the log lines of a start that
            fails would bury its one-line error).

    Raises:
        CliError: ``start`` failed (exit 2 for ``usage_errors``, 3 for other
            ``AttestedError`` and ``OSError``), or ``running`` turned false (exit 3).
    """
    _raise_nofile()
    systemd = Notifier()
    signalled: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        wake.set()

    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    try:
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()  # a stale file from an earlier run must not look ready
        _start(part, usage_errors)
        if diagnostics is not None:
            diagnostics.show()
        try:
            listeners = dict(part.listeners)
            if ready_file is not None:  # first: whoever sees the lines may read the file
                write_ready_file(ready_file, listeners)
            for name, address in listeners.items():
                print(f"attested {command}: {name} listening on {address}", file=sys.stderr)
            if on_ready is not None:
                on_ready()
            serving = ", ".join(f"{name} on {address}" for name, address in listeners.items())
            systemd.notify("READY=1", f"STATUS={what} serving: {serving}")
            _serve(part, what, systemd, wake, signalled, reopen)
        finally:
            systemd.notify("STOPPING=1", f"STATUS={what} stopping")
            part.stop(max(deadline, 0.0))
            if ready_file is not None:
                with contextlib.suppress(OSError):
                    ready_file.unlink()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    print(f"attested {command}: stopped", file=sys.stderr)
    return EXIT_OK


def _start(part: Lifecycle, usage_errors: tuple[type[Exception], ...]) -> None:
    try:
        part.start()
    except (AttestedError, OSError) as exc:
        status = EXIT_USAGE if isinstance(exc, usage_errors) else EXIT_ENV
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(f"cannot start: {detail}", status) from exc


def _serve(
    part: Lifecycle,
    what: str,
    systemd: Notifier,
    wake: threading.Event,
    signalled: list[int],
    reopen: Callable[[], None] | None,
) -> None:
    interval = systemd.watchdog_interval
    fed = time.monotonic()
    while True:
        wake.wait(_POLL if interval is None else min(_POLL, interval))
        wake.clear()
        while signalled:
            if signalled.pop(0) != signal.SIGHUP:
                log.info("stopping (signal received)")
                return
            if reopen is None:
                log.info("SIGHUP: %s has no file to reopen", what)
            else:
                reopen()
        if not part.running:
            raise env_error(f"{what} stopped unexpectedly")
        if interval is not None and time.monotonic() - fed >= interval:
            systemd.notify("WATCHDOG=1")
            fed = time.monotonic()


def write_ready_file(path: Path, listeners: Mapping[str, Address]) -> None:
    """Write the ready file through a temporary file and a rename: never seen half-written."""
    body = json.dumps(
        {"pid": os.getpid(), "listeners": {name: str(a) for name, a in listeners.items()}},
        indent=2,
    )
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(body + "\n")
            Path(temporary).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(temporary).unlink()
            raise
    except OSError as exc:
        why = exc.strerror or exc
        raise env_error(f"cannot write the ready file {str(path)!r}: {why}") from exc


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
