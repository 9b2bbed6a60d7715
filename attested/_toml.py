"""Size-, depth- and range-capped TOML decoding for the configuration files.

The standard library's :mod:`tomllib` has no bounds of its own. It recurses once per
nesting level, so ``a = [[[[...`` 2,000 levels deep raises :class:`RecursionError`; it
converts integer literals with ``int()``, which refuses more than 4,300 decimal digits
with a :class:`ValueError` that is not a ``TOMLDecodeError``; and it accepts integers of
any size although TOML allows only 64-bit ones. Dotted table headers nest without
recursion (``[a.a.a. ...]``), so a document can also come out deeper than any code that
later walks or prints it expects. :func:`loads` turns all of these into one
:class:`~attested.errors.MalformedError`.
"""

from __future__ import annotations

import tomllib
from typing import Any

from attested.errors import MalformedError

__all__ = ["MAX_DEPTH", "loads"]

MAX_DEPTH = 16
"""Tables and arrays nested deeper than this are refused; our files need four or five."""

_INT64 = (-(2**63), 2**63 - 1)


def _check(document: dict[str, Any], max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise MalformedError(f"tables and arrays are nested more than {max_depth} deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and not _INT64[0] <= item <= _INT64[1]:
            raise MalformedError("an integer is outside the 64-bit range TOML allows")


def loads(data: bytes | str, *, max_size: int, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Decode one TOML document.

    Args:
        data: the document: UTF-8 bytes, or text (which must be encodable as UTF-8).
        max_size: refuse longer input (bytes, or characters of text) before decoding.
        max_depth: maximum nesting of tables and arrays (the document itself is level 0).

    Returns:
        The decoded document.

    Raises:
        MalformedError: too large, not UTF-8, not TOML, nested too deeply, or an integer
            outside the 64-bit range; the message does not repeat the input.
    """
    if len(data) > max_size:
        limit = f"{max_size >> 20} MiB" if max_size % (1 << 20) == 0 else f"{max_size} bytes"
        raise MalformedError(f"larger than {limit}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedError(
                f"not UTF-8 text (a lone surrogate at character {exc.start})"
            ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MalformedError(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise MalformedError(
            f"not valid TOML: tables and arrays are nested more than {max_depth} deep"
        ) from None
    except ValueError:  # int() of a literal with thousands of digits
        raise MalformedError("not valid TOML: a value that cannot be converted") from None
    try:
        _check(document, max_depth)
    except MalformedError as exc:
        raise MalformedError(f"not valid TOML: {exc}") from None
    return document
