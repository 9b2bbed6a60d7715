"""What the long-running subcommands share: diagnostics, file limits, signals, ready files."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from attested.cli._common import env_error
from attested.net import Address

__all__ = [
    "LOG_LEVELS",
    "diagnostics_on_stderr",
    "raise_nofile",
    "wait_for_stop_signal",
    "write_ready_file",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_NOFILE_WANTED = 65536


@contextmanager
def diagnostics_on_stderr(level: str) -> Iterator[None]:
    """Send the library's log records at ``level`` and above to stderr, for the duration."""
    diagnostics = logging.StreamHandler(sys.stderr)
    diagnostics.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    library = logging.getLogger("attested")
    previous_level = library.level
    library.addHandler(diagnostics)
    library.setLevel(level)
    try:
        yield
    finally:
        library.removeHandler(diagnostics)
        library.setLevel(previous_level)


def raise_nofile() -> None:
    """Raise the soft open-file limit: each tunnel holds 2-6 descriptors, 1024 is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            logging.getLogger("attested").warning("cannot raise the open-file limit")


def wait_for_stop_signal(
    *,
    running: Callable[[], bool],
    reopen: Callable[[], None],
    what: str,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Block until SIGTERM or SIGINT; SIGHUP calls ``reopen``. Restores the old handlers.

    ``on_ready`` runs once the handlers are installed: announce readiness there (print
    the listeners, write a ready file), so that whoever reacts to it with a signal gets
    a graceful stop, not the default action.

    Raises:
        CliError: ``running()`` turned false first (exit 3: ``what`` stopped unexpectedly).
    """
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reopen()

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup),
        )
    }
    try:
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.2):
            if not running():
                raise env_error(f"{what} stopped unexpectedly")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
