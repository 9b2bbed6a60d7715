"""Helpers for the ``attested exec`` tests: real processes, configuration text, waiting."""

from __future__ import annotations

import base64
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_ARN, DEV_SECRET_ACCESS_KEY
from tests.kit import kms_client

REGION = "us-east-1"
PCR0 = bytes.fromhex("a1" * 48)
OTHER_PCR0 = bytes.fromhex("e2" * 48)
MOTO_ACCOUNT = "123456789012"


def key_policy(pcr0: bytes) -> str:
    """Administration for the developer role; Decrypt only with this PCR0 attested."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": ["kms:Encrypt", "kms:DescribeKey", "kms:PutKeyPolicy"],
                    "Resource": "*",
                },
                {
                    "Sid": "EnclaveOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": ["kms:Decrypt"],
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": pcr0.hex()}
                    },
                },
            ],
        }
    )


def read_first_line(process: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The first line a process prints on stdout (the emulator's URL)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError("the process printed nothing")
    return process.stdout.readline().decode().strip()


@dataclass
class Emulator:
    """``attested emulator kms`` as a process, with two keys made in it."""

    process: subprocess.Popen[bytes]
    url: str
    good: str = ""
    other: str = ""
    ca: str | None = None

    def kms(self) -> Any:
        verify = self.ca if self.ca is not None else True
        return kms_client(
            self.url, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, region=REGION, verify=verify
        )

    def encrypt(self, key: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        blob: bytes = self.kms().encrypt(
            KeyId=key, Plaintext=plaintext, EncryptionContext=dict(context)
        )["CiphertextBlob"]
        return blob


def start_emulator(state: Path, log: Path, *extra: str, ca: str | None = None) -> Emulator:
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state",
             str(state), *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=clean_env(),
        )  # fmt: skip
    try:
        url = read_first_line(process)
    except BaseException:
        stop_process(process)
        raise
    emulator = Emulator(process=process, url=url, ca=ca)
    kms = emulator.kms()
    emulator.good = kms.create_key(Policy=key_policy(PCR0))["KeyMetadata"]["Arn"]
    emulator.other = kms.create_key(Policy=key_policy(OTHER_PCR0))["KeyMetadata"]["Arn"]
    return emulator


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()


def clean_env(**extra: str) -> dict[str, str]:
    """A small environment: PATH, the emulator's development credentials, ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_ACCESS_KEY,
        **extra,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes would split non-BMP characters into surrogates)."""
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in text
    )
    return f'"{escaped}"'


def toml_value(value: object) -> str:
    """A TOML value for strings, booleans, numbers, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


@dataclass
class EnclaveToml:
    """An ``enclave.toml`` for the tests, rendered from its parts."""

    directory: Path
    state: Path
    emulator_url: str
    allowed_keys: Sequence[str]
    pcr0: bytes = PCR0
    ship_to: str = ""
    secrets: list[dict[str, object]] = field(default_factory=list)
    hosts: list[dict[str, object]] = field(default_factory=list)
    ingress: list[dict[str, object]] = field(default_factory=list)
    exec_settings: dict[str, object] = field(default_factory=dict)
    top: dict[str, dict[str, object]] = field(default_factory=dict)

    def render(self) -> str:
        sections: dict[str, dict[str, object]] = {
            "api": {"unix": str(self.directory / "api.sock")},
            "nsm": {
                "backend": "simulated",
                "simulated_state": str(self.state),
                "simulated_pcrs": {"0": self.pcr0.hex()},
            },
            "kms": {"endpoint_url": self.emulator_url, "allowed_keys": list(self.allowed_keys)},
            "credentials": {"source": "environment"},
            "exec": {"hosts_file": str(self.directory / "hosts"), **self.exec_settings},
        }
        if self.ship_to:
            sections["logs"] = {"ship_to": self.ship_to}
        for name, values in self.top.items():
            sections.setdefault(name, {}).update(values)
        lines = [f'region = "{REGION}"']
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        for array, items in (("secrets", self.secrets), ("hosts", self.hosts),
                             ("ingress", self.ingress)):  # fmt: skip
            for item in items:
                lines.append(f"[[{array}]]")
                lines += [f"{key} = {toml_value(value)}" for key, value in item.items()]
        return "\n".join(lines) + "\n"

    def write(self) -> Path:
        path = self.directory / "enclave.toml"
        path.write_text(self.render())
        return path


@dataclass
class Run:
    """A finished ``attested exec`` process."""

    status: int
    stdout: bytes
    stderr: str


def exec_command(config: Path, argv: Sequence[str], *options: str) -> list[str]:
    return [sys.executable, "-m", "attested", "exec", "--config", str(config), *options,
            "--", *argv]  # fmt: skip


def run_exec(
    config: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    options: Sequence[str] = (),
) -> Run:
    """Run ``attested exec`` to its end."""
    done = subprocess.run(
        exec_command(config, argv, *options),
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> Any:
    """Poll ``condition`` until it is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sink_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
