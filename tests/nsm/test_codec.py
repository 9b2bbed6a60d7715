"""The stdlib CBOR codec and the NSM message shapes, against exact bytes and cbor2."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsm import _cbor, _messages
from nsm.errors import (
    InvalidIndex,
    InvalidResponse,
    NsmError,
    ReadOnlyIndex,
)
from nsm.types import RESPONSE_MAX_SIZE, Description, Digest, ErrorCode


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- requests: exact bytes ---------------------------------------------------------------

# The first three are quoted from the research notes (what serde_cbor/cbor2 emit); the
# others are derived by hand from RFC 8949 heads.
REQUESTS = [
    (_messages.describe_nsm(), "6b44657363726962654e534d"),
    (_messages.get_random(), "6947657452616e646f6d"),
    (
        _messages.attestation(user_data=None, nonce=None, public_key=None),
        "a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e6365f66a7075626c69635f6b6579f6",
    ),
    (
        _messages.attestation(user_data=b"", nonce=b"\x00", public_key=None),
        "a1 6b 4174746573746174696f6e a3 69 757365725f64617461 40 65 6e6f6e6365 41 00"
        " 6a 7075626c69635f6b6579 f6",
    ),
    (_messages.describe_pcr(3), "a1 6b 4465736372696265504352 a1 65 696e646578 03"),
    (
        _messages.extend_pcr(16, b"\x01\x02"),
        "a1 69 457874656e64504352 a2 65 696e646578 10 64 64617461 42 0102",
    ),
    (_messages.lock_pcr(300), "a1 67 4c6f636b504352 a1 65 696e646578 19 012c"),
    (_messages.lock_pcrs(16), "a1 68 4c6f636b50435273 a1 65 72616e6765 10"),
]


@pytest.mark.parametrize(("encoded", "expected"), REQUESTS)
def test_requests_are_the_exact_bytes_the_nsm_expects(encoded, expected) -> None:
    assert encoded == h(expected)


def test_long_fields_use_the_two_byte_length_head() -> None:
    request = _messages.attestation(user_data=b"\xaa" * 300, nonce=None, public_key=None)
    assert request[:2] == h("a1 6b")
    assert h("69 757365725f64617461 59 012c") + b"\xaa" * 300 in request
    empty = _messages.attestation(user_data=None, nonce=None, public_key=None)
    assert len(request) == len(empty) - 1 + 3 + 300  # null (1 byte) -> head (3) + data


# -- the codec against cbor2 ------------------------------------------------------------

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=0, max_value=2**64 - 1)
    | st.binary(max_size=300)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(values)
def test_encoding_matches_cbor2(value) -> None:
    assert _cbor.encode(value) == cbor2.dumps(value)


@given(values)
def test_decoding_inverts_encoding(value) -> None:
    assert _cbor.decode(cbor2.dumps(value), max_size=1 << 20) == value


def test_encoder_refuses_what_the_nsm_never_receives() -> None:
    with pytest.raises(ValueError, match="2\\*\\*64"):
        _cbor.encode(-1)
    with pytest.raises(TypeError):
        _cbor.encode(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _cbor.encode({1: b""})  # type: ignore[dict-item]


def test_indefinite_lengths_are_accepted() -> None:
    # {_ "a": [_ 1, 2], "b": (_ h'01', h'0203'), "c": (_ "x", "y")}
    data = h("bf 61 61 9f 01 02 ff 61 62 5f 41 01 42 0203 ff 61 63 7f 61 78 61 79 ff ff")
    assert _cbor.decode(data) == {"a": [1, 2], "b": b"\x01\x02\x03", "c": "xy"}


def test_non_minimal_heads_are_accepted() -> None:
    assert _cbor.decode(h("18 05")) == 5
    assert _cbor.decode(h("1b 0000000000000005")) == 5


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (h("01 02"), "trailing bytes"),
        (h("20"), "negative integer"),
        (h("c1 01"), "tag"),
        (h("f9 3c00"), "half float"),
        (h("fb 3ff0000000000000"), "double"),
        (h("f7"), "undefined"),
        (h("f8 14"), "two-byte simple value"),
        (h("e0"), "simple value 0"),
        (h("a2 61 61 01 61 61 02"), "duplicate key"),
        (h("a1 01 02"), "integer key"),
        (h("a1 41 61 02"), "byte-string key"),
        (h("81" * 9 + "01"), "nesting deeper than 8"),
        (h("43 0102"), "truncated byte string"),
        (h("1a 0000"), "truncated head"),
        (h("1c"), "reserved additional information"),
        (h("ff"), "lone break"),
        (h("82 01 ff"), "break in a definite array"),
        (h("62 c328"), "invalid UTF-8"),
        (h("9b 00000000ffffffff 01"), "count beyond the input"),
        (h("5f 61 61 ff"), "text chunk in a byte string"),
        (h("5f 5f ff ff"), "indefinite chunk"),
        (h("1f"), "indefinite integer"),
        (h("bf 61 61"), "unterminated indefinite map"),
        (b"", "empty"),
    ],
)
def test_decoder_refuses(data, why) -> None:
    with pytest.raises(InvalidResponse):
        _cbor.decode(data)


def test_decoder_refuses_oversized_input_before_reading_it() -> None:
    with pytest.raises(InvalidResponse, match="exceeds"):
        _cbor.decode(b"\x00" * (RESPONSE_MAX_SIZE + 1))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_invalid_response(data) -> None:
    with contextlib.suppress(InvalidResponse):
        _cbor.decode(data)


# -- responses ---------------------------------------------------------------------------

DESCRIBE_REPLY = {
    "DescribeNSM": {
        "version_major": 1,
        "version_minor": 0,
        "version_patch": 0,
        "module_id": "i-00c89f181802cdef4-enc0175cd0dcee36866",
        "max_pcrs": 32,
        "locked_pcrs": list(range(16)),
        "digest": "SHA384",
    }
}

VALID_REPLIES = [
    cbor2.dumps({"Attestation": {"document": b"\x84" * 100}}),
    cbor2.dumps({"GetRandom": {"random": bytes(range(256))}}),
    cbor2.dumps({"DescribePCR": {"lock": True, "data": b"\x11" * 48}}),
    cbor2.dumps({"ExtendPCR": {"data": b"\x22" * 48}}),
    cbor2.dumps("LockPCR"),
    cbor2.dumps(DESCRIBE_REPLY),
    cbor2.dumps({"Error": "ReadOnlyIndex"}),
]

PARSERS = [
    _messages.attestation_reply,
    _messages.get_random_reply,
    _messages.describe_pcr_reply,
    _messages.extend_pcr_reply,
    lambda data: _messages.lock_reply(data, "LockPCR"),
    _messages.describe_nsm_reply,
]


def test_replies_parse_into_typed_values() -> None:
    assert _messages.attestation_reply(VALID_REPLIES[0]) == b"\x84" * 100
    assert _messages.get_random_reply(VALID_REPLIES[1]) == bytes(range(256))
    assert _messages.describe_pcr_reply(VALID_REPLIES[2]) == (True, b"\x11" * 48)
    assert _messages.extend_pcr_reply(VALID_REPLIES[3]) == b"\x22" * 48
    _messages.lock_reply(VALID_REPLIES[4], "LockPCR")
    assert _messages.describe_nsm_reply(VALID_REPLIES[5]) == Description(
        version=(1, 0, 0),
        module_id="i-00c89f181802cdef4-enc0175cd0dcee36866",
        max_pcrs=32,
        locked_pcrs=tuple(range(16)),
        digest=Digest.SHA384,
    )


def test_unknown_extra_fields_are_ignored_as_serde_does() -> None:
    reply = {"DescribePCR": {"lock": False, "data": b"\x00" * 48, "future": [1, 2]}}
    assert _messages.describe_pcr_reply(cbor2.dumps(reply)) == (False, b"\x00" * 48)


@pytest.mark.parametrize("code", [c for c in ErrorCode if c is not ErrorCode.SUCCESS])
@pytest.mark.parametrize("parse", PARSERS)
def test_error_replies_raise_the_class_of_their_code(code, parse) -> None:
    with pytest.raises(NsmError) as raised:
        parse(cbor2.dumps({"Error": code.wire_name}))
    assert type(raised.value).__name__ == code.wire_name
    assert raised.value.code is code


def test_wire_names_are_the_rust_variant_names() -> None:
    assert [c.wire_name for c in ErrorCode] == [
        "Success",
        "InvalidArgument",
        "InvalidIndex",
        "InvalidResponse",
        "ReadOnlyIndex",
        "InvalidOperation",
        "BufferTooSmall",
        "InputTooLarge",
        "InternalError",
    ]


@pytest.mark.parametrize(
    "reply",
    [
        {"Error": "Success"},
        {"Error": "NoSuchError"},
        {"Error": 2},
        {"GetRandom": {"random": b"x"}},  # the wrong variant
        {"Attestation": {"document": "text"}},
        {"Attestation": {}},
        {"Attestation": b"x"},
        {"Attestation": {"document": b"x"}, "Extra": 1},
        "Attestation",
        [1, 2],
    ],
)
def test_unexpected_replies_are_invalid_responses(reply) -> None:
    with pytest.raises(InvalidResponse):
        _messages.attestation_reply(cbor2.dumps(reply))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version_major", 70000),
        ("version_minor", -1),
        ("max_pcrs", True),
        ("module_id", b"bytes"),
        ("locked_pcrs", {"a": 1}),
        ("locked_pcrs", [1, "2"]),
        ("locked_pcrs", [65536]),
        ("digest", "MD5"),
        ("digest", 1),
    ],
)
def test_describe_reply_fields_are_checked(field, value) -> None:
    reply = {"DescribeNSM": dict(DESCRIBE_REPLY["DescribeNSM"], **{field: value})}
    with pytest.raises(InvalidResponse):
        _messages.describe_nsm_reply(cbor2.dumps(reply))


def test_describe_reply_missing_a_field_is_invalid() -> None:
    fields = dict(DESCRIBE_REPLY["DescribeNSM"])
    del fields["digest"]
    with pytest.raises(InvalidResponse):
        _messages.describe_nsm_reply(cbor2.dumps({"DescribeNSM": fields}))


def test_lock_reply_must_be_the_unit_variant() -> None:
    with pytest.raises(InvalidResponse):
        _messages.lock_reply(cbor2.dumps("LockPCRs"), "LockPCR")
    with pytest.raises(InvalidIndex):
        _messages.lock_reply(cbor2.dumps({"Error": "InvalidIndex"}), "LockPCRs")


@given(st.binary(max_size=300), st.sampled_from(PARSERS))
def test_arbitrary_replies_raise_only_nsm_errors(data, parse) -> None:
    with contextlib.suppress(NsmError):
        parse(data)


@given(st.sampled_from(VALID_REPLIES), st.data())
def test_mutated_replies_raise_only_nsm_errors(reply, data) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(reply) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    mutated = reply[:position] + bytes([byte]) + reply[position + 1 :]
    parse = data.draw(st.sampled_from(PARSERS))
    with contextlib.suppress(NsmError):
        parse(mutated)


def test_error_reply_for_a_locked_pcr() -> None:
    with pytest.raises(ReadOnlyIndex):
        _messages.extend_pcr_reply(VALID_REPLIES[6])


optional_fields = st.none() | st.binary(max_size=70000)


@given(optional_fields, optional_fields, optional_fields)
def test_attestation_size_is_the_encoded_size(user_data, nonce, public_key) -> None:
    fields = {"user_data": user_data, "nonce": nonce, "public_key": public_key}
    assert _messages.attestation_size(**fields) == len(_messages.attestation(**fields))


@given(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=70000))
def test_extend_size_is_the_encoded_size(index, data) -> None:
    assert _messages.extend_pcr_size(index, data) == len(_messages.extend_pcr(index, data))


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
def test_head_sizes_at_the_boundaries(length) -> None:
    assert _cbor.head_size(length) == len(cbor2.dumps(length))
