"""``attested serve`` with ``nsm.backend = "nitrotpm"``, as a real process, on the stand-ins."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested import Policy, Verifier
from attested.document import Profile
from tests.kit import short_directory
from tests.nitrotpm.conftest import PCR4, Source
from tests.nitrotpm.standin import CC_NSM, PtyTpm, StandInTpm, write_tool
from tests.service.helpers import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NONCE = b"\x42" * 32


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_directory("att-tpm-") as path:
        yield path


def _serve(directory: Path, nsm: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = directory / "service.toml"
    config.write_text(
        f"""
region = "us-east-1"
[api]
unix = "{directory / "api.sock"}"
[nsm]
{nsm}
[kms]
endpoint_url = "http://127.0.0.1:9"
allowed_keys = ["{ARN}"]
[credentials]
source = "environment"
"""
    )
    ready, log = directory / "ready.json", directory / "serve.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret-key-for-tests-only-0000",
    }
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
        )
    deadline = time.monotonic() + 90
    while not ready.exists():
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"no ready file; log: {log.read_text()}")
        time.sleep(0.05)
    return process, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _attest(directory: Path, source: Source) -> str:
    with ApiClient(str(directory / "api.sock")) as api:
        health = api.get("/v1/health").json()
        answer = api.post("/v1/attestation", {"nonce": base64.b64encode(NONCE).decode()})
        assert answer.status == 200, answer.body
    document = base64.b64decode(answer.json()["document"])
    verifier = Verifier(trust_root=source.trust_root, profile=Profile.NITROTPM)
    verifier.verify(document, policy=Policy(pcrs={4: PCR4}, nonce=NONCE))
    return str(health["nsm_backend"])


@pytest.mark.timeout(240)
def test_serve_answers_an_attestation_request_through_the_tpm_device(
    short_dir: Path, pty_tpm: PtyTpm, tpm: StandInTpm, source: Source
) -> None:
    process, log = _serve(
        short_dir, f'backend = "nitrotpm-device"\nnitrotpm_device = "{pty_tpm.path}"'
    )
    try:
        assert _attest(short_dir, source) == "nitrotpm-device"
        assert tpm.log.count(CC_NSM) == 1
        assert tpm.nv == {}
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text()


@pytest.mark.timeout(240)
def test_serve_with_nitrotpm_takes_the_tool(short_dir: Path, source: Source) -> None:
    tool = write_tool(short_dir / "bin", "ok", source.get_attestation_document(nonce=NONCE))
    process, log = _serve(
        short_dir, f'backend = "nitrotpm"\nnitrotpm_tool = "{tool}"\nnitrotpm_device = "/dev/tpm7"'
    )
    try:
        assert _attest(short_dir, source) == "nitrotpm-tool"
        seen = json.loads((tool.parent / "plan.seen").read_text())
        assert seen["env"]["TPM_DEVICE"] == "/dev/tpm7"
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text()
    assert NONCE.hex() not in log.read_text()


@pytest.mark.timeout(120)
def test_serve_refuses_to_start_without_a_nitrotpm(short_dir: Path) -> None:
    config_dir = short_dir
    with pytest.raises(AssertionError, match=r"serve exited .*no TPM device at"):
        _serve(config_dir, f'backend = "nitrotpm-device"\nnitrotpm_device = "{short_dir / "x"}"')
