"""The AWS SDK for JavaScript v3 (``@aws-sdk/client-kms``) against the KMS endpoint.

``npm`` installs the client from the npm registry once into a cache beside this test
environment (``<venv>/attested-test-cache/node-client-kms``); ``node`` runs
``sdk_v3.cjs``: Decrypt and GenerateDataKey through the endpoint, pointed at it by
``AWS_ENDPOINT_URL_KMS``, with dummy credentials. Skipped, saying so, only where ``node``
or ``npm`` is not installed.
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

PACKAGE = "@aws-sdk/client-kms@3"
SCRIPT = Path(__file__).with_name("sdk_v3.cjs")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``node_modules`` holding @aws-sdk/client-kms (installed once, then reused)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the AWS SDK for JavaScript v3 (not found)")
    cache = Path(sys.prefix) / "attested-test-cache" / "node-client-kms"
    installed = cache / "node_modules" / "@aws-sdk" / "client-kms" / "package.json"
    if not installed.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(cache),
                "--no-audit",
                "--no-fund",
                "--loglevel",
                "error",
                PACKAGE,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip  (npm as this machine configures it: registry, CA, proxy)
        assert done.returncode == 0, f"npm install {PACKAGE} failed: {done.stderr[-2000:]}"
    return cache / "node_modules"


def test_decrypt_and_generate_data_key(stack: Stack, node_modules: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [
            node,
            str(SCRIPT),
            base64.b64encode(stack.blob).decode(),
            "alias/endpoint-aliased",
            stack.keys.outside,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=stock_client_env(
            tmp_path,
            NODE_PATH=str(node_modules),
            AWS_REGION=REGION,
            AWS_ENDPOINT_URL_KMS=stack.endpoint_url,
        ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert base64.b64decode(out["decrypt"]["plaintext"]) == PLAINTEXT
    assert out["decrypt"]["keyId"] == stack.keys.good
    assert out["decrypt"]["algorithm"] == "SYMMETRIC_DEFAULT"
    assert out["generateDataKey"] == {
        "plaintextLength": 32,
        "keyId": stack.keys.aliased,
        "decryptsToTheSameKey": True,
    }
    assert out["outside"]["name"] == "AccessDeniedException"
    assert "kms.allowed_keys" in out["outside"]["message"]
    assert out["outside"]["status"] == 400
