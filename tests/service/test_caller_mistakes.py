"""A caller's mistake is a 400 that names the field, never a 5xx that blames KMS.

A real service (simulated NSM, the KMS emulator over HTTP) answers requests whose fields
have the right JSON types but values KMS refuses: lone surrogates in strings, an
encryption algorithm or key that does not fit, key specs KMS offers only in the China
Regions. Then hypothesis sweeps every route's request schema.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attested.kms.client import (
    CHINA_REGIONS_ONLY,
    DATA_KEY_SPECS,
    ENCRYPTION_ALGORITHMS,
    KEY_PAIR_SPECS,
)
from attested.kms.credentials import StaticCredentials
from attested.service import ERROR_CODES, Service
from tests.service.conftest import Emu, StartService, service_config
from tests.service.helpers import ACCESS_KEY, SECRET, ApiClient

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(api: ApiClient, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as JSON with \\u escapes, so lone surrogates travel as JSON allows."""
    answer = api.request("POST", route, json.dumps(body, ensure_ascii=True).encode())
    return answer.status, answer.json()


@pytest.fixture(scope="module")
def any_key_api(emu: Emu, sim_state: Path) -> Iterator[ApiClient]:
    """A service that lets every key id through to KMS (``kms.allowed_keys = ["*"]``)."""
    directory = Path(tempfile.mkdtemp(prefix="att-mistakes-", dir="/tmp"))
    config = service_config(emu, sim_state, directory, allowed_keys=("*",))
    service = Service(
        config, credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET)
    )
    service.start()
    client = ApiClient(str(service.listeners["unix"].path))
    try:
        yield client
    finally:
        client.close()
        service.stop(deadline=5.0)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def blob(emu: Emu) -> str:
    return b64(emu.boto().encrypt(KeyId=emu.keys.good, Plaintext=b"x")["CiphertextBlob"])


@pytest.fixture(scope="module")
def spki() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64(der)


# -- the findings of the review, one by one --------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"encryption_context": {"app": "\ud800"}}, "encryption_context"),
        ({"encryption_context": {"\udfff": "v"}}, "encryption_context"),
        ({"grant_tokens": ["ok", "a\udc00b"]}, "grant_tokens"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    any_key_api: ApiClient, emu: Emu, blob: str, change: dict[str, Any], field: str
) -> None:
    for route, body in [
        ("/v1/decrypt", {"ciphertext_blob": blob, "key_id": emu.keys.good}),
        ("/v1/generate-data-key", {"key_id": emu.keys.good}),
        ("/v1/generate-data-key-pair", {"key_id": emu.keys.good, "key_pair_spec": "RSA_2048"}),
    ]:
        status, answer = post(any_key_api, route, {**body, **change})
        assert (status, answer["error"]) == (400, "invalid_field"), (route, answer)
        assert answer["message"].startswith(field), answer
        assert "\ud800" not in answer["message"]
        assert "\udc00" not in answer["message"]
        assert "\udfff" not in answer["message"]


def test_a_lone_surrogate_in_a_key_id_is_400(any_key_api: ApiClient, blob: str) -> None:
    status, answer = post(
        any_key_api, "/v1/decrypt", {"ciphertext_blob": blob, "key_id": "k\ud800"}
    )
    assert (status, answer["error"]) == (400, "invalid_field")
    assert answer["message"].startswith("key_id")


def test_a_lone_surrogate_in_a_derive_grant_token_is_400(
    any_key_api: ApiClient, emu: Emu, spki: str
) -> None:
    body = {"key_id": emu.keys.agreement, "public_key": spki, "grant_tokens": ["\ud800"]}
    status, answer = post(any_key_api, "/v1/derive-shared-secret", body)
    assert (status, answer["error"]) == (400, "invalid_field")
    assert answer["message"].startswith("grant_tokens")


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_an_algorithm_that_does_not_fit_the_key_is_400(
    any_key_api: ApiClient, emu: Emu, blob: str, algorithm: str
) -> None:
    body = {"ciphertext_blob": blob, "key_id": emu.keys.good, "encryption_algorithm": algorithm}
    status, answer = post(any_key_api, "/v1/decrypt", body)
    assert (status, answer["error"]) == (400, "kms_invalid_request"), answer
    assert "encryption_algorithm" in answer["message"]
    assert algorithm in answer["message"]


def test_a_key_of_the_wrong_kind_is_400(
    any_key_api: ApiClient, emu: Emu, blob: str, spki: str
) -> None:
    keys = emu.keys
    for route, body in [
        ("/v1/decrypt", {"ciphertext_blob": blob, "key_id": keys.agreement}),
        ("/v1/generate-data-key", {"key_id": keys.agreement}),
        ("/v1/derive-shared-secret", {"key_id": keys.good, "public_key": spki}),
    ]:
        status, answer = post(any_key_api, route, body)
        assert status == 400, (route, answer)
        # KMS names the mistake for a ciphertext under another key (IncorrectKeyException)
        # and for a key of the wrong usage (InvalidKeyUsageException): both the caller's.
        assert answer["error"] in (
            "kms_invalid_request",
            "kms_invalid_ciphertext",
            "kms_incorrect_key",
        ), answer


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/generate-data-key-pair", "key_pair_spec", "SM2"),
        ("/v1/decrypt", "encryption_algorithm", "SM2PKE"),
    ],
)
def test_sm2_outside_the_china_regions_is_400(
    any_key_api: ApiClient, emu: Emu, blob: str, route: str, field: str, value: str
) -> None:
    base = (
        {"key_id": emu.keys.good}
        if route.endswith("pair")
        else {"ciphertext_blob": blob, "key_id": emu.keys.good}
    )
    status, answer = post(any_key_api, route, {**base, field: value})
    assert (status, answer["error"]) == (400, "invalid_field"), answer
    assert answer["message"].startswith(field)
    assert "China" in answer["message"]


