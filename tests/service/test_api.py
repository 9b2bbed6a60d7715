"""The API end to end: a real service on a Unix socket, the simulated NSM, the KMS emulator."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attested import emulator
from attested.errors import ConfigurationError
from attested.kms.credentials import StaticCredentials
from attested.net import parse_address
from attested.policy import Policy
from attested.relay import EnclaveEgress, Relay
from attested.service import ERROR_CODES, Service
from attested.simulator import SimulatedNsm
from attested.verify import Verifier
from tests.kms.servers import closed_port
from tests.service.conftest import Emu, Keys, StartService, service_config
from tests.service.helpers import ACCESS_KEY, PCR0, SECRET, ApiClient, emulator_config

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_every_operation_round_trips(emu: Emu, socket_path: str, sim_nsm: SimulatedNsm) -> None:
    keys = emu.keys
    boto = emu.boto()
    blob = boto.encrypt(KeyId=keys.good, Plaintext=b"db password", EncryptionContext={"app": "a"})[
        "CiphertextBlob"
    ]
    with ApiClient(socket_path) as api:
        answer = api.post(
            "/v1/decrypt",
            {"ciphertext_blob": b64(blob), "key_id": keys.good, "encryption_context": {"app": "a"}},
        )
        assert answer.status == 200, answer.body
        assert unb64(answer.json()["plaintext"]) == b"db password"
        assert answer.json()["key_id"] == keys.good

        data_key = api.post("/v1/generate-data-key", {"key_id": keys.good_alias})
        assert data_key.status == 200, data_key.body
        body = data_key.json()
        assert len(unb64(body["plaintext"])) == 32
        assert body["cached"] is False
        again = api.post(
            "/v1/decrypt", {"ciphertext_blob": body["ciphertext_blob"], "key_id": keys.good}
        )
        assert again.json()["plaintext"] == body["plaintext"]

        pair = api.post(
            "/v1/generate-data-key-pair", {"key_id": keys.good, "key_pair_spec": "ECC_NIST_P256"}
        ).json()
        private = serialization.load_der_private_key(unb64(pair["private_key"]), None)
        assert private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == unb64(pair["public_key"])

        random = api.post("/v1/generate-random", {"number_of_bytes": 48})
        assert random.status == 200
        assert len(unb64(random.json()["random"])) == 48

        ours = ec.generate_private_key(ec.SECP256R1())
        kms_public = serialization.load_der_public_key(
            boto.get_public_key(KeyId=keys.agreement)["PublicKey"]
        )
        assert isinstance(kms_public, ec.EllipticCurvePublicKey)
        spki = ours.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        shared = api.post(
            "/v1/derive-shared-secret", {"key_id": keys.agreement, "public_key": b64(spki)}
        )
        assert shared.status == 200, shared.body
        assert unb64(shared.json()["shared_secret"]) == ours.exchange(ec.ECDH(), kms_public)

        nonce = os.urandom(32)
        document = api.post(
            "/v1/attestation", {"nonce": b64(nonce), "user_data": b64(b"hello")}
        ).json()["document"]
    verified = Verifier(trust_root=sim_nsm.trust_root).verify(
        unb64(document), policy=Policy(pcrs={0: PCR0}, nonce=nonce, user_data=b"hello")
    )
    assert verified.nonce == nonce


def test_health_and_metrics(emu: Emu, socket_path: str) -> None:
    with ApiClient(socket_path) as api:
        health = api.get("/v1/health")
        assert health.status == 200
        assert health.json()["status"] == "ok"
        assert health.json()["nsm_backend"] == "simulated"
        assert api.post("/v1/generate-random", {"number_of_bytes": 8}).status == 200
        api.post("/v1/decrypt", {"ciphertext_blob": b64(b"x" * 40), "key_id": emu.keys.good})
        api.post("/nowhere", {})
        metrics = api.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.body.decode()
    assert 'attested_service_requests_total{route="/v1/generate-random",status="200"} 1' in text
    assert 'attested_service_requests_total{route="other",status="404"} 1' in text
    assert 'attested_service_request_duration_seconds_count{route="/v1/generate-random"} 1' in text
    assert (
        'attested_service_kms_errors_total{operation="decrypt",type="kms_invalid_ciphertext"} 1'
        in text
    )
    for name in (
        "attested_service_credentials_expiry_seconds",
        "attested_service_datakey_cache_hits_total",
        "attested_relay_connections_total",
    ):
        assert f"# TYPE {name}" in text


def test_the_socket_has_mode_0660(socket_path: str) -> None:
    mode = os.stat(socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def _error(answer: object, status: int, code: str) -> str:
    assert answer.status == status, answer.body  # type: ignore[attr-defined]
    body = answer.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert ERROR_CODES[code][0] == status
    return str(body["message"])


def test_bad_input_is_refused_naming_the_field(emu: Emu, socket_path: str) -> None:
    key = emu.keys.good
    with ApiClient(socket_path) as api:
        _error(api.request("POST", "/v1/decrypt", b"{not json"), 400, "malformed_json")
        _error(api.request("POST", "/v1/decrypt", b"[1, 2]"), 400, "malformed_json")
        _error(api.request("POST", "/v1/decrypt", b'{"a": 1, "a": 2}'), 400, "malformed_json")
        _error(api.request("POST", "/v1/generate-random", b""), 400, "malformed_json")
        message = _error(
            api.post("/v1/decrypt", {"ciphertext_blob": "AAAA", "key_id": key, "plaintext": "x"}),
            400,
            "unknown_field",
        )
        assert "'plaintext'" in message
        message = _error(
            api.post("/v1/decrypt", {"ciphertext_blob": "not base64!", "key_id": key}),
            400,
            "invalid_base64",
        )
        assert "ciphertext_blob" in message
        _error(
            api.post("/v1/decrypt", {"ciphertext_blob": "QUJD", "key_id": key}),  # no padding issue
            400,
            "kms_invalid_ciphertext",
        )
        _error(
            api.post("/v1/decrypt", {"ciphertext_blob": "QUI", "key_id": key}),
            400,
            "invalid_base64",
        )
        assert "ciphertext_blob" in _error(
            api.post("/v1/decrypt", {"key_id": key}), 400, "missing_field"
        )
        assert "key_id" in _error(
            api.post("/v1/decrypt", {"ciphertext_blob": "QUJD"}), 400, "missing_field"
        )
        assert "number_of_bytes" in _error(
            api.post("/v1/generate-random", {"number_of_bytes": 0}), 400, "invalid_field"
        )
        _error(api.post("/v1/generate-random", {"number_of_bytes": True}), 400, "invalid_field")
        _error(api.post("/v1/generate-random", {"number_of_bytes": 1.5}), 400, "invalid_field")
        _error(
            api.post("/v1/generate-data-key", {"key_id": key, "key_spec": "AES_512"}),
            400,
            "invalid_field",
        )
        _error(
            api.post("/v1/generate-data-key", {"key_id": key, "encryption_context": {"a": 1}}),
            400,
            "invalid_field",
        )
        _error(
            api.post(
                "/v1/generate-data-key",
                {"key_id": key, "key_spec": "AES_128", "number_of_bytes": 5},
            ),
            400,
            "invalid_field",
        )
        _error(api.post("/v1/attestation", {"nonce": b64(bytes(600))}), 400, "invalid_field")
        _error(api.post("/v1/nothing-here", {}), 404, "not_found")
        _error(api.get("/"), 404, "not_found")
        answer = api.get("/v1/decrypt")
        _error(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "POST"
        _error(api.post("/v1/health", {}), 405, "method_not_allowed")
        big = json.dumps({"ciphertext_blob": "A" * 70000, "key_id": key}).encode()
        _error(api.request("POST", "/v1/decrypt", big), 413, "body_too_large")
        # The connection was closed after the 413; the client reconnects and goes on.
        assert api.get("/v1/health").status == 200


def test_keys_and_operations_outside_the_configuration_are_refused(
    emu: Emu, start_service: StartService
) -> None:
    service = start_service(
        allowed_keys=(emu.keys.good,), operations=frozenset({"decrypt", "generate-data-key"})
    )
    with ApiClient(str(service.listeners["unix"].path)) as api:
        message = _error(
            api.post("/v1/generate-data-key", {"key_id": emu.keys.other}), 403, "key_not_allowed"
        )
        assert emu.keys.other in message
        # The alias of an allowed key is another string: refused (exact matching).
        _error(
            api.post("/v1/generate-data-key", {"key_id": emu.keys.good_alias}),
            403,
            "key_not_allowed",
        )
        _error(
            api.post("/v1/generate-random", {"number_of_bytes": 8}), 403, "operation_not_allowed"
        )
        _error(api.post("/v1/attestation", {}), 403, "operation_not_allowed")
        assert api.post("/v1/generate-data-key", {"key_id": emu.keys.good}).status == 200


def test_decrypt_passes_key_id_so_kms_refuses_other_keys(
    emu: Emu, start_service: StartService
) -> None:
    boto = emu.boto()
    other_blob = boto.encrypt(KeyId=emu.keys.other, Plaintext=b"other key's secret")[
        "CiphertextBlob"
    ]
    service = start_service(allowed_keys=(emu.keys.good,))
    with ApiClient(str(service.listeners["unix"].path)) as api:
        answer = api.post(
            "/v1/decrypt", {"ciphertext_blob": b64(other_blob), "key_id": emu.keys.good}
        )
        _error(answer, 400, "kms_incorrect_key")
        assert b"other key's secret" not in answer.body


def test_kms_errors_keep_the_clients_actionable_message(emu: Emu, socket_path: str) -> None:
    boto = emu.boto()
    blob = boto.encrypt(KeyId=emu.keys.other, Plaintext=b"for another image")["CiphertextBlob"]
    with ApiClient(socket_path) as api:
        message = _error(
            api.post("/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": emu.keys.other}),
            403,
            "kms_access_denied",
        )
        assert f"PCR0={PCR0.hex()}" in message
        assert "key policy" in message
        message = _error(
            api.post("/v1/generate-data-key", {"key_id": emu.keys.missing}),
            404,
            "kms_key_not_found",
        )
        assert emu.keys.missing in message
        good_blob = boto.encrypt(
            KeyId=emu.keys.good, Plaintext=b"x", EncryptionContext={"app": "a"}
        )["CiphertextBlob"]
        message = _error(
            api.post(
                "/v1/decrypt",
                {
                    "ciphertext_blob": b64(good_blob),
                    "key_id": emu.keys.good,
                    "encryption_context": {"app": "b"},
                },
            ),
            400,
            "kms_invalid_ciphertext",
        )
        assert "encryption context" in message


def test_throttling_becomes_429(sim_nsm: SimulatedNsm, sim_state: Path, short_dir: Path) -> None:

    with emulator.KmsEmulator(emulator_config(sim_nsm, throttle_rate=1.0)) as server:
        running = Emu(server=server, keys=emu_keys_placeholder())
        config = service_config(running, sim_state, short_dir)
        with (
            Service(
                config,
                credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET),
            ) as service,
            ApiClient(str(service.listeners["unix"].path)) as api,
        ):
            answer = api.post("/v1/generate-random", {"number_of_bytes": 8})
    _error(answer, 429, "kms_throttled")
    assert answer.headers["retry-after"] == "1"


def emu_keys_placeholder() -> Keys:
    arn = "arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111"
    return Keys(good=arn, good_alias=arn, other=arn, agreement=arn, missing=arn)


def test_an_unreachable_kms_is_503(emu: Emu, start_service: StartService) -> None:
    service = start_service(kms_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    with ApiClient(str(service.listeners["unix"].path)) as api:
        message = _error(
            api.post("/v1/generate-random", {"number_of_bytes": 8}), 503, "kms_unreachable"
        )
    assert "could not connect" in message


def test_data_key_cache_follows_its_bounds(emu: Emu, start_service: StartService) -> None:
    service = start_service(cache_enabled=True, cache_max_messages=3, cache_max_bytes=1000)
    key = emu.keys.good
    with ApiClient(str(service.listeners["unix"].path)) as api:

        def ask(context: dict[str, str], plaintext_bytes: int = 0) -> dict[str, object]:
            answer = api.post(
                "/v1/generate-data-key",
                {"key_id": key, "encryption_context": context, "plaintext_bytes": plaintext_bytes},
            )
            assert answer.status == 200, answer.body
            return dict(answer.json())

        first = ask({"app": "a"})
        second = ask({"app": "a"})
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["plaintext"] == first["plaintext"]
        assert ask({"app": "b"})["cached"] is False  # another context, another key
        third = ask({"app": "a"})
        assert third["cached"] is True  # the third and last message of the entry
        fourth = ask({"app": "a"})
        assert fourth["cached"] is False
        assert fourth["plaintext"] != first["plaintext"]
        ask({"app": "c"}, plaintext_bytes=900)
        assert ask({"app": "c"}, plaintext_bytes=200)["cached"] is False  # 1100 > max_bytes
        metrics = api.get("/metrics").body.decode()
    assert "attested_service_datakey_cache_hits_total 2" in metrics


def test_any_key_needs_the_explicit_star(emu: Emu, start_service: StartService) -> None:
    blob = emu.boto().encrypt(KeyId=emu.keys.good, Plaintext=b"s")["CiphertextBlob"]
    service = start_service(allowed_keys=("*",))
    with ApiClient(str(service.listeners["unix"].path)) as api:
        answer = api.post("/v1/decrypt", {"ciphertext_blob": b64(blob)})  # no key_id needed
    assert answer.status == 200
    assert unb64(answer.json()["plaintext"]) == b"s"


def test_tcp_listener_on_loopback(emu: Emu, start_service: StartService) -> None:

    service = start_service(api_tcp="tcp:127.0.0.1:0")
    tcp = service.listeners["tcp"]
    assert tcp.port
    conn = http.client.HTTPConnection("127.0.0.1", tcp.port, timeout=10)
    try:
        conn.request("GET", "/v1/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_the_socket_directory_is_created(start_service: StartService, short_dir: Path) -> None:
    # Only the last component, as /run/attested under /run (issue 21): a typo such as
    # /nonexistent/dir fails, naming what is missing, instead of growing a tree.
    service = start_service(api_unix=str(short_dir / "attested" / "api.sock"))
    with ApiClient(str(service.listeners["unix"].path)) as api:
        assert api.get("/v1/health").status == 200
    with pytest.raises(ConfigurationError, match=f"the directory {short_dir / 'run'} does not"):
        start_service(api_unix=str(short_dir / "run" / "attested" / "api.sock"))
    assert not (short_dir / "run").exists()


def test_in_process_relays_show_in_metrics(emu: Emu, sim_state: Path, short_dir: Path) -> None:

    relay = Relay(
        [
            EnclaveEgress(
                listen=parse_address("tcp:127.0.0.1:0"),
                parent=parse_address(f"tcp:127.0.0.1:{closed_port()}"),
            )
        ]
    )
    relay.start()
    try:
        listen = relay.stats()["enclave-egress"].listen
        with socket.create_connection(("127.0.0.1", listen.port or 0), timeout=5) as conn:
            conn.sendall(b"CONNECT kms.us-east-1.amazonaws.com:443 HTTP/1.1\r\n\r\n")
            conn.recv(1024)
        config = service_config(emu, sim_state, short_dir)
        creds = StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET)
        with (
            Service(config, credentials=creds, relays=[relay]) as service,
            ApiClient(str(service.listeners["unix"].path)) as api,
        ):
            text = api.get("/metrics").body.decode()
    finally:
        relay.stop(deadline=5.0)
    assert 'attested_relay_connections_total{listener="enclave-egress"} 1' in text
    assert 'attested_relay_connections_active{listener="enclave-egress"}' in text
