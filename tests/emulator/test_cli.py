"""``attested emulator kms``: in a real subprocess, and its errors in process."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from attested.cli import main
from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from tests.emulator.conftest import Enclave, client
from tests.emulator.envelope import open_envelope


def _first_line(process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError("the emulator printed nothing")
    return process.stdout.readline().decode().strip()


@pytest.fixture
def state_dir(enclave: Enclave, tmp_path: Path) -> Path:
    directory = tmp_path / "sim"
    directory.mkdir()
    (directory / "root.pem").write_bytes(
        enclave.kit.pki.root.certificate.public_bytes(Encoding.PEM)
    )
    return directory


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_prints_url_first_serves_and_exits_0_on_signal(
    enclave: Enclave,
    state_dir: Path,
    tmp_path: Path,
    spawn: list[subprocess.Popen[bytes]],
    signum: int,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state", str(state_dir),
         "--state", str(tmp_path / "kms.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )  # fmt: skip
    spawn.append(process)
    url = _first_line(process)
    assert url.startswith("http://127.0.0.1:")
    kms = client(url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"via the CLI")["CiphertextBlob"]
    answer = kms.decrypt(CiphertextBlob=blob, Recipient=enclave.recipient())
    assert open_envelope(answer["CiphertextForRecipient"], enclave.key) == b"via the CLI"
    process.send_signal(signum)
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert DEV_SECRET_ACCESS_KEY not in stderr
    assert "Decrypt -> OK" in stderr
    assert process.stdout is not None
    banner = process.stdout.read().decode()  # after the URL: lines to paste elsewhere
    assert f"export AWS_ACCESS_KEY_ID={DEV_ACCESS_KEY_ID}\n" in banner


def test_identities_file(
    state_dir: Path, tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    identities = tmp_path / "ids.toml"
    identities.write_text(
        '[[identities]]\naccess_key_id = "AKIDTOML"\nsecret_access_key = "toml-secret"\n'
        'arn = "arn:aws:iam::444455556666:role/parent"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state", str(state_dir),
         "--identities", str(identities), "--region", "eu-west-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    spawn.append(process)
    url = _first_line(process)
    kms = client(url, access_key="AKIDTOML", secret="toml-secret", region="eu-west-1")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    assert arn.startswith("arn:aws:kms:eu-west-1:444455556666:key/")
    process.terminate()
    assert process.wait(timeout=20) == 0


def test_missing_simulated_root_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["emulator", "kms", "--simulated-state", str(tmp_path)])
    assert status == 3
    err = capsys.readouterr().err
    assert f"attested simulate attest --state {tmp_path}" in err
    assert "root.pem" in err


def test_a_trust_root_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "kms"]) == 2
    assert "--simulated-state" in capsys.readouterr().err


def test_usage_errors(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["emulator", "kms", "--simulated-state", str(state_dir)]
    assert main([*base, "--host", "0.0.0.0"]) == 2  # noqa: S104 - refused, never bound
    assert "loopback" in capsys.readouterr().err
    assert main([*base, "--tls-cert", "x.pem"]) == 2
    assert "--tls-key" in capsys.readouterr().err
    assert main([*base, "--throttle-rate", "2"]) == 2
    capsys.readouterr()
    bad = tmp_path / "ids.json"
    bad.write_text(json.dumps({"identities": [{"access_key_id": "A", "arn": "x"}]}))
    assert main([*base, "--identities", str(bad)]) == 2
    assert "secret_access_key is required" in capsys.readouterr().err
    assert main([*base, "--identities", str(tmp_path / "missing.json")]) == 3  # I/O
    assert capsys.readouterr().err == (
        f"attested emulator kms: {tmp_path / 'missing.json'}: cannot read identities file: "
        "No such file or directory\n"
    )
    not_pem = tmp_path / "root.pem"
    not_pem.write_text("hello")
    assert main(["emulator", "kms", "--trust-root", str(not_pem)]) == 2
    assert main(["emulator", "kms", "--trust-root", str(tmp_path / "nope.pem")]) == 3