def test_sm2_is_passed_to_kms_in_a_china_region(start_service: StartService) -> None:
    """In cn-north-1 the service does not refuse SM2 itself (the emulator does not do SM2)."""
    service = start_service(region="cn-north-1", allowed_keys=("*",))
    with ApiClient(str(service.listeners["unix"].path)) as api:
        body = {"key_id": "alias/any", "key_pair_spec": "SM2"}
        _, answer = post(api, "/v1/generate-data-key-pair", body)
    assert answer["error"] != "invalid_field", answer
    assert not answer["message"].startswith("key_pair_spec"), answer


# -- every route's schema ---------------------------------------------------------------------

SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
TEXT = st.one_of(
    st.text(max_size=12),
    SURROGATES,
    st.tuples(st.text(max_size=4), SURROGATES, st.text(max_size=4)).map("".join),
)
ALGORITHMS = ["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"]
PAIR_SPECS = [
    "RSA_2048",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
    "SM2",
]


def _fields(emu: Emu, blob: str, spki: str) -> dict[str, st.SearchStrategy[Any]]:
    keys = emu.keys
    key_ids = st.sampled_from([keys.good, keys.good_alias, keys.agreement, keys.missing]) | TEXT
    binary = st.binary(min_size=1, max_size=40).map(b64)
    return {
        "key_id": key_ids,
        "ciphertext_blob": st.sampled_from([blob]) | binary,
        "encryption_context": st.dictionaries(TEXT, TEXT, max_size=3),
        "grant_tokens": st.lists(TEXT, max_size=3),
        "encryption_algorithm": st.sampled_from(ALGORITHMS),
        "key_spec": st.sampled_from(["AES_256", "AES_128"]),
        "number_of_bytes": st.integers(1, 1024),
        "plaintext_bytes": st.integers(0, 2**40),
        "key_pair_spec": st.sampled_from(PAIR_SPECS),
        "public_key": st.sampled_from([spki]) | binary,
        "key_agreement_algorithm": st.just("ECDH"),
        "nonce": binary,
        "user_data": binary,
    }


ROUTES = {
    "/v1/decrypt": (
        ["ciphertext_blob"],
        ["key_id", "encryption_context", "grant_tokens", "encryption_algorithm"],
    ),
    "/v1/generate-data-key": (
        ["key_id"],
        ["key_spec", "number_of_bytes", "encryption_context", "grant_tokens", "plaintext_bytes"],
    ),
    "/v1/generate-data-key-pair": (
        ["key_id", "key_pair_spec"],
        ["encryption_context", "grant_tokens"],
    ),
    "/v1/generate-random": (["number_of_bytes"], []),
    "/v1/derive-shared-secret": (
        ["key_id", "public_key"],
        ["key_agreement_algorithm", "grant_tokens"],
    ),
    "/v1/attestation": ([], ["nonce", "user_data", "public_key"]),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_request_of_the_right_shape_gets_a_5xx(
    any_key_api: ApiClient, emu: Emu, blob: str, spki: str, route: str
) -> None:
    """Whatever values a caller sends in well-typed fields, the answer is 200 or 4xx."""
    fields = _fields(emu, blob, spki)
    required, optional = ROUTES[route]
    body = st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: fields[name] for name in optional},
    )

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=body)
    def run(body: dict[str, Any]) -> None:
        status, answer = post(any_key_api, route, body)
        assert status < 500, (body, answer)
        if status >= 400:
            assert ERROR_CODES[answer["error"]][0] == status

    run()


def test_the_openapi_enums_are_the_kms_clients_values() -> None:
    spec = yaml.safe_load(resources.files("attested.service").joinpath("openapi.yaml").read_text())
    schemas = spec["components"]["schemas"]
    enums = {
        "key_spec": schemas["GenerateDataKeyRequest"]["properties"]["key_spec"]["enum"],
        "key_pair_spec": schemas["GenerateDataKeyPairRequest"]["properties"]["key_pair_spec"][
            "enum"
        ],
        "encryption_algorithm": schemas["DecryptRequest"]["properties"]["encryption_algorithm"][
            "enum"
        ],
    }
    assert enums == {
        "key_spec": sorted(DATA_KEY_SPECS),
        "key_pair_spec": sorted(KEY_PAIR_SPECS),
        "encryption_algorithm": sorted(ENCRYPTION_ALGORITHMS),
    }
    assert CHINA_REGIONS_ONLY <= KEY_PAIR_SPECS | ENCRYPTION_ALGORITHMS
