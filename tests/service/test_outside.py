"""The vsock listener faces the parent instance: no secret, no caller's public key.

vsock loopback is not available here, so the vsock listener's application (chosen by the
same `app_for_listener` the service uses) is served on a real loopback TCP server.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attested.errors import ConfigError
from attested.net import parse_address
from attested.policy import Policy
from attested.service import Service, ServiceConfig
from attested.service._http import HttpServer
from attested.service._service import app_for_listener
from attested.simulator import SimulatedNsm
from attested.verify import Verifier
from tests.service.conftest import Emu, StartService
from tests.service.helpers import PCR0

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Outside:
    """A client of the vsock listener's application, over loopback TCP."""

    def __init__(self, server: HttpServer) -> None:
        self.port = server.address.port or 0

    def call(self, method: str, route: str, value: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = None if value is None else json.dumps(value)
            conn.request(method, route, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        ctype = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if "json" in ctype else data.decode()


def _serve(service: Service, kind: str, config: ServiceConfig) -> HttpServer:
    assert service._app is not None
    server = HttpServer(
        parse_address("tcp:127.0.0.1:0"), app_for_listener(kind, service._app, config)
    )
    server.start()
    return server


@pytest.fixture
def outside(start_service: StartService) -> Iterator[tuple[Outside, Service]]:
    service = start_service()
    server = _serve(service, "vsock", service.config)
    try:
        yield Outside(server), service
    finally:
        server.stop(deadline=5)


def test_outside_callers_get_no_secret(
    outside: tuple[Outside, Service], emu: Emu, sim_nsm: SimulatedNsm
) -> None:
    client, _ = outside
    keys = emu.keys
    blob = emu.boto().encrypt(KeyId=keys.good, Plaintext=b"inside only")["CiphertextBlob"]
    refused = {
        "/v1/decrypt": {"ciphertext_blob": b64(blob), "key_id": keys.good},
        "/v1/generate-data-key": {"key_id": keys.good},
        "/v1/generate-data-key-pair": {"key_id": keys.good, "key_pair_spec": "RSA_2048"},
        "/v1/generate-random": {"number_of_bytes": 16},
        "/v1/derive-shared-secret": {"key_id": keys.agreement, "public_key": b64(b"x")},
        "/v1/some-future-route": {},
    }
    for route, body in refused.items():
        status, answer = client.call("POST", route, body)
        assert status == 403, (route, answer)
        assert answer["error"] == "not_served_outside"

    # A relying party's nonce is fine; the document verifies and carries it.
    nonce = b"relying party nonce 0001"
    status, answer = client.call("POST", "/v1/attestation", {"nonce": b64(nonce)})
    assert status == 200, answer
    Verifier(trust_root=sim_nsm.trust_root).verify(
        base64.b64decode(answer["document"]), policy=Policy(pcrs={0: PCR0}, nonce=nonce)
    )
    # A caller's public key is not: KMS would encrypt this enclave's answers to it.
    status, answer = client.call(
        "POST", "/v1/attestation", {"nonce": b64(nonce), "public_key": b64(b"parent key")}
    )
    assert status == 403
    assert answer["error"] == "public_key_not_served_outside"
    # Malformed bodies still get the API's own 400.
    assert client.call("POST", "/v1/attestation", "not an object")[0] == 400

    assert client.call("GET", "/v1/health")[0] == 200
    status, text = client.call("GET", "/metrics")
    assert status == 200
    assert 'route="/v1/decrypt"' not in text  # refused before the API counted anything


def test_inside_listeners_and_the_explicit_opt_in_serve_everything(
    start_service: StartService, emu: Emu, short_dir: Path
) -> None:
    service = start_service()
    for kind, config in (
        ("unix", service.config),
        ("tcp", service.config),
        (
            "vsock",
            dataclasses.replace(
                service.config, api_vsock="vsock:ANY:5000", api_vsock_allow_secrets=True
            ),
        ),
    ):
        server = _serve(service, kind, config)
        try:
            status, answer = Outside(server).call(
                "POST", "/v1/generate-random", {"number_of_bytes": 8}
            )
            assert status == 200, (kind, answer)
            status, answer = Outside(server).call(
                "POST", "/v1/attestation", {"public_key": b64(b"in-enclave key")}
            )
            assert status == 200, (kind, answer)
        finally:
            server.stop(deadline=5)


def test_the_opt_in_needs_a_vsock_listener() -> None:
    with pytest.raises(ConfigError) as caught:
        ServiceConfig(allowed_keys=("*",), api_vsock_allow_secrets=True)
    assert "api.vsock_allow_secrets: applies only with api.vsock" in caught.value.problems
