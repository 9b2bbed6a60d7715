"""Log shipping out of the enclave: a never-blocking handler and the parent's line sink.

Wire protocol (one stream connection, reconnected at will):

* enclave to parent: JSON objects, one per line (newline-terminated, UTF-8);
* parent to enclave: after each batch of lines is written and flushed, the total number
  of lines received so far on this connection, as an 8-byte big-endian integer.

The handler keeps every line until the parent has acknowledged it and sends the
unacknowledged ones again after a reconnect, so lines survive a parent restart as long
as they fit in the buffer (delivery is at least once: a line written just before a
crash, whose acknowledgement was lost, is written again).

The sink trusts nothing it reads: each line becomes one JSON object on one line
(non-JSON input is wrapped as ``{"message": ...}``; invalid UTF-8 is replaced; control
characters are escaped; a record over the cap is cut inside its message, keeping its
time, level, logger and source, and marked ``"truncated": true``). Every record gets the
sink's own fields: ``received`` (RFC 3339 UTC), ``peer`` (the sender's address) and
``enclave`` (the name the configuration gives that sender).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from attested.net import Address, parse_address

__all__ = [
    "ACK",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_RECORD",
    "SINK_FIELDS",
    "LineSplitter",
    "LogFile",
    "LogShipperStats",
    "VsockLogHandler",
    "received_stamp",
    "sanitize_line",
]

ACK = struct.Struct(">Q")
DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_RECORD = 1024 * 1024
_MAX_WIRE_BATCH = 256 * 1024
_ESCAPED_CHAR_MAX = 12  # a non-BMP character escapes to two \uXXXX sequences
_LOG = logging.getLogger(__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _dumps(value: dict[str, Any]) -> bytes:
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.encode("ascii")


SINK_FIELDS = ("received", "peer", "enclave")
"""The fields the sink adds to every record (they replace a sender's fields of that name)."""
_KEPT_FIELDS = ("time", "level", "logger", "source")
_KEPT_FIELD_CHARS = 256  # a kept field longer than this is cut too, when a record is shrunk


def received_stamp(peer: str, enclave: str | None, now: float | None = None) -> dict[str, str]:
    """The sink's fields for lines received now from ``peer``.

    Args:
        peer: the sender's address (``vsock:16:1234``, ``tcp:127.0.0.1:5555``, ``unix``).
        enclave: the name the configuration gives that sender, if any.
        now: the receive time (``time.time()``), for tests.
    """
    when = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    stamp = {"received": when.isoformat(timespec="microseconds").replace("+00:00", "Z")}
    stamp["peer"] = peer
    if enclave is not None:
        stamp["enclave"] = enclave
    return stamp


def sanitize_line(
    line: bytes,
    *,
    truncated: bool = False,
    max_line: int = DEFAULT_MAX_LINE,
    stamp: dict[str, str] | None = None,
) -> bytes:
    """Turn one untrusted input line into one JSON object line, at most ``max_line`` bytes.

    A JSON object is kept as it is; anything else becomes ``{"message": TEXT}``. The
    sink's ``stamp`` fields are added (replacing the sender's fields of those names). A
    record over ``max_line`` is cut inside its ``message``: ``time``, ``level``,
    ``logger`` and ``source`` are kept (each cut to 256 characters), other fields are
    dropped, and ``"truncated": true`` is added. Only the stamp itself is never cut.

    Args:
        line: the line without its newline.
        truncated: the line was cut at the cap (it is then kept as text).
        max_line: output cap in bytes, including the final newline.
        stamp: the sink's own fields (:func:`received_stamp`).

    Returns:
        ASCII JSON text of one object, ending with a newline.
    """
    text = line.decode("utf-8", errors="replace")
    if text.endswith("\r"):
        text = text[:-1]
    record: Any = None
    if not truncated:
        try:
            record = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            record = None
    if not isinstance(record, dict):
        record = {"message": text}
        if truncated:
            record["truncated"] = True
    if stamp:
        record.update(stamp)
    try:
        out = _dumps(record)
    except (ValueError, RecursionError):  # pragma: no cover - loads output always dumps
        out = _dumps(dict(stamp or {}))
    if len(out) < max_line:
        return out + b"\n"
    return _shrink(record, max_line, stamp or {}) + b"\n"


def _shrink(record: dict[str, Any], max_line: int, stamp: dict[str, str]) -> bytes:
    """``record`` cut to fit ``max_line`` (with its newline), inside its message."""
    message = record.get("message", "")
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False, default=str)
    kept = {
        key: value[:_KEPT_FIELD_CHARS] if isinstance(value, str) else value
        for key in _KEPT_FIELDS
        if isinstance(value := record.get(key), str | int | float) and key not in stamp
    }
    keep = len(message)
    while True:
        out = _dumps({**kept, "message": message[:keep], "truncated": True, **stamp})
        excess = len(out) + 1 - max_line
        if excess <= 0:
            return out
        if keep == 0:
            if kept:  # the kept fields alone do not fit: give them up too
                kept = {}
                continue
            return out  # the sink's own fields alone are over the cap
        keep = max(0, keep - excess)


