"""The AWS Encryption SDK for Python round-trips a message through the KMS endpoint.

The SDK runs in its own process, as an application in the enclave would: its KMS master
key provider makes its botocore clients as usual, pointed at the endpoint only by
``AWS_ENDPOINT_URL_KMS``, with dummy credentials. Encrypting calls GenerateDataKey and
decrypting calls Decrypt, both refused by the key policy without the enclave's PCR0: the
round trip works only because the service attested both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kms_endpoint.stack import REGION, Stack, stock_client_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUND_TRIP = """
import json, sys
import aws_encryption_sdk
from aws_encryption_sdk.identifiers import CommitmentPolicy

key_arn, message = sys.argv[1], sys.argv[2].encode()
client = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
context = {"tenant": "42", "purpose": "kms-endpoint-test"}
ciphertext, header = client.encrypt(
    source=message, key_provider=provider, encryption_context=context
)
assert message not in ciphertext
plaintext, decrypt_header = client.decrypt(source=ciphertext, key_provider=provider)
outcome = {
    "round_trip": plaintext == message,
    "context_kept": all(decrypt_header.encryption_context.get(k) == v for k, v in context.items()),
    "data_keys": [k.key_provider.key_info.decode() for k in header.encrypted_data_keys],
}
outside = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[sys.argv[3]])
try:
    client.encrypt(source=message, key_provider=outside)
    outcome["outside"] = ["encrypted"]
except Exception as exc:
    cause = exc.__cause__ or exc.__context__
    outcome["outside"] = [type(exc).__name__, repr(cause)]
print(json.dumps(outcome))
"""


def test_encrypt_and_decrypt_a_message(stack: Stack, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ROUND_TRIP,
            stack.keys.good,
            "the Encryption SDK's message, through the enclave",
            stack.keys.outside,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=stock_client_env(
            tmp_path,
            AWS_DEFAULT_REGION=REGION,
            AWS_ENDPOINT_URL_KMS=stack.endpoint_url,
        ),
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["round_trip"] is True
    assert outcome["context_kept"] is True
    assert outcome["data_keys"] == [stack.keys.good]
    # A key outside kms.allowed_keys: the SDK reports KMS's refusal, with our message.
    wrapper, cause = outcome["outside"]
    assert wrapper == "GenerateKeyError"
    assert "AccessDeniedException" in cause
    assert "kms.allowed_keys" in cause
