"""What a newcomer who is not in Python meets: the log says why, and how to fix it.

Unknown access keys keep KMS's ``UnrecognizedClientException`` for the client while the
emulator's log names the key and the way out; failed requests of a known caller name the
caller; a ciphertext that does not open says why in the log (never to the client, as in
KMS); a Recipient document that is really a file name or base64 text gets a hint; and
``accept_any_credentials`` takes unknown callers as the development identity.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, EmulatorConfig, KmsEmulator
from attested.emulator._sigv4 import Identity
from tests.emulator.conftest import ACCOUNT, OAEP, Enclave, client
from tests.kms_endpoint.test_javascript import node_modules  # noqa: F401 - a fixture

LOGGER = "attested.emulator"


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


def test_an_unknown_access_key_is_refused_and_the_log_says_how_to_fix_it(
    kms: Any, emulator: KmsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = client(emulator.endpoint_url, access_key="AKIASTRANGER0000000", secret="x")
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
        stranger.list_keys()
    assert _code(error) == "UnrecognizedClientException"
    assert "AKIASTRANGER" not in str(error.value)  # KMS's answer, unchanged
    (line,) = [line for line in _lines(caplog) if "ListKeys" in line]
    assert line.startswith("- ListKeys -> UnrecognizedClientException")
    assert "unknown access key id 'AKIASTRANGER0000000'" in line
    assert DEV_ACCESS_KEY_ID in line
    assert "--identities" in line
    assert "--accept-any-credentials" in line
    assert DEV_SECRET_ACCESS_KEY not in "\n".join(_lines(caplog))


def test_a_failed_request_of_a_known_caller_names_the_caller(
    kms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
        kms.describe_key(KeyId="alias/no-such-alias")
    assert _code(error) == "NotFoundException"
    (line,) = [line for line in _lines(caplog) if "DescribeKey" in line]
    assert line.startswith(f"arn:aws:iam::{ACCOUNT}:role/attested-developer DescribeKey -> ")
    assert "NotFoundException" in line
    assert "alias/no-such-alias" in line  # why, from the message


def test_why_a_ciphertext_does_not_open_is_logged_not_answered(
    kms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s", EncryptionContext={"app": "a"})["CiphertextBlob"]
    cases = {
        "wrong context": (dict(CiphertextBlob=blob, EncryptionContext={"app": "b"}), "context"),
        "no context": (dict(CiphertextBlob=blob), "keys given: none"),
        "not ours": (dict(CiphertextBlob=b"\x07" * 80), "not this emulator's ciphertext"),
        "unknown key": (dict(CiphertextBlob=blob[:1] + b"\x00" * 16 + blob[17:]), "no such key"),
    }
    for name, (arguments, reason) in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ClientError) as error:
            kms.decrypt(**arguments)
        assert _code(error) == "InvalidCiphertextException", name
        assert error.value.response["Error"].get("Message", "") == "", name  # as KMS
        (line,) = [line for line in _lines(caplog) if "Decrypt" in line]
        assert "InvalidCiphertextException" in line, name
        assert reason in line, (name, line)
        assert "'b'" not in line  # context values are not logged, only keys


@pytest.mark.parametrize(
    ("document", "hint"),
    [
        (b"fileb://doc.cbor", "AttestationDocument@=fileb://doc.cbor"),
        (b"file://doc.cbor", "did you pass a file name?"),
        (None, "It is base64 text"),
    ],
)
def test_a_recipient_document_that_is_a_file_name_or_base64_gets_a_hint(
    kms: Any, enclave: Enclave, document: bytes | None, hint: str
) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s")["CiphertextBlob"]
    if document is None:  # the document's base64, sent as its bytes
        document = base64.b64encode(enclave.document())
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": document}
    with pytest.raises(ClientError) as error:
        kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    assert _code(error) == "ValidationException"
    assert hint in error.value.response["Error"]["Message"]


def test_a_damaged_document_gets_no_hint(kms: Any, enclave: Enclave) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"s")["CiphertextBlob"]
    damaged = enclave.document()[:-40]
    recipient = {"KeyEncryptionAlgorithm": OAEP, "AttestationDocument": damaged}
    with pytest.raises(ClientError) as error:
        kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    message = error.value.response["Error"]["Message"]
    assert "malformed" in message
    assert "file name" not in message
    assert "base64" not in message


def test_accept_any_credentials_takes_unknown_callers_as_the_developer(
    enclave: Enclave,
    start_emulator: Callable[..., KmsEmulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    known = Identity(secret_access_key="known-secret", arn="arn:aws:iam::444455556666:role/app")
    emulator = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root,
            identities={"AKIAKNOWN0000000000": known},
            accept_any_credentials=True,
        )
    )
    anyone = client(emulator.endpoint_url, access_key="AKIALOCALSTACKTEST", secret="test")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        arn = anyone.create_key()["KeyMetadata"]["Arn"]
        anyone.list_keys()
    assert arn.startswith("arn:aws:kms:us-east-1:444455556666:key/")  # the keys' account
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per access key id
    assert "AKIALOCALSTACKTEST" in warnings[0].getMessage()
    assert "arn:aws:iam::444455556666:role/attested-developer" in warnings[0].getMessage()
    # A key the emulator knows is still checked against its secret.
    wrong = client(emulator.endpoint_url, access_key="AKIAKNOWN0000000000", secret="wrong")
    with pytest.raises(ClientError) as error:
        wrong.list_keys()
    assert _code(error) == "InvalidSignatureException"
    # And everything of SigV4 but the signature: the region of the scope, for one.
    elsewhere = client(emulator.endpoint_url, access_key="AKIAANY", secret="x", region="eu-west-1")
    with pytest.raises(ClientError) as error:
        elsewhere.list_keys()
    assert _code(error) == "InvalidSignatureException"


def test_without_the_flag_unknown_callers_stay_unrecognized(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emulator = start_emulator(EmulatorConfig(trust_root=enclave.kit.root))
    anyone = client(emulator.endpoint_url, access_key="AKIALOCALSTACKTEST", secret="test")
    with pytest.raises(ClientError) as error:
        anyone.list_keys()
    assert _code(error) == "UnrecognizedClientException"


# --- The guide's AWS CLI and JavaScript blocks, against a real emulator process ---------


def _guide_block(heading: str, language: str) -> str:
    from tests.docs.blocks import ROOT, blocks

    guide = ROOT / "docs" / "emulator.md"
    text = guide.read_text()
    start = text.index(heading)
    line = text[:start].count("\n") + 1
    (found,) = [b for b in blocks(guide) if b.line > line and b.language == language][:1]
    return found.text


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """``attested emulator kms`` in ``tmp_path``, and the export lines of its banner."""
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LANG": "C.UTF-8"}
    attested = [sys.executable, "-m", "attested"]
    made = subprocess.run(
        [*attested, "simulate", "attest", "--state", "sim", "--out", "first.cbor"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [*attested, "emulator", "kms", "--simulated-state", "sim", "--ready-file", str(ready)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner: list[str] = []
        for line in process.stdout:
            banner.append(line.rstrip("\n"))
            if line.startswith("# Callers"):
                break
        yield tmp_path, [line for line in banner if line.startswith("export ")]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _shell_env(work: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "AWS_CONFIG_FILE": str(work / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
    }


def test_the_guides_aws_cli_block_runs_with_the_banners_lines(
    emulator_process: tuple[Path, list[str]],
) -> None:
    if shutil.which("aws") is None or shutil.which("openssl") is None:
        pytest.skip("the AWS CLI and openssl are needed to run the guide's AWS CLI block")
    work, exports = emulator_process
    assert [line.split("=", 1)[0] for line in exports] == [
        "export AWS_ENDPOINT_URL_KMS",
        "export AWS_ACCESS_KEY_ID",
        "export AWS_SECRET_ACCESS_KEY",
        "export AWS_REGION",
        "export AWS_DEFAULT_REGION",
    ]
    script = "\n".join(exports) + "\n" + _guide_block("### From the AWS CLI", "sh")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work, env=_shell_env(work), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("hunter2") == 2, done.stdout  # plain, then through attestation


def test_the_guides_javascript_block_runs_with_the_banners_lines(
    emulator_process: tuple[Path, list[str]],
    node_modules: Path,  # noqa: F811 - the fixture imported above
) -> None:
    work, exports = emulator_process
    (work / "demo.cjs").write_text(_guide_block("### From JavaScript (AWS SDK v3)", "js"))
    env = _shell_env(work)
    for line in exports:
        name, value = line.removeprefix("export ").split("=", 1)
        env[name] = value
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, "demo.cjs"], cwd=work, env={**env, "NODE_PATH": str(node_modules)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "hunter2"
