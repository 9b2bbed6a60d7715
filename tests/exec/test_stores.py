"""Ciphertexts kept in Secrets Manager, SSM, S3 and files reach the app once KMS opens them.

moto's server mode is a real HTTP server speaking those APIs; ``attested exec`` reaches it
with real boto3 clients (no mock of boto3), KMS is ``attested emulator kms`` as a process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.exec.support import REGION, Emulator, EnclaveToml, b64, run_exec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def aws(service: str, url: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="AKIDMOTOADMIN",
        aws_secret_access_key="moto-admin-secret",
    )


def toml_for(emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str) -> EnclaveToml:
    return EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=emulator.url,
        allowed_keys=[emulator.good, emulator.other],
        exec_settings={
            "secretsmanager_endpoint_url": moto_url,
            "ssm_endpoint_url": moto_url,
            "s3_endpoint_url": moto_url,
        },
    )


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PRINT_DIGESTS = 'for name in "$@"; do eval "v=\\${$name}"; printf "%s %s\\n" "$name" \
"$(printf %s "$v" | sha256sum | cut -d" " -f1)"; done'


def test_every_store_holds_only_a_ciphertext_and_the_app_gets_each_plaintext(
    emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str, secret_dir: Path
) -> None:
    plaintexts = {f"S{i}": f"plaintext-{i}-{'x' * i}".encode() for i in range(1, 7)}
    blobs = {
        name: emulator.encrypt(emulator.good, value, {"secret": name})
        for name, value in plaintexts.items()
    }
    sm, ssm, s3 = aws("secretsmanager", moto_url), aws("ssm", moto_url), aws("s3", moto_url)
    arn_binary = sm.create_secret(Name="app/s1", SecretBinary=blobs["S1"])["ARN"]
    sm.create_secret(Name="app/s2", SecretString=b64(blobs["S2"]))
    ssm.put_parameter(Name="/app/s3", Value=b64(blobs["S3"]), Type="String")
    s3.create_bucket(Bucket="enclave-secrets")
    s3.put_object(Bucket="enclave-secrets", Key="raw/s4.bin", Body=blobs["S4"])
    s3.put_object(Bucket="enclave-secrets", Key="b64/s5.txt", Body=b64(blobs["S5"]).encode())
    (short_dir / "s6.bin").write_bytes(blobs["S6"])
    sources: dict[str, dict[str, object]] = {
        "S1": {"secretsmanager": arn_binary},
        "S2": {"secretsmanager": "app/s2"},
        "S3": {"ssm": "/app/s3"},
        "S4": {"s3": "s3://enclave-secrets/raw/s4.bin"},
        "S5": {"s3": "s3://enclave-secrets/b64/s5.txt"},
        "S6": {"ciphertext_file": str(short_dir / "s6.bin")},
    }
    toml = toml_for(emulator, sim_state, short_dir, moto_url)
    for name, source in sources.items():
        toml.secrets.append(
            {"name": name.lower(), **source, "key_id": emulator.good,
             "encryption_context": {"secret": name}, "env": name}
        )  # fmt: skip

    run = run_exec(toml.write(), ["sh", "-c", PRINT_DIGESTS, "sh", *plaintexts])

    assert run.status == 0, run.stderr
    printed = run.stdout.decode().splitlines()
    assert printed == [f"{name} {digest(value)}" for name, value in plaintexts.items()]
    for value in plaintexts.values():
        assert value.decode() not in run.stderr


def test_a_missing_secrets_manager_item_stops_start_up_naming_the_secret(
    emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str
) -> None:
    toml = toml_for(emulator, sim_state, short_dir, moto_url)
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/nothing-AbCdEf"
    toml.secrets.append(
        {"name": "db-password", "secretsmanager": missing, "key_id": emulator.good,
         "env": "DB_PASSWORD"}
    )  # fmt: skip
    marker = short_dir / "ran"
    run = run_exec(toml.write(), ["touch", str(marker)])
    assert run.status == 3
    assert "secret 'db-password'" in run.stderr
    assert "ResourceNotFoundException" in run.stderr
    assert not marker.exists()


def test_a_stored_value_that_is_not_a_kms_ciphertext_is_refused(
    emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str
) -> None:
    """What SSM would hand over as a plain SecureString value is not accepted as a secret."""
    aws("ssm", moto_url).put_parameter(
        Name="/app/plain", Value="hunter2-not-a-ciphertext", Type="SecureString"
    )
    toml = toml_for(emulator, sim_state, short_dir, moto_url)
    toml.secrets.append(
        {"name": "plain", "ssm": "/app/plain", "key_id": emulator.good, "env": "PLAIN"}
    )
    run = run_exec(toml.write(), ["true"])
    assert run.status == 1  # refused: docs/exec.md
    assert "secret 'plain'" in run.stderr
    assert "InvalidCiphertextException" in run.stderr
    assert "hunter2" not in run.stderr


def test_the_wrong_encryption_context_is_refused_by_kms(
    emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str
) -> None:
    blob = emulator.encrypt(emulator.good, b"bound-to-billing", {"app": "billing"})
    toml = toml_for(emulator, sim_state, short_dir, moto_url)
    toml.secrets.append(
        {"name": "swapped", "ciphertext": b64(blob), "key_id": emulator.good,
         "encryption_context": {"app": "payroll"}, "env": "SWAPPED"}
    )  # fmt: skip
    run = run_exec(toml.write(), ["true"])
    assert run.status == 1
    assert "secret 'swapped'" in run.stderr
    assert "encryption context" in run.stderr


def test_an_optional_secret_that_fails_is_left_out_and_the_app_starts(
    emulator: Emulator, sim_state: Path, short_dir: Path, moto_url: str
) -> None:
    blob = emulator.encrypt(emulator.good, b"required-one", {})
    toml = toml_for(emulator, sim_state, short_dir, moto_url)
    toml.secrets.append(
        {"name": "needed", "ciphertext": b64(blob), "key_id": emulator.good, "env": "NEEDED"}
    )
    toml.secrets.append(
        {"name": "extra", "ssm": "/app/absent", "key_id": emulator.good, "env": "EXTRA",
         "optional": True}
    )  # fmt: skip
    run = run_exec(toml.write(), ["sh", "-c", 'echo "needed=${NEEDED:+set} extra=${EXTRA:-unset}"'])
    assert run.status == 0, run.stderr
    assert run.stdout.decode().strip() == "needed=set extra=unset"
    assert "optional secret 'extra'" in run.stderr
    assert "ParameterNotFound" in run.stderr
