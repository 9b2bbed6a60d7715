"""The examples run against a live service (simulated NSM, KMS emulator)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import Emu, StartService
from tests.service.helpers import PCR0

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(args),
        capture_output=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        check=False,
    )


def test_python_client(emu: Emu, start_service: StartService, short_dir: Path) -> None:
    service = start_service()
    socket_path = str(service.listeners["unix"].path)
    client = str(EXAMPLES / "client.py")

    health = run(sys.executable, client, "--socket", socket_path, "health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "ok"

    random = run(sys.executable, client, "--socket", socket_path, "random", "24")
    assert random.returncode == 0, random.stderr
    assert len(bytes.fromhex(random.stdout.decode().strip())) == 24

    key = emu.keys.good
    made = run(
        sys.executable, client, "--socket", socket_path, "data-key", key, "--context", "app=ex"
    )
    assert made.returncode == 0, made.stderr
    data_key = json.loads(made.stdout)
    assert data_key["plaintext_length"] == 32
    blob = short_dir / "data-key.bin"
    blob.write_bytes(base64.b64decode(data_key["ciphertext_blob"]))

    opened = run(
        sys.executable,
        client,
        "--socket",
        socket_path,
        "decrypt",
        key,
        str(blob),
        "--context",
        "app=ex",
    )
    assert opened.returncode == 0, opened.stderr
    assert len(opened.stdout) == 32

    refused = run(sys.executable, client, "--socket", socket_path, "decrypt", key, str(blob))
    assert refused.returncode == 1
    assert b"kms_invalid_ciphertext" in refused.stderr


def test_relying_party(start_service: StartService, sim_state: Path) -> None:
    service = start_service()
    socket_path = str(service.listeners["unix"].path)
    script = str(EXAMPLES / "relying_party.py")
    root = str(sim_state / "root.pem")
    ok = run(
        sys.executable,
        script,
        "--socket",
        socket_path,
        "--trust-root",
        root,
        "--pcr",
        f"0={PCR0.hex()}",
        "--user-data",
        "hello",
    )
    assert ok.returncode == 0, ok.stderr
    assert b"verified: module" in ok.stdout
    assert f"PCR0 = {PCR0.hex()}".encode() in ok.stdout

    wrong = run(
        sys.executable,
        script,
        "--socket",
        socket_path,
        "--trust-root",
        root,
        "--pcr",
        f"0={'ee' * 48}",
    )
    assert wrong.returncode == 1
    assert b"NOT verified" in wrong.stderr
    # The real AWS root does not sign simulated documents.
    aws = run(sys.executable, script, "--socket", socket_path, "--pcr", f"0={PCR0.hex()}")
    assert aws.returncode == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_client(emu: Emu, start_service: StartService) -> None:
    service = start_service()
    result = run(
        "sh",
        str(EXAMPLES / "curl_client.sh"),
        env={"ATTESTED_SOCKET": str(service.listeners["unix"].path), "KEY_ARN": emu.keys.good},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert json.loads(lines[lines.index("health:") + 1])["status"] == "ok"
    random = json.loads(lines[lines.index("random:") + 1])
    assert len(base64.b64decode(random["random"])) == 16
    assert json.loads(lines[lines.index("data key:") + 1])["plaintext_length"] == 32
