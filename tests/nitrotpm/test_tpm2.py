"""The TPM 2.0 marshalling: known-answer commands, response parsing, codes named, fuzzing."""

from __future__ import annotations

import contextlib
import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.errors import AttestationUnavailable, AttestedError, MalformedError, TpmError
from attested.nitrotpm import _tpm2

INDEX = 0x01000002
PW = "00000009" + "40000009" + "0000" + "00" + "0000"  # one empty password session


def test_vendor_command_is_what_vaportpm_sends() -> None:
    # tag SESSIONS, size 31, 0x20000001, auth handle and index both the NV index, one
    # password session, no parameters (crates/vaportpm-attest/src/nsm.rs).
    assert (
        _tpm2.nsm_request(INDEX).hex() == "8002" + "0000001f" + "20000001" + ("01000002" * 2) + PW
    )


def test_nv_commands_have_the_part_3_layout() -> None:
    assert _tpm2.nv_undefine_space(INDEX).hex() == (
        "8002" + "0000001f" + "00000122" + "40000001" + "01000002" + PW
    )
    assert _tpm2.nv_read(INDEX, 1024, 2048).hex() == (
        "8002" + "00000023" + "0000014e" + "01000002" * 2 + PW + "0400" + "0800"
    )
    assert _tpm2.nv_write(INDEX, b"\xaa\xbb", 7).hex() == (
        "8002" + "00000025" + "00000137" + "01000002" * 2 + PW + "0002aabb" + "0007"
    )
    # TPMS_NV_PUBLIC: index, SHA-256, AUTHREAD|AUTHWRITE, no policy, 8192 bytes.
    public = "01000002" + "000b" + "00040004" + "0000" + "2000"
    assert _tpm2.nv_define_space(INDEX, 8192).hex() == (
        "8002" + "0000002d" + "0000012a" + "40000001" + PW + "0000" + "000e" + public
    )
    assert _tpm2.get_capability(6, 0x106, 2).hex() == (
        "8001" + "00000016" + "0000017a" + "00000006" + "00000106" + "00000002"
    )


def _ok(parameters: bytes) -> bytes:
    body = struct.pack(">I", len(parameters)) + parameters + b"\x00\x00\x01\x00\x00"
    return struct.pack(">HII", 0x8002, 10 + len(body), 0) + body


def test_a_session_response_gives_its_parameters() -> None:
    data = b"\x00\x03abc"
    assert _tpm2.parse_response(_ok(data), _tpm2.nv_read(INDEX, 3, 0)) == data
    assert _tpm2.parse_nv_read(data, 3) == b"abc"


def test_an_error_code_is_a_tpm_error_naming_command_and_code() -> None:
    response = struct.pack(">HII", 0x8001, 10, 0x14C)
    with pytest.raises(TpmError) as caught:
        _tpm2.parse_response(response, _tpm2.nv_define_space(INDEX, 8192))
    assert caught.value.command == "TPM2_NV_DefineSpace"
    assert caught.value.code == 0x14C
    assert "TPM_RC_NV_DEFINED (0x14c): the NV index is already defined" in str(caught.value)
    assert isinstance(caught.value, AttestationUnavailable)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0x143, "TPM_RC_COMMAND_CODE (0x143): command code not supported (not a NitroTPM?)"),
        (0x98E, "TPM_RC_AUTH_FAIL (0x98e) (session 1)"),
        (0x1C4, "TPM_RC_VALUE (0x1c4) (parameter 1)"),
        (0x18B, "TPM_RC_HANDLE (0x18b) (handle 1)"),
        (0x922, "TPM_RC_RETRY (0x922)"),
        (0x14B, "TPM_RC_NV_SPACE (0x14b): insufficient space"),
        (0x401, "vendor-defined TPM response code 0x401"),
        (0x01E, "TPM 1.2 response code 0x1e"),
        (0x17F, "TPM_RC 0x17f"),
    ],
)
def test_response_codes_are_named(code: int, text: str) -> None:
    assert text in _tpm2.describe_rc(code)


