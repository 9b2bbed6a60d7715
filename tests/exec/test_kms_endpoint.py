"""``attested exec`` with ``[kms_endpoint]``: the app's stock SDK finds the endpoint alone.

exec points the app at the in-enclave KMS endpoint with ``AWS_ENDPOINT_URL_KMS`` (a stock
boto3 honours it), so an unmodified ``boto3.client("kms").decrypt(...)`` in the app gets
the plaintext of a ciphertext whose key policy requires the enclave's PCR0: the endpoint
made the attested call. Every part is a real process (the emulator, exec, the app).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from tests.exec.support import Emulator, EnclaveToml, b64, run_exec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAINTEXT = b"endpoint-plaintext-9fQ"
# The app: a stock boto3 client with no endpoint_url. It refuses to run unless exec gave it
# a loopback endpoint, so a regression can never send this test to a real AWS host.
APP = """
import base64, hashlib, os, sys
url = os.environ.get("AWS_ENDPOINT_URL_KMS", "")
if not url.startswith("http://127.0.0.1:"):
    print("no loopback AWS_ENDPOINT_URL_KMS:", repr(url))
    sys.exit(9)
import boto3
kms = boto3.client("kms", region_name="us-east-1")
answer = kms.decrypt(CiphertextBlob=base64.b64decode(sys.argv[1]),
                     EncryptionContext={"app": "billing"})
print("plaintext sha256", hashlib.sha256(answer["Plaintext"]).hexdigest())
"""


@pytest.mark.parametrize(
    ("listen", "expect_url"), [("tcp:127.0.0.1:0", True), ("unix:{dir}/kms.sock", False)]
)
def test_the_app_is_pointed_at_the_kms_endpoint(
    emulator: Emulator, sim_state: Path, short_dir: Path, listen: str, expect_url: bool
) -> None:
    blob = emulator.encrypt(emulator.good, PLAINTEXT, {"app": "billing"})
    toml = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=emulator.url,
        allowed_keys=[emulator.good],
        top={"kms_endpoint": {"listen": listen.format(dir=short_dir)}},
    )
    app = short_dir / "app.py"
    app.write_text(APP)

    run = run_exec(toml.write(), [sys.executable, str(app), b64(blob)])

    printed = run.stdout.decode()
    if expect_url:
        assert run.status == 0, run.stderr + printed
        assert f"plaintext sha256 {hashlib.sha256(PLAINTEXT).hexdigest()}" in printed
    else:
        # A Unix socket cannot be an endpoint URL: the app is not pointed anywhere.
        assert run.status == 9, run.stderr + printed
        assert "no loopback AWS_ENDPOINT_URL_KMS: ''" in printed
