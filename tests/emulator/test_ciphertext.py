"""The emulator's own symmetric ciphertext format."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.emulator._ciphertext import (
    MAX_CIPHERTEXT_SIZE,
    OVERHEAD,
    canonical_context,
    open_blob,
    parse_blob,
    seal,
)
from attested.errors import MalformedError

KEY = bytes(range(32))
KEY_ID = str(uuid.UUID(int=7))


def test_round_trip_names_its_key_and_binds_the_context() -> None:
    blob = seal(KEY, KEY_ID, b"secret", {"purpose": "test"})
    assert len(blob) == OVERHEAD + 6
    parsed = parse_blob(blob)
    assert parsed.key_id == KEY_ID
    assert open_blob(KEY, parsed, {"purpose": "test"}) == b"secret"
    for context in ({}, {"purpose": "Test"}, {"purpose": "test", "x": ""}):
        with pytest.raises(MalformedError):
            open_blob(KEY, parsed, context)
    with pytest.raises(MalformedError):
        open_blob(os.urandom(32), parsed, {"purpose": "test"})


def test_the_key_id_is_authenticated() -> None:
    blob = bytearray(seal(KEY, KEY_ID, b"secret", {}))
    blob[5] ^= 1
    parsed = parse_blob(bytes(blob))
    assert parsed.key_id != KEY_ID
    with pytest.raises(MalformedError):
        open_blob(KEY, parsed, {})


def test_context_encoding_is_canonical_and_unambiguous() -> None:
    assert canonical_context({"a": "1", "b": "2"}) == canonical_context({"b": "2", "a": "1"})
    assert canonical_context({"ab": "c"}) != canonical_context({"a": "bc"})
    with pytest.raises(ValueError, match="larger"):
        canonical_context({"k": "v" * 9000})


def test_size_bounds() -> None:
    with pytest.raises(ValueError, match="too large"):
        seal(KEY, KEY_ID, bytes(MAX_CIPHERTEXT_SIZE), {})
    for size in (0, OVERHEAD, MAX_CIPHERTEXT_SIZE + 1):
        with pytest.raises(MalformedError):
            parse_blob(b"\x01" + bytes(max(size - 1, 0)))


@given(st.binary(max_size=7000))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        parsed = parse_blob(data)
    except MalformedError:
        return
    with pytest.raises(MalformedError):
        open_blob(KEY, parsed, {})


@given(st.data())
def test_any_single_byte_change_is_refused(data: st.DataObject) -> None:
    blob = bytearray(seal(KEY, KEY_ID, b"some plaintext", {"k": "v"}))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(MalformedError):
        open_blob(KEY, parse_blob(bytes(blob)), {"k": "v"})
