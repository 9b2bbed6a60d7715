"""The request schema on its own: the strict JSON reader, field checks, one place per route."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.kms.client import CHINA_REGIONS_ONLY, DATA_KEY_SPECS, KEY_PAIR_SPECS
from attested.service._errors import ApiError
from attested.service._schema import MAX_DEPTH, parse_body, routes

ROUTES = routes(any_key=False, region="us-east-1")
DECRYPT = ROUTES["/v1/decrypt"].fields


def _code(body: bytes) -> str:
    with pytest.raises(ApiError) as info:
        parse_body(body, DECRYPT, max_size=64 * 1024)
    return info.value.code


@pytest.mark.parametrize(
    "body",
    [
        b'{"key_id": "a", "key_id": "b"}',  # a duplicate key is ambiguous
        b'{"ciphertext_blob": NaN}',
        b'{"ciphertext_blob": Infinity}',
        '{"key_id": "a"}'.encode("utf-16"),  # JSON between systems is UTF-8 (RFC 8259)
        b'\xef\xbb\xbf{"key_id": "a"}',  # so is a byte order mark
        b'{"encryption_context": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
        b"[1, 2]",
        b"",
    ],
)
def test_what_is_not_one_plain_json_object_is_malformed_json(body: bytes) -> None:
    assert _code(body) == "malformed_json"


def test_a_body_over_the_cap_is_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as info:
        parse_body(b'{"key_id": "' + b"a" * 100 + b'"}', DECRYPT, max_size=64)
    assert info.value.code == "malformed_json"


def test_fields_are_checked_by_their_route() -> None:
    blob = '"AAEC"'
    assert parse_body(
        f'{{"ciphertext_blob": {blob}, "key_id": "k"}}'.encode(), DECRYPT, max_size=1024
    ) == {"ciphertext_blob": b"\x00\x01\x02", "key_id": "k"}
    assert _code(b'{"ciphertext_blob": "AAEC", "nope": 1}') == "unknown_field"
    assert _code(b'{"ciphertext_blob": "AAEC"}') == "missing_field"
    assert _code(b'{"ciphertext_blob": "AAE", "key_id": "k"}') == "invalid_base64"
    assert _code(b'{"ciphertext_blob": "AAEC", "key_id": 1}') == "invalid_field"


def test_the_specs_are_the_kms_clients_and_china_only_outside_china() -> None:
    specs = ROUTES["/v1/generate-data-key-pair"].fields["key_pair_spec"]
    assert set(specs.choices) == KEY_PAIR_SPECS
    assert set(specs.unavailable) == CHINA_REGIONS_ONLY
    assert set(ROUTES["/v1/generate-data-key"].fields["key_spec"].choices) == DATA_KEY_SPECS
    china = routes(any_key=True, region="cn-north-1")
    assert not china["/v1/generate-data-key-pair"].fields["key_pair_spec"].unavailable
    assert not china["/v1/decrypt"].fields["key_id"].required


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    route=st.sampled_from(sorted(ROUTES)),
    body=st.binary(max_size=300)
    | _JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from(sorted({n for r in ROUTES.values() for n in r.fields})), _JSON
    ).map(lambda v: json.dumps(v).encode()),
)
def test_any_body_is_parsed_or_refused_with_our_error(route: str, body: bytes) -> None:
    codes = {"malformed_json", "unknown_field", "missing_field", "invalid_field", "invalid_base64"}
    code = ""
    try:
        parse_body(body, ROUTES[route].fields, max_size=64 * 1024)
    except ApiError as error:
        code = error.code
    assert not code or code in codes
