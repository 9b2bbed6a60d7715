"""A small, strict CBOR encoder and decoder for exactly the NSM's message shapes.

Why hand-written: ``nsm`` must work with the standard library alone (an enclave image
may carry nothing else, and ``nsm`` must import without ``attested``), and the standard
library has no CBOR. The NSM's messages need only a sliver of RFC 8949, so this module
implements only that sliver and refuses the rest:

* encoded: ``None``, ``bool``, non-negative ``int`` (< 2**64), ``bytes``, ``str``,
  ``list`` and ``dict`` with ``str`` keys (in insertion order, as serde emits struct
  fields), always with the shortest head;
* decoded: unsigned integers, byte and text strings (definite or chunked), arrays, maps
  with text keys, ``false``/``true``/``null``. Negative integers, tags, floats, other
  simple values, duplicate map keys, trailing bytes and nesting deeper than
  ``max_depth`` are refused. Every length is checked against the bytes that remain
  before anything is allocated, and the whole input is capped at ``max_size``.

Every decoding failure raises :class:`nsm.errors.InvalidResponse`: what is decoded here
is always a reply from the NSM, and a reply we cannot read is an invalid response.
Non-minimal heads are accepted (as serde_cbor, which libnsm uses, accepts them): they
are harmless here, because nothing in this envelope is signed (the attestation document
inside it carries its own signature and is verified elsewhere).
"""

from __future__ import annotations

import struct

from nsm.errors import InvalidResponse
from nsm.types import RESPONSE_MAX_SIZE

__all__ = ["CborValue", "decode", "encode", "head_size"]

CborValue = None | bool | int | bytes | str | list["CborValue"] | dict[str, "CborValue"]

_UINT, _NEGINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6
_BREAK = 0xFF
_INDEFINITE = 31
_MAX_UINT = 2**64 - 1
_DEFAULT_MAX_DEPTH = 8


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value <= 0xFF:
        return bytes([major << 5 | 24, value])
    if value <= 0xFFFF:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value <= 0xFFFFFFFF:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    return bytes([major << 5 | 27]) + struct.pack(">Q", value)


def head_size(argument: int) -> int:
    """Bytes taken by the shortest head carrying ``argument`` (a length or an integer)."""
    if argument < 24:
        return 1
    if argument <= 0xFF:
        return 2
    if argument <= 0xFFFF:
        return 3
    return 5 if argument <= 0xFFFFFFFF else 9


