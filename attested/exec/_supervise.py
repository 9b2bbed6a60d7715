"""Step 5: the app as a child: started with its secrets, signalled, reaped, its status kept.

:class:`Supervisor` blocks the signals it handles in every thread of this process (the
mask is set before any thread starts, and threads inherit it) and takes them one by one
with ``sigtimedwait``, so a signal is never lost to a thread and its origin is known:

* SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 are forwarded to the app, except
  those a terminal sent to the whole foreground process group (``SI_KERNEL``), which the
  app has already received itself;
* SIGCHLD reaps every child that ended: the app (its status is kept) and, when this
  process is PID 1 or a child subreaper (``PR_SET_CHILD_SUBREAPER``), every orphan the
  kernel handed to it, so no zombie piles up.

The app is started with ``posix_spawnp``: an empty signal mask and default dispositions
(Python ignores SIGPIPE and SIGXFSZ; the app must not inherit that), its environment
block given to ``execve`` directly, and nothing run in between.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType

from attested.exec._errors import AppNotStarted

__all__ = ["FORWARDED", "AppExit", "Supervisor", "make_undumpable"]

log = logging.getLogger("attested.exec")

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
"""Signals passed on to the app."""
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
"""Signals that, before the app has started, stop start-up."""
_WATCHED = (*FORWARDED, signal.SIGCHLD)
_RESET = (*_WATCHED, signal.SIGPIPE, signal.SIGXFSZ)
_SI_KERNEL = 0x80
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_TICK = 0.2


def _prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def make_undumpable() -> None:
    """No core dump, no ``ptrace`` and no ``/proc/PID/mem`` of this process but by root.

    The supervisor holds plaintexts for a moment; the app (often the same user) must not
    read them out of its memory. The app's own dumpability is set anew by ``execve``.
    """
    if not _prctl(_PR_SET_DUMPABLE, 0):
        log.warning("could not make this process non-dumpable (prctl failed)")


@dataclass(frozen=True, slots=True)
class AppExit:
    """How the app ended.

    Attributes:
        pid: its process id.
        code: its exit code, or ``None`` if a signal ended it.
        signal: the signal that ended it, or ``None``.
        part_failed: a part of ``exec`` stopped while the app ran, and the app was stopped.
    """

    pid: int
    code: int | None
    signal: int | None
    part_failed: bool = False

    @property
    def status(self) -> int:
        """The exit status to pass on: the code, or 128 + the signal number."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code or 0


