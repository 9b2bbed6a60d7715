"""Arbitrary bytes and single-byte mutations of real documents: only our errors, never success."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested import (
    MalformedError,
    Policy,
    SecurityWarning,
    VerificationError,
    Verifier,
    parse_attestation,
)
from tests.kit import real_vectors, sidecar

REAL = [(p.read_bytes(), p) for p in real_vectors()]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", SecurityWarning)
    ANY = Policy(pcrs={}, unsafe_any_pcrs=True, allow_debug=True)
VERIFIER = Verifier.aws_nitro()
UNCACHED = Verifier.aws_nitro(cache_size=0)


@given(st.binary(max_size=6000))
@settings(max_examples=400)
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_attestation(data)


@given(st.binary(max_size=200).map(lambda b: b"\x84" + b), st.booleans())
@settings(max_examples=300)
def test_arbitrary_arrays_raise_only_malformed(data: bytes, tagged: bool) -> None:
    with pytest.raises(MalformedError):
        parse_attestation(b"\xd2" + data if tagged else data)


def _at(path) -> datetime:
    return datetime.fromisoformat(sidecar(path)["decoded_by_helper"]["timestamp_iso"])


@given(
    st.sampled_from(range(len(REAL))),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
)
@settings(max_examples=600)
def test_single_byte_mutation_never_verifies(which: int, position: int, flip: int) -> None:
    data, path = REAL[which]
    mutated = bytearray(data)
    mutated[position % len(data)] ^= flip
    at = _at(path)
    outcomes = []
    for verifier in (VERIFIER, UNCACHED):
        try:
            verifier.verify(bytes(mutated), policy=ANY, at=at + timedelta(milliseconds=1))
        except (MalformedError, VerificationError) as exc:
            outcomes.append(type(exc))
        else:  # pragma: no cover - this is the failure being tested for
            pytest.fail(f"mutated document verified (byte {position % len(data)})")
    # The cache never changes the verdict's kind.
    assert outcomes[0] is outcomes[1]


@given(st.sampled_from(range(len(REAL))), st.integers(min_value=1, max_value=200))
@settings(max_examples=200)
def test_truncation_never_verifies(which: int, cut: int) -> None:
    data, path = REAL[which]
    with pytest.raises((MalformedError, VerificationError)):
        VERIFIER.verify(data[:-cut], policy=ANY, at=_at(path))
