"""The HTTP edge: concurrency, keep-alive latency, limits, TLS, clean shutdown."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from attested.emulator import EmulatorConfig, KmsEmulator, make_dev_tls
from attested.errors import ConfigurationError
from tests.emulator.conftest import _SESSION, Enclave, client, pinned_policy
from tests.emulator.envelope import open_envelope
from tests.emulator.rawhttp import post, sign


def test_fifty_concurrent_boto3_clients(emulator: KmsEmulator, enclave: Enclave) -> None:
    admin = client(emulator.endpoint_url)
    key_id = admin.create_key(Policy=pinned_policy())["KeyMetadata"]["KeyId"]
    blob = admin.encrypt(KeyId=key_id, Plaintext=b"shared secret")["CiphertextBlob"]
    documents = [enclave.document() for _ in range(4)]
    clients = [client(emulator.endpoint_url) for _ in range(50)]
    before = emulator.request_count

    def work(n: int) -> list[bytes]:
        kms = clients[n]
        out = []
        for i in range(4):
            answer = kms.decrypt(
                CiphertextBlob=blob,
                Recipient={
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": documents[(n + i) % 4],
                },
            )
            out.append(open_envelope(answer["CiphertextForRecipient"], enclave.key))
        kms.generate_random(NumberOfBytes=16)
        return out

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(work, range(50), timeout=120))
    assert all(r == [b"shared secret"] * 4 for r in results)
    assert emulator.request_count - before == 50 * 5
    assert emulator.stats().answers.get("OK", 0) >= 250
    assert set(emulator.stats().answers) == {"OK"}


def test_keep_alive_requests_do_not_stall(emulator: KmsEmulator) -> None:
    """Without TCP_NODELAY each keep-alive request waits ~40 ms for a delayed ACK."""
    url = emulator.endpoint_url
    host, port = emulator.address
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        body = b'{"NumberOfBytes": 32}'
        status, _, headers = post(
            url, body, sign(url, "GenerateRandom", body), connection=connection
        )
        assert status == 200
        assert headers.get("connection") != "close"
        started = time.perf_counter()
        for _ in range(40):
            status, _, _ = post(url, body, sign(url, "GenerateRandom", body), connection=connection)
            assert status == 200
        per_request = (time.perf_counter() - started) / 40
    finally:
        connection.close()
    assert per_request < 0.02, f"{per_request * 1000:.1f} ms per keep-alive request"


def test_body_and_length_limits(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, max_body_size=4096))
    host, port = emu.address
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413 ")
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411 ")
    assert emu.stats().answers["SerializationException"] == 2


def test_connection_cap(enclave: Enclave, start_emulator: Callable[..., KmsEmulator]) -> None:
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, max_connections=2))
    host, port = emu.address
    held = [socket.create_connection((host, port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)  # let the accept loop register both
        with socket.create_connection((host, port), timeout=10) as extra:
            # Answered 503 at once (after its request head), then closed.
            response = http.client.HTTPResponse(extra)
            response.begin()
            assert response.status == 503
            assert json.loads(response.read())["__type"] == "ServiceUnavailableException"
            assert extra.recv(1) == b""
    finally:
        for sock in held:
            sock.close()


def test_stop_closes_idle_keep_alive_connections_and_joins_threads(
    enclave: Enclave,
) -> None:
    emu = KmsEmulator(EmulatorConfig(trust_root=enclave.kit.root)).start()
    kms = client(emu.endpoint_url)
    kms.list_keys()  # leaves a keep-alive connection open in the client's pool
    threads_before = {t.ident for t in threading.enumerate()}
    started = time.perf_counter()
    emu.stop()
    assert time.perf_counter() - started < 5
    emu.stop()  # idempotent
    leftovers = [
        t for t in threading.enumerate() if t.ident in threads_before and t.name == "kms-emulator"
    ]
    assert leftovers == []
    with pytest.raises(RuntimeError):
        _ = emu.endpoint_url


def test_refuses_non_loopback_without_allow_remote(enclave: Enclave) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - refused, never bound
    with pytest.raises(ConfigurationError, match="loopback"):
        KmsEmulator(EmulatorConfig(trust_root=enclave.kit.root, host=everywhere))


def test_ipv6_loopback(enclave: Enclave, start_emulator: Callable[..., KmsEmulator]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, host="::1"))
    except OSError:
        pytest.skip("::1 is not configured here")
    assert emu.endpoint_url.startswith("http://[::1]:")
    assert "Keys" in client(emu.endpoint_url).list_keys()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    tls = make_dev_tls(directory, ("127.0.0.1",), lifetime=timedelta(hours=1))
    return tls.ca, tls.certificate, tls.key


def test_https_with_a_test_ca(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    ca, cert, key = _tls_files(tmp_path)
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, tls=(cert, key)))
    assert emu.endpoint_url.startswith("https://127.0.0.1:")
    kms: Any = _SESSION.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=emu.endpoint_url,
        aws_access_key_id="AKIAATTESTEDEXAMPLE1",
        aws_secret_access_key="attested-emulator-development-secret-not-a-credential",
        verify=str(ca),
    )
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    # aws:SecureTransport is "true" over TLS.
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    policy = pinned_policy(extra=(statement,))
    kms.put_key_policy(KeyId=key_id, Policy=policy)
    assert kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]


def test_tls_files_must_load(enclave: Enclave, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("nope")
    emu = KmsEmulator(
        EmulatorConfig(
            trust_root=enclave.kit.root, tls=(tmp_path / "bad.pem", tmp_path / "bad.pem")
        )
    )
    with pytest.raises(ConfigurationError, match="TLS"):
        emu.start()
