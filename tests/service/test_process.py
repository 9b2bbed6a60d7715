"""``attested serve`` as a real process: ready file, a full run, SIGTERM, logs without secrets."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attested import emulator
from attested.kms.credentials import StaticCredentials
from attested.net import parse_address
from attested.relay import LogSink, Relay
from attested.service import Service
from attested.simulator import SimulatedNsm
from tests.service.conftest import Emu, make_keys, service_config
from tests.service.helpers import (
    ACCESS_KEY,
    PCR0,
    REGION,
    SECRET,
    SESSION_TOKEN,
    ApiClient,
    emulator_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def emu_token(sim_nsm: SimulatedNsm) -> Iterator[Emu]:
    """An emulator whose identity has temporary credentials (a session token)."""
    with emulator.KmsEmulator(emulator_config(sim_nsm, session_token=SESSION_TOKEN)) as server:
        running = Emu(server=server, keys=None, session_token=SESSION_TOKEN)  # type: ignore[arg-type]
        running.keys = make_keys(running.boto())
        yield running


def write_config(directory: Path, emu: Emu, sim_state: Path, **extra: str) -> Path:
    keys = emu.keys
    allowed = ", ".join(json.dumps(k) for k in (keys.good, keys.other, keys.agreement))
    text = f"""
region = "{REGION}"
[api]
unix = "{directory / "api.sock"}"
tcp = "127.0.0.1:0"
[nsm]
backend = "simulated"
simulated_state = "{sim_state}"
simulated_pcrs = {{"0" = "{PCR0.hex()}"}}
[kms]
endpoint_url = "{emu.endpoint_url}"
allowed_keys = [{allowed}]
[credentials]
source = "environment"
[cache]
enabled = true
"""
    for section, value in extra.items():
        text += f"[{section}]\n{value}\n"
    path = directory / "service.toml"
    path.write_text(text)
    return path


def child_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
    }


def wait_ready(process: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no ready file; log: {log.read_text()}")
        time.sleep(0.05)
    return dict(json.loads(ready.read_text()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def forms(secret: bytes) -> list[str]:
    """The ways a secret could appear in a log line."""
    return [
        secret.decode("latin-1"),
        b64(secret),
        secret.hex(),
        repr(secret)[2:-1],
        base64.urlsafe_b64encode(secret).decode(),
    ]


@pytest.mark.timeout(180)
def test_full_run_then_sigterm(emu_token: Emu, sim_state: Path, short_dir: Path) -> None:
    emu = emu_token
    keys = emu.keys
    boto = emu.boto()
    plaintext = b"service-plaintext-Zq8xJ4-do-not-log"
    blob = boto.encrypt(KeyId=keys.good, Plaintext=plaintext)["CiphertextBlob"]
    # The parent's log sink, as `attested parent` [logs] runs it.
    shipped = short_dir / "shipped.jsonl"
    sink = Relay([LogSink(listen=parse_address("tcp:127.0.0.1:0"), out=shipped)])
    (sink_address,) = sink.start()
    config = write_config(short_dir, emu, sim_state, logs=f'ship_to = "{sink_address}"')
    ready = short_dir / "ready.json"
    log = short_dir / "serve.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "attested",
                "serve",
                "--config",
                str(config),
                "--ready-file",
                str(ready),
                "--log-level",
                "debug",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=child_env(),
        )
    try:
        info = wait_ready(process, ready, log)
        assert info["pid"] == process.pid
        listeners = info["listeners"]
        assert isinstance(listeners, dict)
        assert listeners["unix"] == f"unix:{short_dir / 'api.sock'}"
        assert listeners["tcp"].startswith("tcp:127.0.0.1:")
        assert int(listeners["tcp"].rsplit(":", 1)[1]) > 0

        secrets: list[bytes] = [plaintext, SECRET.encode(), SESSION_TOKEN.encode()]
        with ApiClient(str(short_dir / "api.sock")) as api:
            answer = api.post("/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": keys.good})
            assert answer.status == 200, answer.body
            assert base64.b64decode(answer.json()["plaintext"]) == plaintext
            data_key = api.post("/v1/generate-data-key", {"key_id": keys.good}).json()
            secrets.append(base64.b64decode(data_key["plaintext"]))
            assert api.post("/v1/generate-data-key", {"key_id": keys.good}).json()["cached"]
            pair = api.post(
                "/v1/generate-data-key-pair", {"key_id": keys.good, "key_pair_spec": "RSA_2048"}
            ).json()
            secrets.append(base64.b64decode(pair["private_key"]))
            secrets.append(
                base64.b64decode(
                    api.post("/v1/generate-random", {"number_of_bytes": 64}).json()["random"]
                )
            )
            ours = ec.generate_private_key(ec.SECP256R1())
            spki = ours.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            shared = api.post(
                "/v1/derive-shared-secret", {"key_id": keys.agreement, "public_key": b64(spki)}
            ).json()
            secrets.append(base64.b64decode(shared["shared_secret"]))
            denied = api.post("/v1/decrypt", {"ciphertext_blob": b64(blob), "key_id": keys.other})
            assert denied.status == 400  # incorrect key: logged as a warning, no plaintext
            assert (
                api.post("/v1/decrypt", {"ciphertext_blob": "!!", "key_id": keys.good}).status
                == 400
            )

        # An in-flight request: headers and half the body sent, then SIGTERM.
        body = json.dumps({"number_of_bytes": 16}).encode()
        head = (
            "POST /v1/generate-random HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.settimeout(30)
        try:
            slow.connect(str(short_dir / "api.sock"))
            slow.sendall(head + body[:5])
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.8)
            assert process.poll() is None, "exited with a request in flight"
            slow.sendall(body[5:])
            reply = b""
            while True:
                chunk = slow.recv(65536)
                if not chunk:
                    break
                reply += chunk
        finally:
            slow.close()
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
        assert b"Connection: close" in reply
        secrets.append(base64.b64decode(json.loads(reply.split(b"\r\n\r\n", 1)[1])["random"]))
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sink.stop(5.0)
    assert not (short_dir / "api.sock").exists()
    assert not ready.exists()

    # The same records reached the parent's sink as JSON lines, with no secret either.
    records = [json.loads(line) for line in shipped.read_text().splitlines()]
    messages = [r["message"] for r in records]
    assert all(r["source"] == "attested-serve" for r in records)
    assert any(m.startswith("POST /v1/decrypt 200") for m in messages), messages
    assert any("attested service stopped" in m for m in messages), messages
    shipped_text = shipped.read_text()
    for secret in secrets:
        for form in forms(secret):
            assert form not in shipped_text, f"a secret was shipped ({len(secret)} bytes)"

    text = log.read_text(errors="replace")
    assert "listening on unix:" in text
    assert "POST /v1/decrypt 200" in text
    assert "kms_incorrect_key" in text
    assert "stopping (signal received)" in text
    assert "attested service stopped" in text
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"a secret appears in the log ({len(secret)} bytes)"


def test_serve_without_credentials_exits_3(emu: Emu, sim_state: Path, short_dir: Path) -> None:
    config = write_config(short_dir, emu, sim_state)
    result = subprocess.run(
        [sys.executable, "-m", "attested", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert result.returncode == 3, result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr
    assert not (short_dir / "api.sock").exists()


def test_a_socket_in_use_is_not_taken_over(
    emu: Emu, sim_state: Path, short_dir: Path, start_service: object
) -> None:

    config = service_config(emu, sim_state, short_dir)
    creds = StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET)
    with Service(config, credentials=creds):
        second = Service(config, credentials=creds)
        with pytest.raises(Exception, match="in use by another running server"):
            second.start()
        assert (short_dir / "api.sock").exists()
