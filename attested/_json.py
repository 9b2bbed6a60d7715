"""Strict, size-capped JSON decoding for inputs we judge (policies, measurements, metadata).

The standard library's decoder keeps the last of duplicate keys, accepts ``NaN`` and
``Infinity``, and recurses without a bound of its own. For a key policy a duplicate key
is a real ambiguity (``{"StringEquals": {...}, "StringEquals": {...}}`` keeps only one
block in most parsers), so :func:`loads` refuses it, with the other two.
"""

from __future__ import annotations

import json
from typing import NoReturn

from attested.errors import MalformedError

__all__ = ["loads"]


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(f"duplicate key {key!r:.60}")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _depth(value: object, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise MalformedError(f"JSON nesting deeper than {max_depth}")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def loads(data: bytes, *, what: str, max_size: int, max_depth: int = 64) -> object:
    """Decode one JSON document.

    Args:
        data: UTF-8 JSON (a BOM is refused, as RFC 8259 allows).
        what: a short name for error messages.
        max_size: refuse longer input before decoding.
        max_depth: maximum nesting of arrays and objects.

    Returns:
        The decoded value.

    Raises:
        MalformedError: too large, not UTF-8, not JSON, duplicate keys, ``NaN``/``Infinity``,
            or nested too deeply.
    """
    if len(data) > max_size:
        raise MalformedError(f"{what} is {len(data)} bytes, more than the limit of {max_size}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        value: object = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise MalformedError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _Duplicate as exc:
        raise MalformedError(f"{what} has a {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedError(f"{what} is not acceptable JSON: {exc}") from None
    _depth(value, max_depth)
    return value
