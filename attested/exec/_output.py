"""The app's stdout and stderr, line by line, to the console and to the parent's log sink.

With ``[logs] ship_to`` set, the app writes into two pipes; a thread per pipe copies each
line as it is to this process's own stdout or stderr (the enclave console) and ships it
as one record (``logger`` ``stdout`` or ``stderr``, ``source`` the app's name) through a
:class:`~attested.relay.VsockLogHandler`, which never blocks: when the sink is away,
lines wait in its bounded buffer and are dropped (and counted) beyond it. A line longer
than ``max_line`` is cut into pieces of that size. Without ``ship_to`` the app writes to
this process's stdout and stderr directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import BinaryIO

from attested.relay import VsockLogHandler

__all__ = ["OutputPump"]

_READ = 65536


class OutputPump:
    """Copies one of the app's streams to the console and the log sink, line by line.

    Args:
        descriptor: the pipe's read end (closed by :meth:`close`).
        stream: ``stdout`` or ``stderr``.
        console: where the lines are written as they are.
        shipper: where they are shipped as records.
        max_line: the longest line shipped whole.
    """

    def __init__(
        self,
        descriptor: int,
        *,
        stream: str,
        console: BinaryIO,
        shipper: VsockLogHandler,
        max_line: int = 16 * 1024,
    ) -> None:
        self._fd = descriptor
        self._stream = stream
        self._console = console
        self._shipper = shipper
        self._max_line = max_line
        self.lines = 0
        """Lines shipped so far."""
        self._thread = threading.Thread(
            target=self._run, name=f"attested-exec {stream}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait until the app's end of the pipe is closed (by every process holding it)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Close the read end (a grandchild may still hold the write end open)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _run(self) -> None:
        partial = bytearray()
        while True:
            try:
                chunk = os.read(self._fd, _READ)
            except OSError:
                chunk = b""
            if not chunk:
                break
            partial += chunk
            while True:
                end = partial.find(b"\n")
                if end < 0 and len(partial) < self._max_line:
                    break
                cut = end + 1 if 0 <= end < self._max_line else self._max_line
                self._line(bytes(partial[:cut]))
                del partial[:cut]
        if partial:
            self._line(bytes(partial))

    def _line(self, line: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._console.write(line if line.endswith(b"\n") else line + b"\n")
            self._console.flush()
        text = line.rstrip(b"\n").decode("utf-8", "replace")
        record = logging.LogRecord(self._stream, logging.INFO, "", 0, "%s", (text,), None)
        self._shipper.handle(record)
        self.lines += 1
