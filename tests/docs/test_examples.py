"""The examples and helper scripts work as their usage lines say, and every example is run.

The clients (``client.py``, ``relying_party.py``, ``curl_client.sh``) run against a live
service in tests/service/test_examples.py; the deployment files are checked in
tests/parent/test_examples.py. This file covers the rest, and keeps that list complete.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT

EXAMPLES = ROOT / "examples"
MARLIN = ROOT / "tests/vectors/attestation/real_attestation_marlin.cbor"
MARLIN_PCR0 = (
    "189038eccf28a3a098949e402f3b3d86a876f4915c5b02d546abb5d8c507ceb1"
    "755b8192d8cfca66e8f226160ca4c7a6"
)
# Examples no test runs, and why.
NOT_RUN = {
    "enclave/app.py": "runs only in an enclave (its socket and vsock); ruff and mypy check it",
    "demo/README.md": "prose; tests/docs/test_fences.py checks its fences",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_verify_offline_as_its_usage_line_says() -> None:
    script = str(EXAMPLES / "verify_offline.py")
    archived = run(script, str(MARLIN), MARLIN_PCR0, "--at-document-time")
    assert archived.returncode == 0, archived.stdout + archived.stderr
    assert "verified: module i-0f1cd77d37fd8bcc9-enc018e7aa61e2040ff" in archived.stdout
    assert f"PCR0: {MARLIN_PCR0}" in archived.stdout
    today = run(script, str(MARLIN), MARLIN_PCR0)
    assert today.returncode == 1
    assert "not verified: ChainError" in today.stdout
    other = run(script, str(MARLIN), "00" * 47 + "01", "--at-document-time")
    assert other.returncode == 1
    assert "PolicyError" in other.stdout
    usage = run(script)
    assert usage.returncode == 2
    assert "Usage: python examples/verify_offline.py" in usage.stderr


def test_regenerate_without_the_project_says_what_to_run(tmp_path: Path) -> None:
    # `python policies/regenerate.py` with an interpreter that cannot import attested
    # (-S: no site-packages, so not the project's environment) explains, no traceback.
    result = subprocess.run(
        [sys.executable, "-S", str(ROOT / "policies/regenerate.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "cannot import attested" in result.stderr
    assert ".venv/bin/python policies/regenerate.py" in result.stderr


@pytest.mark.parametrize("name", sorted(NOT_RUN))
def test_the_exceptions_exist(name: str) -> None:
    assert (EXAMPLES / name).is_file()


def test_every_example_is_run_by_some_test() -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    untested = []
    for path in sorted(EXAMPLES.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        name = str(path.relative_to(EXAMPLES))
        if name not in NOT_RUN and path.name not in tests:
            untested.append(name)
    assert not untested, f"no test uses {untested}; run them or say why in NOT_RUN"
