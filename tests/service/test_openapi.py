"""The running service against its OpenAPI description (attested/service/openapi.yaml).

Every answer to a curated set of requests, and to generated bodies for every route, must
have a status the description lists for that operation and a body that validates
against the schema it gives (with openapi-schema-validator's OpenAPI 3.0 dialect, where
``format: byte`` is checked as base64). Every request property the description names is
accepted, and nothing else is.
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
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from attested.kms.credentials import StaticCredentials
from attested.service import ERROR_CODES, Service
from tests.service.conftest import Emu, service_config
from tests.service.helpers import ACCESS_KEY, SECRET, Answer, ApiClient

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = yaml.safe_load(
    resources.files("attested.service").joinpath("openapi.yaml").read_text()
)


def _validator(schema: dict[str, Any]) -> OAS30Validator:
    document = {**schema, "components": SPEC["components"]}
    return OAS30Validator(document, format_checker=oas30_format_checker)


def _resolve(item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        parts = item["$ref"].removeprefix("#/").split("/")
        target: Any = SPEC
        for part in parts:
            target = target[part]
        item = target
    return item


ERROR_VALIDATOR = _validator({"$ref": "#/components/schemas/Error"})


def check(method: str, path: str, answer: Answer) -> None:
    """The answer is one the description allows for this operation."""
    operation = SPEC["paths"].get(path, {}).get(method.lower())
    if operation is None:
        # Not an operation of the API: only 404 (no route) and 405 (other method) are right.
        assert answer.status == (405 if path in SPEC["paths"] else 404), answer.body
        ERROR_VALIDATOR.validate(json.loads(answer.body))
        return
    responses = operation["responses"]
    assert str(answer.status) in responses, (method, path, answer.status, answer.body)
    response = _resolve(responses[str(answer.status)])
    [(content_type, media)] = response["content"].items()
    assert answer.headers["content-type"].split(";")[0] == content_type
    if content_type == "application/json":
        _validator(media["schema"]).validate(json.loads(answer.body))
        if answer.status >= 400:
            code = json.loads(answer.body)["error"]
            assert ERROR_CODES[code][0] == answer.status


@pytest.fixture(scope="module")
def api_socket(emu: Emu, sim_state: Path) -> Iterator[str]:
    """One service for the module (starting one per test is slow)."""
    directory = Path(tempfile.mkdtemp(prefix="att-oas-", dir="/tmp"))
    config = service_config(emu, sim_state, directory, cache_enabled=True)
    service = Service(
        config, credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET)
    )
    service.start()
    try:
        yield str(service.listeners["unix"].path)
    finally:
        service.stop(deadline=5.0)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def api(api_socket: str) -> Iterator[ApiClient]:
    """A client of its own for each test: a connection one test breaks stays with it."""
    with ApiClient(api_socket) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_description_covers_exactly_the_routes() -> None:
    assert set(SPEC["paths"]) == {
        "/v1/decrypt",
        "/v1/generate-data-key",
        "/v1/generate-data-key-pair",
        "/v1/generate-random",
        "/v1/derive-shared-secret",
        "/v1/attestation",
        "/v1/health",
        "/v1/health/live",
        "/v1/health/ready",
        "/metrics",
    }


def test_curated_requests(api: ApiClient, emu: Emu) -> None:
    keys = emu.keys
    blob = emu.boto().encrypt(KeyId=keys.good, Plaintext=b"spec")["CiphertextBlob"]
    other = emu.boto().encrypt(KeyId=keys.other, Plaintext=b"spec")["CiphertextBlob"]

    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": keys.good}),
        ("POST", "/v1/decrypt", {"ciphertext_blob": b64(other), "key_id": keys.other}),
        ("POST", "/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": keys.missing}),
        ("POST", "/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": "not-allowed"}),
        ("POST", "/v1/decrypt", {"ciphertext_blob": "%%%", "key_id": keys.good}),
        ("POST", "/v1/decrypt", b'{"ciphertext_blob": '),
        ("POST", "/v1/decrypt", {"ciphertext_blob": "A" * 70000}),
        ("POST", "/v1/generate-data-key", {"key_id": keys.good, "key_spec": "AES_128"}),
        ("POST", "/v1/generate-data-key", {"key_id": keys.good, "number_of_bytes": 64}),
        ("POST", "/v1/generate-data-key", {"key_id": keys.good, "plaintext_bytes": 10}),
        ("POST", "/v1/generate-data-key", {"key_id": keys.other}),
        ("POST", "/v1/generate-data-key", {"key_id": keys.missing}),
        (
            "POST",
            "/v1/generate-data-key-pair",
            {"key_id": keys.good, "key_pair_spec": "RSA_2048", "encryption_context": {"a": "b"}},
        ),
        ("POST", "/v1/generate-data-key-pair", {"key_id": keys.good}),
        ("POST", "/v1/generate-random", {"number_of_bytes": 1024}),
        ("POST", "/v1/generate-random", {"number_of_bytes": 1025}),
        ("POST", "/v1/derive-shared-secret", {"key_id": keys.agreement, "public_key": b64(spki)}),
        ("POST", "/v1/derive-shared-secret", {"key_id": keys.good, "public_key": b64(spki)}),
        ("POST", "/v1/attestation", {}),
        ("POST", "/v1/attestation", {"nonce": b64(b"n"), "public_key": b64(spki)}),
        ("POST", "/v1/attestation", {"nonce": "x"}),
        ("GET", "/v1/health", None),
        ("GET", "/v1/health/live", None),
        ("GET", "/v1/health/ready", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/decrypt", None),
        ("DELETE", "/v1/health", None),
        ("GET", "/v2/anything", None),
        ("POST", "/", {}),
    ]
    seen = set()
    for method, path, body in cases:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        answer = api.request(method, path, data)
        check(method, path, answer)
        seen.add((path, answer.status))
    # The curated set reaches the success and the main failure answers.
    for expected in [
        ("/v1/decrypt", 200),
        ("/v1/decrypt", 403),
        ("/v1/decrypt", 404),
        ("/v1/decrypt", 400),
        ("/v1/decrypt", 413),
        ("/v1/generate-data-key", 200),
        ("/v1/generate-data-key-pair", 200),
        ("/v1/derive-shared-secret", 200),
        ("/v1/attestation", 200),
    ]:
        assert expected in seen, expected


@pytest.mark.parametrize(
    "path",
    [p for p, item in SPEC["paths"].items() if "post" in item],
)
def test_every_described_property_is_accepted_and_no_other(api: ApiClient, path: str) -> None:
    schema = _resolve(
        SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    for name in schema["properties"]:
        answer = api.post(path, {name: None})
        check("POST", path, answer)
        if answer.status == 400:
            assert json.loads(answer.body)["error"] != "unknown_field", (path, name)
    answer = api.post(path, {"surprise": 1})
    check("POST", path, answer)
    assert json.loads(answer.body)["error"] == "unknown_field"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _bodies(path: str) -> st.SearchStrategy[dict[str, Any]]:
    schema = _resolve(
        SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    names = sorted(schema["properties"])
    values = JSON_VALUES | st.sampled_from(["AAAA", "QUJD", "=", "AES_256", "ECC_NIST_P256"])
    return st.dictionaries(st.sampled_from([*names, "extra"]), values, max_size=len(names))


@pytest.mark.parametrize("path", [p for p, item in SPEC["paths"].items() if "post" in item])
def test_generated_bodies_get_described_answers(api: ApiClient, path: str) -> None:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=_bodies(path))
    def run(body: dict[str, Any]) -> None:
        answer = api.post(path, body)
        check("POST", path, answer)

    run()