class LineSplitter:
    """Splits a byte stream into sanitised output lines, with a per-line cap (pure).

    Args:
        max_line: the longest output line; a longer record is cut inside its message.
        max_record: the longest input line read whole (default: 1 MiB or
            ``4 * max_line``, whichever is larger), so that an over-long JSON record can
            still be parsed and cut inside its message; longer input lines are cut there
            and kept as text. It bounds the memory of one connection.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, max_record: int | None = None) -> None:
        if max_line < 128:
            raise ValueError("max_line must be at least 128 bytes")
        record = max(4 * max_line, DEFAULT_MAX_RECORD) if max_record is None else max_record
        if record < max_line:
            raise ValueError("max_record must be at least max_line")
        self._line = max_line
        self._max = record
        self._partial = bytearray()
        self._skipping = False
        self._stamp: dict[str, str] | None = None

    def feed(self, data: bytes, stamp: dict[str, str] | None = None) -> tuple[list[bytes], int]:
        """Take more bytes.

        Args:
            data: the bytes received.
            stamp: the sink's fields for the lines that end in ``data``.

        Returns:
            The output lines now complete, and how many input lines ended in ``data``
            (the count the acknowledgement carries).
        """
        out: list[bytes] = []
        ended = 0
        start = 0
        self._stamp = stamp
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            ended += 1
            piece = data[start:nl]
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if len(self._partial) + len(piece) > self._max:
                self._emit_truncated(out, piece)
                self._skipping = False
                continue
            self._partial += piece
            out.append(self._sanitize(bytes(self._partial)))
            self._partial.clear()
        rest = data[start:]
        if not self._skipping:
            if len(self._partial) + len(rest) > self._max:
                self._emit_truncated(out, rest)
                self._skipping = True
            else:
                self._partial += rest
        return out, ended

    def finish(self, stamp: dict[str, str] | None = None) -> list[bytes]:
        """The last, unterminated line at end of stream, if any."""
        if self._skipping or not self._partial:
            return []
        self._stamp = stamp
        line = self._sanitize(bytes(self._partial))
        self._partial.clear()
        return [line]

    def _sanitize(self, line: bytes, *, truncated: bool = False) -> bytes:
        return sanitize_line(line, truncated=truncated, max_line=self._line, stamp=self._stamp)

    def _emit_truncated(self, out: list[bytes], piece: bytes) -> None:
        head = (bytes(self._partial) + piece[: self._max])[: self._max]
        self._partial.clear()
        out.append(self._sanitize(head, truncated=True))


class LogFile:
    """The sink's output: an append-mode file that can be reopened, or stdout.

    Args:
        path: the file, or ``None`` for standard output.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._handle: BinaryIO = self._open()

    def _open(self) -> BinaryIO:
        if self._path is None:
            return sys.stdout.buffer
        return self._path.open("ab")

    def write(self, lines: list[bytes]) -> None:
        """Append whole lines and flush them to the operating system."""
        self._handle.write(b"".join(lines))
        self._handle.flush()

    def reopen(self) -> None:
        """Close and reopen the file (after rotation); nothing for stdout."""
        if self._path is None:
            return
        handle = self._open()
        old, self._handle = self._handle, handle
        old.close()

    def close(self) -> None:
        """Flush and close (stdout is only flushed)."""
        if self._path is None:
            self._handle.flush()
        else:
            self._handle.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class LogShipperStats:
    """A snapshot of a :class:`VsockLogHandler`.

    Attributes:
        delivered: records the parent acknowledged (or sent, without acknowledgements).
        dropped: records thrown away because the buffer was full, since creation.
        buffered: records waiting to be sent or acknowledged.
        connected: whether the link to the parent is up now.
    """

    delivered: int
    dropped: int
    buffered: int
    connected: bool


