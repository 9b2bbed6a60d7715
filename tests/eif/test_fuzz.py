"""Arbitrary and mutated EIFs raise only MalformedError (or parse), never anything else."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from attested.eif import EifLimits, read_eif
from attested.errors import MalformedError
from tests.eif.images import build_image, make_signer

_SIGNED = build_image(
    kernel=b"K" * 300, ramdisks=(b"boot" * 20, b"app" * 30), signer=make_signer()
).data
_HEADER = _SIGNED[:548]
_LIMITS = EifLimits(max_metadata_size=4096, max_signature_size=8192)


def _read(data: bytes, parallel: bool = False) -> None:
    try:
        image = read_eif(io.BytesIO(data), limits=_LIMITS, chunk_size=4096, parallel=parallel)
    except MalformedError:
        return
    # Whatever parsed must be self-consistent.
    assert image.size == len(data)
    assert sum(12 + s.size for s in image.sections) + 548 == len(data)


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    _read(data)


@settings(max_examples=300)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_after_a_valid_header(tail: bytes) -> None:
    _read(_HEADER + tail)


@settings(max_examples=400)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_SIGNED) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.booleans(),
)
def test_mutated_signed_image(changes: list[tuple[int, int]], parallel: bool) -> None:
    data = bytearray(_SIGNED)
    for offset, value in changes:
        data[offset] = value
    _read(bytes(data), parallel=parallel)


@settings(max_examples=200)
@given(st.integers(0, len(_SIGNED)), st.binary(min_size=0, max_size=64))
def test_truncated_or_spliced_image(cut: int, insert: bytes) -> None:
    _read(_SIGNED[:cut] + insert + _SIGNED[cut:][: len(_SIGNED) // 2])
