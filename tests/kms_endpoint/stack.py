"""``attested emulator kms`` and ``attested serve`` with its KMS endpoint, as real processes.

The test process plays the key administrator outside the enclave: it makes the keys in
the emulator with the emulator's development identity, whose credentials ``attested
serve`` also gets (``[credentials] source = "environment"``). Every key the enclave
decrypts with has a policy that lets that identity decrypt **only with an attestation
document whose PCR0 is the simulated enclave's**, so a plaintext coming out of the
endpoint proves the service attested the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.model import OperationModel

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_ARN, DEV_SECRET_ACCESS_KEY
from tests.emulator.modelcheck import answer_problems
from tests.kit import PCR0, kms_client

REGION = "us-east-1"
OTHER_PCR0 = bytes.fromhex("ee" * 48)
# What stock SDKs inside the enclave are given: anything. Never a real credential.
DUMMY_KEY_ID = "AKIAENDPOINTCALLER01"
DUMMY_SECRET = "endpoint-caller-secret-not-checked"
PLAINTEXT = b"a database password: 7rQ-endpoint-do-not-log"

ENCLAVE_ONLY = [
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:DeriveSharedSecret",
]


def key_policy(pcr0: bytes) -> str:
    """Anything but the attested operations for the identity; those only with this PCR0."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Administration",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "NotAction": ENCLAVE_ONLY,
                    "Resource": "*",
                },
                {
                    "Sid": "EnclaveOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": ENCLAVE_ONLY,
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": pcr0.hex()}
                    },
                },
            ],
        }
    )


@dataclass(frozen=True)
class Keys:
    """Keys in the emulator.

    Attributes:
        good: in ``kms.allowed_keys`` by key ARN; its policy wants the enclave's PCR0.
        aliased: in ``kms.allowed_keys`` only as ``alias/endpoint-aliased`` (alias ARN).
        alias_arn: that alias ARN.
        other_image: allowed; its policy wants another image's PCR0 (KMS denies).
        outside: not in ``kms.allowed_keys`` (the endpoint refuses it).
        agreement: an ECC_NIST_P256 key agreement key, allowed.
    """

    good: str
    aliased: str
    alias_arn: str
    other_image: str
    outside: str
    agreement: str

    @property
    def allowed(self) -> list[str]:
        return [self.good, self.alias_arn, self.other_image, self.agreement]


def admin_client(endpoint_url: str) -> Any:
    """The administrator's boto3 client, straight to the emulator (no attestation)."""
    return kms_client(endpoint_url, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, region=REGION)


def make_keys(admin: Any) -> Keys:
    def create(pcr0: bytes, **extra: Any) -> str:
        return str(admin.create_key(Policy=key_policy(pcr0), **extra)["KeyMetadata"]["Arn"])

    good = create(PCR0, Description="the enclave's data key")
    aliased = create(PCR0)
    admin.create_alias(AliasName="alias/endpoint-aliased", TargetKeyId=aliased)
    alias_arn = good.split(":key/")[0] + ":alias/endpoint-aliased"
    return Keys(
        good=good,
        aliased=aliased,
        alias_arn=alias_arn,
        other_image=create(OTHER_PCR0),
        outside=create(PCR0),
        agreement=create(PCR0, KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"),
    )


def endpoint_client(url: str, *, region: str = REGION, **config: Any) -> Any:
    """A stock boto3 client of the endpoint, with dummy credentials; raw answers checked.

    Every raw answer is checked against botocore's KMS model at every depth
    (:mod:`tests.emulator.modelcheck`): botocore's parser would drop a member the model
    does not define.
    """
    kms = boto3.client(
        "kms",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id=DUMMY_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET,
        config=Config(retries={"total_max_attempts": 1}, **config),
    )
    kms.meta.events.register("before-parse.kms", _check_answer)
    return kms


def _check_answer(operation_model: OperationModel, response_dict: dict[str, Any], **_: Any) -> None:
    problems = answer_problems(operation_model, response_dict["status_code"], response_dict["body"])
    assert not problems, f"{operation_model.name}: {problems}"


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The ready file's content, once the process wrote it (it must not exit first)."""
    deadline = time.monotonic() + 90
    while True:
        if path.exists():
            with contextlib.suppress(ValueError):
                return dict(json.loads(path.read_text()))
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after 90 s: {log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait (kill after a generous deadline); the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=30)


def child_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **extra}


def stock_client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a stock AWS client in the enclave: dummy credentials, no files.

    ``home`` stands in for the home directory; the client reads no configuration or
    credentials file of this machine.
    """
    return child_env(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_ACCESS_KEY_ID=DUMMY_KEY_ID,
        AWS_SECRET_ACCESS_KEY=DUMMY_SECRET,
        **extra,
    )


@dataclass
class Stack:
    """The running processes and what the tests need to know about them."""

    work: Path
    emulator_url: str
    endpoint_url: str
    endpoint_port: int
    keys: Keys
    blob: bytes
    serve_log: Path
    serve: subprocess.Popen[bytes]
    emulator: subprocess.Popen[bytes]


def start_stack(work: Path, state: Path, *, kms_endpoint: str = "") -> Stack:
    """Start the emulator, make the keys, start ``attested serve`` with the endpoint.

    The caller stops both processes (:func:`stop`), also when this raises: the processes
    started so far are stopped here before raising.
    """
    started: list[subprocess.Popen[bytes]] = []
    try:
        emu_ready, emu_log = work / "emulator.json", work / "emulator.log"
        with emu_log.open("wb") as log_file:
            emulator = subprocess.Popen(
                [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state",
                 str(state), "--ready-file", str(emu_ready), "--region", REGION],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=child_env(),
            )  # fmt: skip
        started.append(emulator)
        port = wait_for_file(emu_ready, emulator, emu_log)["listeners"]["kms"].rsplit(":", 1)[1]
        emulator_url = f"http://127.0.0.1:{port}"
        admin = admin_client(emulator_url)
        keys = make_keys(admin)
        blob = admin.encrypt(KeyId=keys.good, Plaintext=PLAINTEXT)["CiphertextBlob"]
        allowed = ", ".join(json.dumps(k) for k in keys.allowed)
        config = work / "service.toml"
        config.write_text(
            f"""
region = "{REGION}"
[api]
unix = "{work / "api.sock"}"
[nsm]
backend = "simulated"
simulated_state = "{state}"
simulated_pcrs = {{"0" = "{PCR0.hex()}"}}
[kms]
endpoint_url = "{emulator_url}"
allowed_keys = [{allowed}]
[credentials]
source = "environment"
[kms_endpoint]
listen = "tcp:127.0.0.1:0"
{kms_endpoint}
"""
        )
        serve_ready, serve_log = work / "serve.json", work / "serve.log"
        with serve_log.open("wb") as log_file:
            serve = subprocess.Popen(
                [sys.executable, "-m", "attested", "serve", "--config", str(config),
                 "--ready-file", str(serve_ready), "--log-level", "DEBUG"],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=child_env(
                    AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=DEV_SECRET_ACCESS_KEY,
                ),
            )  # fmt: skip
        started.append(serve)
        listeners = wait_for_file(serve_ready, serve, serve_log)["listeners"]
        endpoint_port = int(listeners["kms_endpoint"].rsplit(":", 1)[1])
    except BaseException:
        for process in reversed(started):
            stop(process)
        raise
    return Stack(
        work=work,
        emulator_url=emulator_url,
        endpoint_url=f"http://127.0.0.1:{endpoint_port}",
        endpoint_port=endpoint_port,
        keys=keys,
        blob=blob,
        serve_log=serve_log,
        serve=serve,
        emulator=emulator,
    )