def encode(value: CborValue) -> bytes:
    """Encode a value built from the supported types.

    Args:
        value: ``None``, ``bool``, ``int`` in ``[0, 2**64)``, ``bytes``, ``str``, or a
            ``list``/``dict`` (with ``str`` keys) of these.

    Returns:
        The CBOR encoding, shortest heads, map entries in insertion order.

    Raises:
        TypeError: a value of another type.
        ValueError: an integer out of range.
    """
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: CborValue) -> None:
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if not 0 <= value <= _MAX_UINT:
            raise ValueError("only integers in [0, 2**64) are encoded")
        out += _head(_UINT, value)
    elif isinstance(value, bytes):
        out += _head(_BYTES, len(value))
        out += value
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += _head(_TEXT, len(raw))
        out += raw
    elif isinstance(value, list):
        out += _head(_ARRAY, len(value))
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, dict):
        out += _head(_MAP, len(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("map keys must be str")
            _encode_into(out, key)
            _encode_into(out, item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def decode(
    data: bytes, *, max_size: int = RESPONSE_MAX_SIZE, max_depth: int = _DEFAULT_MAX_DEPTH
) -> CborValue:
    """Decode exactly one CBOR item that fills ``data``.

    Args:
        data: the encoded item.
        max_size: refuse longer input without reading it.
        max_depth: deepest nesting of arrays and maps allowed.

    Returns:
        The decoded value.

    Raises:
        InvalidResponse: the input is too long, malformed, uses an unsupported feature,
            or has bytes after the item.
    """
    if len(data) > max_size:
        raise InvalidResponse(f"NSM reply of {len(data)} bytes exceeds {max_size}")
    decoder = _Decoder(bytes(data), max_depth)
    value = decoder.item(0)
    if decoder.pos != len(data):
        raise InvalidResponse(f"NSM reply has {len(data) - decoder.pos} bytes after its CBOR item")
    return value


class _Break:
    """The break stop code, seen only inside indefinite-length items."""


_BREAK_MARK = _Break()


class _Decoder:
    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise InvalidResponse(f"NSM reply truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def head(self) -> tuple[int, int, int | None]:
        """Major type, additional info, and the argument (``None`` if indefinite)."""
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info <= 27:
            return major, info, int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == _INDEFINITE:
            return major, info, None
        raise InvalidResponse(f"reserved CBOR additional information {info} at byte {self.pos - 1}")

    def item(self, depth: int) -> CborValue:
        value = self._item(depth)
        if isinstance(value, _Break):
            raise InvalidResponse(f"unexpected CBOR break at byte {self.pos - 1}")
        return value

    def _item(self, depth: int) -> CborValue | _Break:
        start = self.pos
        major, _info, arg = self.head()
        if major == _UINT and arg is not None:
            return arg
        if major in (_BYTES, _TEXT):
            raw = self._string(major, arg)
            if major == _BYTES:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidResponse(f"invalid UTF-8 in CBOR text at byte {start}") from exc
        if major in (_ARRAY, _MAP):
            if depth >= self.max_depth:
                raise InvalidResponse(f"CBOR nesting deeper than {self.max_depth}")
            if major == _ARRAY:
                return self._array(arg, depth + 1)
            return self._map(arg, depth + 1)
        if major == _SIMPLE:
            simple = {_FALSE: False, _TRUE: True, _NULL: None}
            initial = self.data[start]
            if initial in simple:
                return simple[initial]
            if initial == _BREAK:
                return _BREAK_MARK
        what = {_NEGINT: "negative integer", _TAG: "tag", _SIMPLE: "float or simple value"}.get(
            major, "item"
        )
        raise InvalidResponse(f"unsupported CBOR {what} at byte {start}")

    def _string(self, major: int, length: int | None) -> bytes:
        if length is not None:
            return self.take(length)
        chunks: list[bytes] = []
        while True:
            start = self.pos
            chunk_major, _, chunk_length = self.head()
            if self.data[start] == _BREAK:
                return b"".join(chunks)
            if chunk_major != major or chunk_length is None:
                raise InvalidResponse(f"bad chunk in indefinite-length CBOR string at byte {start}")
            chunks.append(self.take(chunk_length))

    def _count(self, count: int | None) -> int | None:
        # Every item takes at least one byte: a count beyond the remaining bytes is a lie.
        if count is not None and count > len(self.data) - self.pos:
            raise InvalidResponse(f"CBOR length {count} exceeds the reply at byte {self.pos}")
        return count

    def _array(self, count: int | None, depth: int) -> list[CborValue]:
        items: list[CborValue] = []
        count = self._count(count)
        while count is None or len(items) < count:
            value = self._item(depth)
            if isinstance(value, _Break):
                if count is None:
                    return items
                raise InvalidResponse(f"unexpected CBOR break at byte {self.pos - 1}")
            items.append(value)
        return items

    def _map(self, count: int | None, depth: int) -> dict[str, CborValue]:
        result: dict[str, CborValue] = {}
        count = self._count(count)
        while count is None or len(result) < count:
            key_at = self.pos
            key = self._item(depth)
            if isinstance(key, _Break) and count is None:
                return result
            if not isinstance(key, str):
                raise InvalidResponse(f"CBOR map key at byte {key_at} is not text")
            if key in result:
                raise InvalidResponse(f"duplicate CBOR map key {key!r:.40} at byte {key_at}")
            result[key] = self.item(depth)
        return result
