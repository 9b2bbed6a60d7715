"""The CRC-32 combination used by parallel mode, against zlib itself."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.eif._crc import combine


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("length", [1 << 20, (1 << 20) + 7, 3 << 24])
def test_combine_long_pieces(length: int) -> None:
    head, tail = b"eif header", bytes(length)
    assert combine(zlib.crc32(head), zlib.crc32(tail), length) == zlib.crc32(head + tail)


def test_combine_folds_many_pieces_in_order() -> None:
    pieces = [bytes([i]) * (i * 37 + 1) for i in range(50)]
    crc = 0
    for piece in pieces:
        crc = combine(crc, zlib.crc32(piece), len(piece))
    assert crc == zlib.crc32(b"".join(pieces))
    with pytest.raises(ValueError, match="negative"):
        combine(0, 0, -1)
