"""Helpers shared by the subcommands: errors, help, input reading, argument parsing.

Exit statuses and error codes are ADR 0075's: one table for every subcommand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_ENV = 3

MAX_INPUT_SIZE = 1024 * 1024

# The ``code`` of a ``--json`` error object, by kind of failure (ADR 0075).
CODE_REFUSED = "refused"  # exit 1: judged, and the answer is no
CODE_USAGE = "usage"  # exit 2: the arguments
CODE_INVALID = "invalid_input"  # exit 2: an input is not what the command reads
CODE_IO = "io"  # exit 3: a file, device or service could not be used
_DEFAULT_CODES = {EXIT_FAIL: CODE_REFUSED, EXIT_USAGE: CODE_USAGE, EXIT_ENV: CODE_IO}


class CliError(Exception):
    """A problem to report as one line on stderr, with an exit status and an error code.

    Args:
        message: one line, without the ``attested COMMAND:`` prefix.
        status: the exit status (1, 2 or 3).
        code: the ``--json`` error code; by default the one of the status.
    """

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _DEFAULT_CODES.get(status, CODE_IO)


def usage_error(message: str) -> CliError:
    """A usage error: the arguments (exit 2)."""
    return CliError(message, EXIT_USAGE, CODE_USAGE)


def invalid_input(message: str) -> CliError:
    """An input that is not what the command reads: malformed, of another kind (exit 2)."""
    return CliError(message, EXIT_USAGE, CODE_INVALID)


def refused(message: str) -> CliError:
    """The input was judged and refused (exit 1)."""
    return CliError(message, EXIT_FAIL, CODE_REFUSED)


def env_error(message: str) -> CliError:
    """An I/O or environment error (exit 3)."""
    return CliError(message, EXIT_ENV, CODE_IO)


_HELP_WIDTH = 88
EXIT_STATUSES = (
    (EXIT_OK, "success"),
    (EXIT_FAIL, "not verified or refused"),
    (EXIT_USAGE, "usage error or invalid input"),
    (EXIT_ENV, "I/O or environment error"),
)
"""The exit statuses of every subcommand (README, ``attested docs cli``, ADR 0075)."""


def epilog(
    examples: Sequence[str] = (),
    *,
    topic: str | None = None,
    ok: str = "",
    fail: str = "",
    usage: str = "",
    env: str = "",
    extra: str = "",
) -> str:
    """The end of a ``--help``: examples, the exit-status table, where to read more.

    Args:
        examples: command lines (each parsed by a test), optionally with ``  # comment``.
        topic: the ``attested docs TOPIC`` guide to point to.
        ok: what exit 0 means for this command.
        fail: what exit 1 means for it.
        usage: what exit 2 means for it (besides a usage error).
        env: what exit 3 means for it.
        extra: a paragraph before the examples.
    """
    parts = []
    if extra:
        parts.append(textwrap.fill(extra, width=_HELP_WIDTH))
    if examples:
        parts.append("examples:\n" + "\n".join(f"  {line}" for line in examples))
    notes = {EXIT_OK: ok, EXIT_FAIL: fail, EXIT_USAGE: usage, EXIT_ENV: env}
    rows = []
    for status, meaning in EXIT_STATUSES:
        lead = f"  {status}  {meaning:<28}  "
        lines = textwrap.wrap(notes[status], width=_HELP_WIDTH - len(lead)) or [""]
        rows.append((lead + lines[0]).rstrip())
        rows.extend(" " * len(lead) + line for line in lines[1:])
    parts.append("exit status (the same for every attested command):\n" + "\n".join(rows))
    if topic:
        parts.append(f"more: attested docs {topic}")
    return "\n\n".join(parts)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph texts; keeps texts that hold line breaks (epilogs) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "\n".join(indent + line if line else line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class UsageError(Exception):
    """An argument error found by the parser (exit 2), reported by :func:`attested.cli.main`.

    Attributes:
        parser: the parser of the command whose arguments are wrong.
    """

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line usage errors and the help formatter above.

    Subcommand parsers are of the same class (argparse makes them with ``type(self)``).
    A usage error raises :class:`UsageError` instead of printing the usage and exiting.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise :class:`UsageError` (argparse would print its usage and exit 2)."""
        raise UsageError(self, message)


def takes_json(parser: argparse.ArgumentParser) -> bool:
    """Whether ``parser`` has a ``--json`` option."""
    return any("--json" in action.option_strings for action in parser._actions)


