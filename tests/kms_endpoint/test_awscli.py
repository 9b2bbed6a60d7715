"""The AWS CLI (``awscli`` from PyPI) against the KMS endpoint, as its own process.

The issue's "done when": ``aws kms decrypt --endpoint-url http://127.0.0.1:PORT
--ciphertext-blob fileb://blob`` with dummy credentials prints the plaintext of a
ciphertext whose key policy requires the enclave's PCR0.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kms_endpoint.stack import (
    PLAINTEXT,
    REGION,
    Stack,
    stock_client_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def aws() -> str:
    """The ``aws`` of this environment (the test extras install awscli beside pytest)."""
    found = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert found, "the AWS CLI is not installed: pip install -e '.[test]'"
    return found


def run_aws(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with dummy credentials and no configuration files of this machine."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [aws(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
        env=stock_client_env(
            home,
            AWS_DEFAULT_REGION=REGION,
            AWS_RETRY_MODE="standard",
            AWS_MAX_ATTEMPTS="1",
            **env,
        ),
    )


def test_aws_kms_decrypt_with_endpoint_url_prints_the_plaintext(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "blob").write_bytes(stack.blob)
    done = run_aws(
        tmp_path,
        "kms", "decrypt", "--endpoint-url", f"http://127.0.0.1:{stack.endpoint_port}",
        "--ciphertext-blob", "fileb://blob",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert base64.b64decode(answer["Plaintext"]) == PLAINTEXT
    assert answer["KeyId"] == stack.keys.good
    assert answer["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_aws_endpoint_url_kms_variable_and_a_data_key(stack: Stack, tmp_path: Path) -> None:
    """Pointed with AWS_ENDPOINT_URL_KMS instead, as docs/kms-endpoint.md shows."""
    done = run_aws(
        tmp_path,
        "kms", "generate-data-key", "--key-id", "alias/endpoint-aliased", "--key-spec", "AES_256",
        AWS_ENDPOINT_URL_KMS=stack.endpoint_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert len(base64.b64decode(answer["Plaintext"])) == 32
    assert answer["KeyId"] == stack.keys.aliased


def test_the_cli_shows_the_refusal_of_a_key_outside_the_allowlist(
    stack: Stack, tmp_path: Path
) -> None:
    done = run_aws(
        tmp_path,
        "kms", "generate-data-key", "--key-id", stack.keys.outside, "--key-spec", "AES_256",
        "--endpoint-url", stack.endpoint_url,
    )  # fmt: skip
    assert done.returncode == 255, done.stderr  # AWS CLI v1: a service error
    assert "AccessDeniedException" in done.stderr
    assert "kms.allowed_keys" in done.stderr
    assert "Plaintext" not in done.stdout
