"""The strict CBOR layer and COSE_Sign1 parsing."""

from __future__ import annotations

import cbor2
import pytest

from attested import MalformedError, _cbor, _cose


def _decode(data: bytes, depth: int = 4) -> object:
    return _cbor.decode(data, what="item", max_size=1024, max_depth=depth)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ("00", 0),
        ("3863", -100),
        ("43010203", b"\x01\x02\x03"),
        ("5f4201024103ff", b"\x01\x02\x03"),  # indefinite byte string
        ("63616263", "abc"),
        ("7f61616162ff", "ab"),  # indefinite text string
        ("83010203", [1, 2, 3]),
        ("9f0102ff", [1, 2]),
        ("a2616101616202", {"a": 1, "b": 2}),
        ("bf616101ff", {"a": 1}),
        ("f6", None),
        ("f5", True),
    ],
)
def test_accepts_the_plain_data_model(data: str, value: object) -> None:
    assert _decode(bytes.fromhex(data)) == value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "empty"),
        ("0000", "trailing"),
        ("a2616101616102", "Duplicate"),
        ("c11a5f000000", "tag"),  # epoch datetime
        ("c249010000000000000000", "tag"),  # bignum
        ("d81c81d81d00", "tag"),  # shared reference
        ("d9d9f700", "tag"),  # self-describe
        ("fb3ff0000000000000", "float"),
        ("f97e00", "float"),  # NaN
        ("f7", "undefined"),
        ("f0", "simple"),
        ("a1f500", "keys"),  # boolean key
        ("a1410000", "keys"),  # byte string key
        ("818181818100", "deeper"),
        ("62fffe", "CBOR"),  # invalid UTF-8
        ("9bffffffffffffffff", "CBOR"),  # huge count, no items
        ("5bffffffffffffffff", "CBOR"),  # huge length, no bytes
        ("ff", "CBOR"),
        ("1c", "CBOR"),  # reserved additional info
    ],
)
def test_refuses_everything_else(data: str, reason: str) -> None:
    with pytest.raises(MalformedError) as info:
        _decode(bytes.fromhex(data))
    assert reason.lower() in str(info.value).lower() or reason == "CBOR"


def test_size_cap_is_checked_before_decoding() -> None:
    with pytest.raises(MalformedError, match="limit"):
        _cbor.decode(bytes(2000), what="item", max_size=1024, max_depth=2)
    with pytest.raises(TypeError):
        _cbor.decode(bytearray(b"\x00"), what="item", max_size=10, max_depth=1)  # type: ignore[arg-type]


def test_sig_structure_is_built_from_received_bytes() -> None:
    # A protected header encoded with a non-minimal length still signs its exact bytes.
    protected = bytes.fromhex("a101" + "3822")
    assert _cose.sig_structure(protected, b"p") == cbor2.dumps(["Signature1", protected, b"", b"p"])


def test_parse_sign1_shapes() -> None:
    body = cbor2.dumps([_cose.PROTECTED_ES384, {}, b"payload", bytes(96)])
    message = _cose.parse_sign1(body, max_size=1024)
    assert (message.payload, message.tagged) == (b"payload", False)
    assert _cose.parse_sign1(b"\xd2" + body, max_size=1024).tagged
    detached = cbor2.dumps([_cose.PROTECTED_ES384, {}, None, bytes(96)])
    with pytest.raises(MalformedError, match="attached"):
        _cose.parse_sign1(detached, max_size=1024)
    unprotected = cbor2.dumps([_cose.PROTECTED_ES384, {4: b"kid"}, b"p", bytes(96)])
    with pytest.raises(MalformedError, match="unprotected header must be empty"):
        _cose.parse_sign1(unprotected, max_size=1024)
    with pytest.raises(MalformedError):
        _cose.parse_sign1(b"\xd2\xd2" + body, max_size=1024)
