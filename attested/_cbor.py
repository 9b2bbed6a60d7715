"""Strict CBOR decoding on top of cbor2.

cbor2 is a well-kept decoder, but by default it is lenient in ways that matter for
evidence: it takes the last of duplicate map keys, decodes two dozen semantic tags
(shared references, big floats, dates, ...), and ignores bytes after the first item.
:func:`decode` switches all of that off: duplicate keys, every tag, floats and trailing
bytes are refused, nesting is capped, and every failure becomes a
:class:`~attested.errors.MalformedError`. Definite and indefinite lengths are both
accepted, because real NSMs emit both.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, NoReturn

import cbor2

from attested.errors import MalformedError

__all__ = ["decode", "encode"]

# Every tag number cbor2 decodes by itself (RFC 8949 and the IANA registry entries it
# implements). Unknown tags go through the tag hook instead; both paths refuse.
_BUILTIN_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799,
)  # fmt: skip


def _refuse_semantic(value: object, immutable: bool) -> NoReturn:
    raise cbor2.CBORDecodeError("CBOR tags are not allowed here")


def _refuse_tag(tag: cbor2.CBORTag, immutable: bool) -> NoReturn:
    raise cbor2.CBORDecodeError(f"CBOR tag {tag.tag} is not allowed here")


_NO_SEMANTICS: Mapping[int, Any] = {tag: _refuse_semantic for tag in _BUILTIN_TAGS}


def _check_types(value: object, depth: int, max_depth: int) -> None:
    """Refuse anything that is not int, bytes, str, bool, None, list or dict."""
    if depth > max_depth:
        raise MalformedError(f"CBOR nesting deeper than {max_depth}")
    if value is None or isinstance(value, bool | int | bytes | str):
        return
    if isinstance(value, list):
        for item in value:
            _check_types(item, depth + 1, max_depth)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, int | str) or isinstance(key, bool):
                raise MalformedError("CBOR map keys must be integers or text")
            _check_types(item, depth + 1, max_depth)
        return
    raise MalformedError(f"CBOR value of type {type(value).__name__} is not allowed")


def decode(
    data: bytes, *, what: str, max_size: int, max_depth: int, trailing: bool = False
) -> object:
    """Decode exactly one CBOR item from ``data``.

    Args:
        data: the encoded item; nothing may follow it unless ``trailing``.
        what: a short name for error messages (``"payload"``).
        max_size: refuse ``data`` longer than this before decoding.
        max_depth: maximum container nesting.
        trailing: ignore bytes after the item (a NitroTPM answers in a fixed-size NV
            index whose tail holds padding or the request's leftovers).

    Returns:
        The item, made only of ``int``, ``bytes``, ``str``, ``bool``, ``None``,
        ``list`` and ``dict`` (with integer or text keys).

    Raises:
        MalformedError: for anything else, including trailing bytes, duplicate map keys,
            tags, floats, undefined, and input over ``max_size``.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise MalformedError(f"{what} is {len(data)} bytes, more than the limit of {max_size}")
    if not data:
        raise MalformedError(f"{what} is empty")
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            semantic_decoders=_NO_SEMANTICS,
            max_depth=max_depth + 1,
            allow_duplicate_keys=False,
            strict_hashable_types=False,
        )
        value = decoder.decode()
    except MalformedError:
        raise
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedError(f"{what} is not valid CBOR: {_short(exc)}") from exc
    if not trailing and stream.tell() != len(data):
        raise MalformedError(
            f"{what} has {len(data) - stream.tell()} trailing bytes after the CBOR item"
        )
    _check_types(value, 0, max_depth)
    return value


def encode(value: object) -> bytes:
    """Encode ``value`` as CBOR (definite lengths, keys in the order given)."""
    return cbor2.dumps(value)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