def read_input(source: str, *, what: str, max_size: int = MAX_INPUT_SIZE) -> bytes:
    """Read a path, or stdin for ``-``, refusing more than ``max_size`` bytes."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(max_size + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(max_size + 1)
    except OSError as exc:
        raise env_error(f"cannot read {what} {source!r}: {exc.strerror or exc}") from exc
    if len(data) > max_size:
        raise invalid_input(f"{what} is larger than {max_size} bytes")
    return data


def binary_or_base64(data: bytes, *, looks_binary: bytes) -> bytes:
    """Return ``data`` as is if it starts with one of ``looks_binary``, else base64-decode it.

    Base64 may be wrapped over lines and padded or not. If it does not decode, the
    original bytes are returned and the parser will say what is wrong with them.
    """
    if data[:1] and data[:1] in {bytes([b]) for b in looks_binary}:
        return data
    text = b"".join(data.split())
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            decoded = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return data
    return decoded if decoded else data


def parse_hex(value: str, *, what: str) -> bytes:
    """Parse lowercase or uppercase hex (no ``0x`` prefix) into bytes."""
    text = value.strip()
    if text.lower().startswith("0x"):
        raise argparse.ArgumentTypeError(f"{what}: give plain hex without the 0x prefix")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{what}: {value!r:.40} is not hex") from exc


def hex_argument(name: str) -> Callable[[str], bytes]:
    """An argparse ``type=`` that parses hex, naming the option ``name`` in errors."""

    def parse(value: str) -> bytes:
        return parse_hex(value, what=name)

    return parse


def pcr_argument(value: str) -> tuple[int, bytes]:
    """Parse ``N=HEX`` (a PCR index 0..31 and a 32, 48 or 64-byte value) for argparse."""
    index_text, sep, hex_text = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected N=HEX, got {value!r:.40}")
    index = pcr_index(index_text)
    pcr = parse_hex(hex_text, what=f"PCR{index}")
    if len(pcr) not in (32, 48, 64):
        raise argparse.ArgumentTypeError(
            f"PCR{index} must be 32, 48 or 64 bytes (64, 96 or 128 hex digits), got {len(pcr)}"
        )
    return index, pcr


def pcr_index(text: str) -> int:
    """Parse a PCR index 0..31 for argparse."""
    try:
        index = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PCR index {text!r:.10} is not a number") from None
    if not 0 <= index <= 31:
        raise argparse.ArgumentTypeError(f"PCR index must be 0..31, got {index}")
    return index


def pcr_map(pairs: list[tuple[int, bytes]]) -> dict[int, bytes]:
    """Collect repeated ``--pcr`` values, refusing an index given twice (usage error)."""
    pcrs: dict[int, bytes] = {}
    for index, value in pairs:
        if index in pcrs:
            raise usage_error(f"--pcr {index} given twice")
        pcrs[index] = value
    return pcrs


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset (``Z`` or ``+hh:mm``)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no time zone; add Z or an offset such as +00:00"
        )
    return when.astimezone(UTC)


def rfc3339(when: datetime) -> str:
    """Format a time as RFC 3339 UTC with a Z suffix (milliseconds when present)."""
    when = when.astimezone(UTC)
    spec = "milliseconds" if when.microsecond else "seconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


def hex_or_none(value: bytes | None) -> str | None:
    """Lowercase hex, or ``None``."""
    return None if value is None else value.hex()


class QuietPipe:
    """``sys.stdout`` for one command: a reader that goes away ends the output, quietly.

    ``attested verify DOC | head -1``: when ``head`` exits, writing more raises
    ``BrokenPipeError``. Like other command-line tools, the command then stops writing,
    says nothing, and keeps its exit status (a document that was not verified still
    exits 1). Writes after that go nowhere; descriptor 1 is pointed at ``/dev/null`` so
    that the interpreter's last flush cannot fail either (it would exit 120).

    Args:
        stream: the text stream to guard (``sys.stdout``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False
        self.buffer = _QuietBinary(self, getattr(stream, "buffer", None))

    def _broke(self) -> None:
        if self.broken:
            return
        self.broken = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            fileno = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fileno)
            finally:
                os.close(devnull)

    def write(self, text: str) -> int:
        """Write ``text``; nothing once the reader has gone."""
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._broke()
        return len(text)

    def flush(self) -> None:
        """Flush; nothing once the reader has gone."""
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._broke()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


class _QuietBinary:
    """``sys.stdout.buffer`` of a :class:`QuietPipe`."""

    def __init__(self, owner: QuietPipe, stream: BinaryIO | None) -> None:
        self._owner = owner
        self._stream = stream

    def write(self, data: bytes) -> int:
        if self._stream is not None and not self._owner.broken:
            try:
                return self._stream.write(data)
            except BrokenPipeError:
                self._owner._broke()
        return len(data)

    def flush(self) -> None:
        if self._stream is not None and not self._owner.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._owner._broke()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)
