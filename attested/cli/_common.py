"""Helpers shared by the subcommands: input reading, argument parsing, rendering."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_ENV = 3

MAX_INPUT_SIZE = 1024 * 1024


class CliError(Exception):
    """A problem to report on stderr with a given exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CliError:
    """A usage error (exit 2)."""
    return CliError(message, EXIT_USAGE)


def env_error(message: str) -> CliError:
    """An I/O or environment error (exit 3)."""
    return CliError(message, EXIT_ENV)


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
        raise CliError(f"{what} is larger than {max_size} bytes", EXIT_FAIL)
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