class VsockLogHandler(logging.Handler):
    """A logging handler that ships JSON lines to the parent, and never blocks the app.

    ``emit`` formats the record and appends it to a bounded in-memory buffer; a daemon
    thread connects to ``address`` (``vsock:3:9000`` in an enclave; any address form
    works) and sends. When the buffer is full, new records are dropped and counted;
    when the link is back, a ``WARNING`` record saying how many were dropped is sent
    first. Each record is a JSON object with ``time`` (RFC 3339 UTC), ``level``,
    ``logger``, ``message`` and, when present, ``exception``, ``stack`` and ``source``.

    Args:
        address: where the parent's ``attested relay logs`` listens.
        level: the handler's level.
        source: a fixed ``source`` field added to every record (``None``: none).
        max_records: buffer cap in records (queued plus unacknowledged).
        max_bytes: buffer cap in bytes.
        max_line: longest line sent; longer messages are cut.
        acknowledged: expect the sink's acknowledgements (``False`` for a plain byte
            sink such as socat: lines then count as delivered once sent).
        connect_timeout: seconds per connection attempt.
        max_backoff: longest wait between connection attempts.
        close_timeout: how long :meth:`close` waits for the buffer to drain.

    Danger:
        Whatever is logged leaves the enclave in clear text. Never log secrets,
        plaintexts, keys or credentials.
    """

    def __init__(
        self,
        address: Address | str,
        *,
        level: int = logging.NOTSET,
        source: str | None = None,
        max_records: int = 10_000,
        max_bytes: int = 8 * 1024 * 1024,
        max_line: int = DEFAULT_MAX_LINE,
        acknowledged: bool = True,
        connect_timeout: float = 2.0,
        max_backoff: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        super().__init__(level)
        self.address = parse_address(address) if isinstance(address, str) else address
        if max_records < 1 or max_bytes < max_line or max_line < 128:
            raise ValueError("need max_records >= 1, max_line >= 128, max_bytes >= max_line")
        self._source = source
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._max_line = max_line
        self._acknowledged = acknowledged
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._close_timeout = close_timeout
        self._guard = threading.Lock()
        self._queue: deque[bytes] = deque()  # not yet sent
        self._unacked: deque[bytes] = deque()  # sent, waiting for the parent's count
        self._bytes = 0
        self._dropped = 0
        self._unreported = 0
        self._delivered = 0
        self._connected = False
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(
            target=self._run, name=f"attested-log-shipper {self.address}", daemon=True
        )
        self._thread.start()

    # -- application side (must never block) ---------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``; drop and count it if the buffer is full."""
        try:
            line = self._encode(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            if self._stopping:
                return
            held = len(self._queue) + len(self._unacked)
            if held >= self._max_records or self._bytes + len(line) > self._max_bytes:
                self._dropped += 1
                self._unreported += 1
                return
            self._queue.append(line)
            self._bytes += len(line)
        self._wake()

    def stats(self) -> LogShipperStats:
        """A snapshot of the counters."""
        with self._guard:
            return LogShipperStats(
                delivered=self._delivered,
                dropped=self._dropped,
                buffered=len(self._queue) + len(self._unacked),
                connected=self._connected,
            )

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every buffered record to be delivered.

        Returns:
            Whether the buffer is empty.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._guard:
                if not self._queue and not self._unacked:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def close(self) -> None:
        """Try to deliver what is buffered (up to ``close_timeout``), then stop."""
        if self._thread.is_alive():
            self.drain(self._close_timeout)
        with self._guard:
            self._stopping = True
        self._wake()
        self._thread.join(self._close_timeout + 1.0)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        super().close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending already) or closed
            os.write(self._wake_w, b"\0")

    def _encode(self, record: logging.LogRecord) -> bytes:
        message = self.format(record) if self.formatter else record.getMessage()
        when = datetime.fromtimestamp(record.created, UTC)
        obj: dict[str, Any] = {
            "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        if self._source is not None:
            obj["source"] = self._source
        obj["message"] = message
        if record.exc_info and not self.formatter:
            obj["exception"] = logging.Formatter().formatException(record.exc_info)
        if record.stack_info and not self.formatter:
            obj["stack"] = record.stack_info
        line = _dumps(obj)
        if len(line) >= self._max_line:
            keep = max(0, (self._max_line - 512) // _ESCAPED_CHAR_MAX)
            obj = {k: v for k, v in obj.items() if k not in ("exception", "stack")}
            obj["message"] = message[:keep]
            obj["truncated"] = True
            line = _dumps(obj)
        return line + b"\n"

    def _drop_report(self, count: int) -> bytes:
        obj: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": "WARNING",
            "logger": __name__,
            "message": f"{count} log records were dropped: the log buffer was full",
            "dropped": count,
        }
        if self._source is not None:
            obj["source"] = self._source
        return _dumps(obj) + b"\n"

    # -- sender thread ----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._guard:
                if self._stopping:
                    return
            sock = self._connect()
            if sock is None:
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.05
            try:
                self._serve(sock)
            except OSError as exc:
                _LOG.debug("log link to %s lost: %s", self.address, exc)
            finally:
                sock.close()
                with self._guard:
                    self._connected = False
                    self._queue.extendleft(reversed(self._unacked))
                    self._unacked.clear()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        except OSError:
            return None
        try:
            sock.settimeout(self._connect_timeout)
            sock.connect(self.address.sockaddr())
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        with self._guard:
            self._connected = True
        return sock

    def _sleep(self, seconds: float) -> None:
        select.select([self._wake_r], [], [], seconds)
        self._clear_wake()

    def _clear_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def _serve(self, sock: socket.socket) -> None:
        out = bytearray()
        acks = bytearray()
        acked = 0
        while True:
            with self._guard:
                if self._unreported:
                    report = self._drop_report(self._unreported)
                    self._unreported = 0
                    self._queue.appendleft(report)
                    self._bytes += len(report)
                while self._queue and len(out) < _MAX_WIRE_BATCH:
                    line = self._queue.popleft()
                    out += line
                    self._unacked.append(line)
                if not self._acknowledged:
                    self._release(len(self._unacked))
                if self._stopping:  # close() already waited for the buffer to drain
                    return
            fd = sock.fileno()
            readable, writable, _ = select.select([fd, self._wake_r], [fd] if out else [], [], 0.5)
            if self._wake_r in readable:
                self._clear_wake()
            if writable:
                sent = sock.send(out)
                del out[:sent]
            if fd in readable:
                data = sock.recv(4096)
                if not data:
                    return
                acks += data
                while len(acks) >= ACK.size:
                    (total,) = ACK.unpack_from(acks)
                    del acks[: ACK.size]
                    with self._guard:
                        self._release(min(total - acked, len(self._unacked)))
                    acked = max(acked, total)

    def _release(self, count: int) -> None:
        for _ in range(max(0, count)):
            line = self._unacked.popleft()
            self._bytes -= len(line)
            self._delivered += 1
