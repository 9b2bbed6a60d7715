"""CRC-32 combination (zlib's ``crc32_combine``, which Python's zlib module does not expose).

``combine(crc32(a), crc32(b), len(b)) == crc32(a + b)``: it lets two threads compute the
CRC of alternate chunks of an EIF, which are then folded together in file order.

The arithmetic is zlib 1.2.12's (``crc32.c``: ``multmodp``, ``x2nmodp``): CRC-32 is a
polynomial remainder, and appending ``n`` bytes multiplies the first CRC by
``x^(8n) mod P``. Written here because the standard library has no binding for it; it is
checked against ``zlib.crc32`` by a property test.
"""

from __future__ import annotations

import functools

__all__ = ["combine"]

_POLY = 0xEDB88320  # reflected CRC-32/ISO-HDLC polynomial


def _multmodp(a: int, b: int) -> int:
    """``a * b mod P`` for reflected 32-bit polynomials."""
    m = 1 << 31
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    table = []
    p = 1 << 30  # x^1
    table.append(p)
    for _ in range(31):
        p = _multmodp(p, p)
        table.append(p)
    return tuple(table)


_X2N = _x2n_table()  # x^(2^k) mod P


@functools.lru_cache(maxsize=64)
def _shift(length: int) -> int:
    """``x^(8 * length) mod P``: the operator for appending ``length`` bytes."""
    p = 1 << 31  # x^0
    k = 3  # 2^3 = 8 bits per byte
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


def combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``."""
    if length2 < 0:
        raise ValueError("length must not be negative")
    return _multmodp(_shift(length2), crc1) ^ crc2