class Supervisor:
    """Signals, reaping and the app's life; a context manager that owns the signal state.

    Args:
        subreaper: when not PID 1, become a child subreaper, so the app's orphans are
            reparented here and reaped.
    """

    def __init__(self, *, subreaper: bool = True) -> None:
        self._subreaper = subreaper
        self._previous_mask: set[int] | None = None
        self._previous: dict[int, object] = {}
        self._late: list[int] = []  # signals a thread without the mask got
        self.stop_signal: int | None = None
        """The first stop signal received before the app started."""
        self._app: int | None = None
        self._exit: AppExit | None = None
        self._reaped = 0

    def __enter__(self) -> Supervisor:
        self._previous_mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED))
        for sig in _WATCHED:
            self._previous[sig] = signal.signal(sig, self._fallback)
        if self._subreaper and os.getpid() != 1:
            if _prctl(_PR_SET_CHILD_SUBREAPER, 1):
                log.debug("this process is a child subreaper: the app's orphans come here")
            else:
                log.warning("could not become a child subreaper; orphans go to PID 1")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if self._previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)

    @property
    def orphans_reaped(self) -> int:
        """Children reaped that were not the app."""
        return self._reaped

    def _fallback(self, signum: int, frame: FrameType | None) -> None:
        self._late.append(signum)

    def _take(self, timeout: float) -> list[tuple[int, bool]]:
        """Signals received: ``(number, sent by a terminal to the process group)``."""
        taken = [(signum, False) for signum in self._late]
        self._late.clear()
        info = signal.sigtimedwait(_WATCHED, 0 if taken else timeout)
        while info is not None:
            taken.append((info.si_signo, info.si_code == _SI_KERNEL))
            info = signal.sigtimedwait(_WATCHED, 0)
        return taken

    def stop_requested(self) -> bool:
        """Before the app starts: whether a stop signal has come (without waiting)."""
        for signum, _tty in self._take(0):
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum in STOPPING and self.stop_signal is None:
                self.stop_signal = signum
                log.info("%s received: stopping start-up", signal.Signals(signum).name)
        return self.stop_signal is not None

    def start(
        self, argv: Sequence[str], env: object, *, stdout: int | None, stderr: int | None
    ) -> int:
        """Start the app; its process id.

        Args:
            argv: the command and its arguments (``argv[0]`` looked up in ``PATH``).
            env: the app's environment block (a mapping of bytes or str).
            stdout: the descriptor for the app's standard output (``None``: this one's).
            stderr: likewise for standard error.

        Raises:
            AppNotStarted: the command cannot be executed (its ``errno`` says why).
        """
        actions = [
            (os.POSIX_SPAWN_DUP2, fd, target)
            for fd, target in ((stdout, 1), (stderr, 2))
            if fd is not None
        ]
        try:
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                env,  # type: ignore[arg-type]
                file_actions=actions,
                setsigmask=(),
                setsigdef=_RESET,
            )
        except OSError as exc:
            hint = {
                errno.ENOENT: "no such command (check the image's PATH and CMD)",
                errno.EACCES: "not executable (permission denied)",
                errno.ENOEXEC: "not an executable format",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            raise AppNotStarted(f"cannot run {argv[0]!r}: {hint}", errno=exc.errno) from exc
        self._app = pid
        log.info("app started: %s (pid %d)", os.path.basename(argv[0]), pid)
        return pid

    def supervise(self, *, parts_running: Callable[[], bool], stop_timeout: float) -> AppExit:
        """Forward signals and reap children until the app exits.

        If ``parts_running`` turns false (a part of ``exec`` died), the app gets SIGTERM,
        then SIGKILL after ``stop_timeout`` seconds; the result says ``part_failed``.
        """
        if self._app is None:
            raise RuntimeError("start the app first")
        app = self._app
        part_failed = False
        kill_at: float | None = None
        while (ended := self._ended()) is None:
            for signum, from_tty in self._take(_TICK):
                if signum == signal.SIGCHLD:
                    continue
                name = signal.Signals(signum).name
                if from_tty:
                    log.info("%s from the terminal: the app received it too", name)
                    continue
                log.info("%s received: forwarded to the app", name)
                _signal(app, signum)
            self._reap()  # every tick: SIGCHLD coalesces, and costs nothing to check
            if self._ended() is not None:
                continue
            if not part_failed and not parts_running():
                log.error("a part of attested exec stopped unexpectedly: stopping the app")
                part_failed = True
                _signal(app, signal.SIGTERM)
                kill_at = time.monotonic() + stop_timeout
            if kill_at is not None and time.monotonic() >= kill_at:
                log.error("the app did not stop within %g s: SIGKILL", stop_timeout)
                _signal(app, signal.SIGKILL)
                kill_at = None
        if part_failed:
            ended = AppExit(ended.pid, ended.code, ended.signal, part_failed=True)
        return ended

    def stop_app(self, timeout: float) -> None:
        """SIGTERM the app (if running), SIGKILL after ``timeout``, and reap it."""
        if self._app is None or self._exit is not None:
            return
        _signal(self._app, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._ended() is None:
            self._take(_TICK)
            self._reap()
            if self._ended() is None and time.monotonic() >= deadline:
                _signal(self._app, signal.SIGKILL)
                deadline = float("inf")

    def _ended(self) -> AppExit | None:
        return self._exit

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._app:
                if os.WIFSIGNALED(status):
                    self._exit = AppExit(pid, None, os.WTERMSIG(status))
                else:
                    self._exit = AppExit(pid, os.waitstatus_to_exitcode(status), None)
                log.info("app exited: %s", _describe(self._exit))
            else:
                self._reaped += 1
                log.debug("reaped orphan pid %d", pid)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited; the next reap sees it
        os.kill(pid, signum)


def _describe(ended: AppExit) -> str:
    if ended.signal is not None:
        return f"killed by {signal.Signals(ended.signal).name} (status {ended.status})"
    return f"status {ended.code}"
