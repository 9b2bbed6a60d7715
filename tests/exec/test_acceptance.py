"""Issue 15's acceptance check, with every part a real process.

``attested emulator kms`` plays KMS (a key policy pinned to the enclave's PCR0),
``attested parent`` plays the parent with its log sink, and ``attested exec`` with the
simulated NSM runs a POSIX shell script as the app:

* the script sees ``DB_PASSWORD`` and the secret file (mode 0400) with the right values,
  its stdout reaches the parent's sink, and its exit status comes back;
* a key policy pinned to another PCR0 stops start-up with a message that names the
  secret, a non-zero status, and the script never runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exec.support import (
    PCR0,
    Emulator,
    EnclaveToml,
    b64,
    clean_env,
    run_exec,
    sink_lines,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAINTEXT = b"s3cr3t-db-password-Acceptance-7Qx"
APP = """
set -eu
expected="$1"; file="$2"
got_env=$(printf '%s' "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)
got_file=$(sha256sum < "$file" | cut -d' ' -f1)
mode=$(stat -c '%a' "$file")
[ "$got_env" = "$expected" ] && echo "env DB_PASSWORD: right value"
[ "$got_file" = "$expected" ] && echo "file: right value"
echo "file mode: $mode"
exit 23
"""


@pytest.fixture
def parent_sink(short_dir: Path) -> Iterator[tuple[str, Path]]:
    """``attested parent`` with only its log sink, as a process: (address, output file)."""
    out = short_dir / "parent-logs.jsonl"
    config = short_dir / "parent.toml"
    config.write_text(f'[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "{out}"\n')
    ready = short_dir / "parent.ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "parent", "--config", str(config),
         "--ready-file", str(ready)],
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, "the parent's ready file")
        assert process.poll() is None, "attested parent exited"
        address = json.loads(ready.read_text())["listeners"]["logs"]
        yield address, out
    finally:
        stop_process(process)


def _toml(
    emulator: Emulator, key: str, sim_state: Path, short_dir: Path, secret_dir: Path, sink: str
) -> EnclaveToml:
    blob = emulator.encrypt(key, PLAINTEXT, {"app": "billing"})
    toml = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=emulator.url,
        allowed_keys=[emulator.good, emulator.other],
        ship_to=sink,
    )
    toml.secrets.append(
        {
            "name": "db-password",
            "ciphertext": b64(blob),
            "key_id": key,
            "encryption_context": {"app": "billing"},
            "env": "DB_PASSWORD",
            "file": str(secret_dir / "db-password"),
        }
    )
    return toml


def test_the_app_gets_its_secret_and_its_output_reaches_the_parent(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    parent_sink: tuple[str, Path],
) -> None:
    address, out = parent_sink
    config = _toml(emulator, emulator.good, sim_state, short_dir, secret_dir, address).write()
    script = short_dir / "app.sh"
    script.write_text(APP)
    expected = hashlib.sha256(PLAINTEXT).hexdigest()

    run = run_exec(config, ["sh", str(script), expected, str(secret_dir / "db-password")])

    assert run.status == 23, run.stderr
    printed = run.stdout.decode()
    assert "env DB_PASSWORD: right value" in printed
    assert "file: right value" in printed
    assert "file mode: 400" in printed
    wanted = {"env DB_PASSWORD: right value", "file: right value", "file mode: 400"}
    shipped = wait_for(
        lambda: wanted <= {line.get("message") for line in sink_lines(out)}, "the app's lines"
    )
    assert shipped
    app_lines = [line for line in sink_lines(out) if line.get("message") in wanted]
    assert {line["logger"] for line in app_lines} == {"stdout"}
    assert {line["source"] for line in app_lines} == {"sh"}
    for text in (run.stderr, printed, out.read_text()):
        assert PLAINTEXT.decode() not in text
    assert not (secret_dir / "db-password").exists()  # removed when the app ended


def test_a_policy_for_another_pcr0_stops_start_up_and_names_the_secret(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    parent_sink: tuple[str, Path],
) -> None:
    address, _out = parent_sink
    toml = _toml(emulator, emulator.other, sim_state, short_dir, secret_dir, address)
    config = toml.write()
    marker = short_dir / "the-app-ran"

    run = run_exec(config, ["sh", "-c", f"touch {marker}"])

    assert run.status != 0
    assert run.status == 1  # refused: docs/exec.md
    assert "secret 'db-password'" in run.stderr
    assert "AccessDeniedException" in run.stderr
    assert f"PCR0={PCR0.hex()}" in run.stderr  # the PCRs the enclave presented
    assert "the app was not started" in run.stderr
    assert not marker.exists()
    assert not (secret_dir / "db-password").exists()