def test_a_response_of_another_size_than_its_header_says_is_malformed() -> None:
    response = _ok(b"\x00\x00")
    with pytest.raises(MalformedError, match="says it is 21 bytes but 20 arrived"):
        _tpm2.parse_response(response[:-1], _tpm2.nv_read(INDEX, 0, 0))


def test_an_oversize_header_is_refused_before_reading_the_rest() -> None:
    with pytest.raises(MalformedError, match="says it is 1000000 bytes; accepted are 10 to 4096"):
        _tpm2.parse_header(struct.pack(">HII", 0x8001, 1_000_000, 0))


def test_properties_and_handles_are_parsed() -> None:
    props = struct.pack(">BII", 0, 6, 2) + struct.pack(
        ">IIII", 0x106, 0x4E697472, 0x107, 0x6F54504D
    )
    parsed, more = _tpm2.parse_properties(props)
    assert _tpm2.vendor_string(parsed) == "NitroTPM"
    assert not more
    handles = struct.pack(">BII", 1, 1, 2) + struct.pack(">II", 0x01000000, 0x01000001)
    assert _tpm2.parse_handles(handles) == ([0x01000000, 0x01000001], True)


def test_nsm_request_is_the_enclave_request_with_byte_strings() -> None:
    request = _tpm2.encode_nsm_request(user_data=b"u", nonce=None, public_key=b"")
    assert cbor2.loads(request) == {
        "Attestation": {"user_data": b"u", "nonce": None, "public_key": b""}
    }


def test_nsm_response_is_read_past_padding_and_errors_are_unavailable() -> None:
    document = b"\x84doc"
    padded = cbor2.dumps({"Attestation": {"document": document}}) + b"\xff" * 100
    assert _tpm2.decode_nsm_response(padded) == document
    with pytest.raises(AttestationUnavailable, match="answered with the error 'InvalidArgument'"):
        _tpm2.decode_nsm_response(cbor2.dumps({"Error": "InvalidArgument"}) + b"\xff")
    with pytest.raises(MalformedError, match="not an Attestation document"):
        _tpm2.decode_nsm_response(cbor2.dumps({"Describe": {}}))
    with pytest.raises(MalformedError):
        _tpm2.decode_nsm_response(b"\xff" * 64)


_COMMANDS = [
    _tpm2.nv_read(INDEX, 16, 0),
    _tpm2.get_capability(1, 0x01000000, 64),
    _tpm2.nsm_request(INDEX),
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), which=st.integers(0, len(_COMMANDS) - 1))
def test_arbitrary_responses_raise_only_our_errors(data: bytes, which: int) -> None:
    with contextlib.suppress(AttestedError):
        _tpm2.parse_response(data, _COMMANDS[which])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), size=st.integers(0, 64))
def test_arbitrary_parameters_raise_only_our_errors(data: bytes, size: int) -> None:
    for parse in (_tpm2.parse_properties, _tpm2.parse_handles):
        with contextlib.suppress(AttestedError):
            parse(data)
    with contextlib.suppress(AttestedError):
        _tpm2.parse_nv_read(data, size)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_nv_contents_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(AttestedError):
        _tpm2.decode_nsm_response(data)


@settings(max_examples=200, deadline=None)
@given(
    document=st.binary(min_size=1, max_size=200),
    padding=st.binary(max_size=100),
)
def test_any_document_comes_back_whatever_follows_it(document: bytes, padding: bytes) -> None:
    encoded = cbor2.dumps({"Attestation": {"document": document}})
    assert _tpm2.decode_nsm_response(encoded + padding) == document


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 0xFFFFFFFF))
def test_every_code_is_described(code: int) -> None:
    text = _tpm2.describe_rc(code)
    assert f"0x{code:x}" in text
