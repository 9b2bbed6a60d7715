"""`attested demo`, run as the README runs it: a real process tree on loopback.

The demo starts the KMS emulator, `attested parent` and two `attested serve` processes;
these tests check what a newcomer sees, that it exits 0, and that it leaves no process
and no file behind.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import pytest

from attested.cli import _demo_system
from attested.keypolicy import parse_measurements

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_demo_runs_the_whole_flow_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Credentials in the user's shell must not matter: the demo uses its own.
    env["AWS_ACCESS_KEY_ID"] = "AKIAUSERSHELLEXAMPLE"
    env["AWS_SECRET_ACCESS_KEY"] = "user-shell-secret-must-not-be-used"
    result = subprocess.run(
        [sys.executable, "-m", "attested", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "refused (AccessDeniedException)" in out
    assert "POST /v1/decrypt -> 200" in out
    assert "POST /v1/decrypt -> 403 kms_access_denied" in out
    # The exec step checks the digests and the shipped lines itself and fails the demo
    # (status 1) otherwise; here, that it ran.
    assert "An unmodified app in enclave A, started by `attested exec`" in out
    assert "through the in-enclave KMS endpoint" in out
    assert "-> exit 0, page 'hello from enclave-a'" in out
    assert "(enclave B) -> exit 1, refused in the" in out
    assert "verified" in out
    assert "the parent's log sink received" in out
    assert "the measured enclave got its secret; the modified one was refused" in out
    # The demo never prints the secret it moves around.
    assert "demo-password" not in out + result.stderr
    workdir = next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if "Working directory" in line
    )
    assert not Path(workdir).exists()
    assert _processes_mentioning(workdir) == []
    for line in (out + result.stderr).splitlines():  # a terminal of 100 columns
        assert len(line) <= 100, line


def test_ctrl_c_says_it_cleans_up_and_leaves_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # As from a terminal: Python turns SIGINT into KeyboardInterrupt only if SIGINT is not
    # ignored when it starts, and a shell starts background jobs (a CI run under nohup
    # ... &) with SIGINT ignored, which children inherit.
    as_from_a_terminal = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from attested.cli import main; sys.exit(main(['demo']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        workdir = ""
        timer = threading.Timer(120, process.kill)  # a stuck demo fails, never hangs
        timer.start()
        for line in process.stdout:
            seen.append(line)
            if "Working directory" in line:
                workdir = line.split(":", 1)[1].strip()
            if line.startswith("[3]"):  # the emulator and keys are up: processes to stop
                break
        timer.cancel()
        assert workdir, "".join(seen)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "attested demo: interrupted; cleaning up: stopping its processes" in err
    assert err.rstrip().endswith("attested demo: cleaned up"), err
    assert "Traceback" not in err
    assert not Path(workdir).exists()
    assert _processes_mentioning(workdir) == []


def test_demo_measurements_are_the_examples() -> None:
    packaged = resources.files("attested._store").joinpath("demo_measurements.json").read_bytes()
    example = (ROOT / "examples" / "demo" / "measurements.json").read_bytes()
    assert json.loads(packaged) == json.loads(example)
    (image,) = parse_measurements(example)
    assert sorted(image.pcrs) == [0, 1, 2]


def test_demo_keep_leaves_the_files_to_look_at_but_no_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attested", "demo", "--keep"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = Path(result.stdout.strip().splitlines()[-1].split(" ", 1)[1].split(":", 1)[0])
    try:
        assert (kept / "key-policy.json").is_file()
        assert (kept / "parent.toml").is_file()
        assert (kept / "enclave-a" / "serve.toml").is_file()
        assert (kept / "enclave-a-exec" / "enclave.toml").is_file()
        assert (kept / "enclave-logs.jsonl").stat().st_size > 0
        assert not list(kept.rglob("*.sock"))
        assert _processes_mentioning(str(kept)) == []
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def test_a_failing_step_still_stops_the_in_process_kms_emulator(monkeypatch, tmp_path) -> None:
    def broken(**_: object) -> dict[str, object]:
        raise _demo_system.DemoFailure("injected: the policy step fails")

    # The step after the emulator started fails; run_demo must still stop the emulator.
    monkeypatch.setattr(_demo_system, "generate_policy", broken)
    out = io.StringIO()
    with pytest.raises(_demo_system.DemoFailure, match="injected"):
        _demo_system.run_demo(_demo_system.Printer(out), workdir=tmp_path)
    assert "KMS emulator: https://127.0.0.1:" in out.getvalue()
    alive = [t.name for t in threading.enumerate() if t.name.startswith("kms-emulator")]
    assert alive == []


def test_demo_nitrotpm_runs_the_instance_flow_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = "AKIAUSERSHELLEXAMPLE"  # the demo uses its own, not these
    env["AWS_SECRET_ACCESS_KEY"] = "user-shell-secret-must-not-be-used"
    result = subprocess.run(
        [sys.executable, "-m", "attested", "demo", "--nitrotpm", "--keep"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    kept = Path(out.strip().splitlines()[-1].split(" ", 1)[1].split(":", 1)[0])
    try:
        # The key policy is generate --nitrotpm's for the AMI's tpm_pcr.json, and lints clean.
        measurements = json.loads((kept / "tpm_pcr.json").read_text())["Measurements"]
        policy = (kept / "key-policy.json").read_text()
        assert measurements["HashAlgorithm"] == "SHA384"
        assert measurements["PCR4"] in policy
        assert "kms:RecipientAttestation:NitroTPMPCR12" in policy
        assert "kms:RecipientAttestation:PCR" not in policy  # no enclave key
        lint = subprocess.run(
            [sys.executable, "-m", "attested", "keypolicy", "lint", str(kept / "key-policy.json")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        serve = (kept / "instance-a" / "serve.toml").read_text()
        assert 'backend = "simulated-nitrotpm"' in serve
        assert _processes_mentioning(str(kept)) == []
        assert not list(kept.rglob("*.sock"))
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert "refused (AccessDeniedException)" in out  # the instance role without a document
    assert "an enclave verifier refuses the" in out
    assert "POST /v1/decrypt -> 200" in out
    assert "POST /v1/decrypt -> 403 kms_access_denied" in out
    assert "the instance of the measured AMI got its secret; the other was refused" in out
    assert "demo-password" not in out + result.stderr
    assert "user-shell-secret" not in out + result.stderr
    for line in (out + result.stderr).splitlines():  # a terminal of 100 columns
        assert len(line) <= 100, line
