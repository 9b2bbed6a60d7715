"""What a newcomer installs: the demo needs no test tool; the wheel and sdist install and run.

These build real virtual environments (dependencies come from the package index, usually
pip's cache), so they are slow; they are what a fresh clone and `pip install` of a built
distribution do.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("pytest", "hypothesis", "ruff", "mypy")

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(extra)
    return env


def _installed(venv: Path) -> set[str]:
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {line.split("==")[0].lower() for line in listed.splitlines()}


def test_the_demo_installs_no_test_or_lint_tool(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        [str(ROOT / "run"), "demo", "--offline"],
        cwd=tmp_path,
        env=_env(ATTESTED_VENV=str(venv), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # One line per step, not pip's output.
    assert result.stderr.splitlines()[:2] == [
        f"run: creating a virtual environment in {venv}",
        "run: installing attested-nitro and what it needs (cryptography, cbor2, boto3, "
        f"PyYAML, h11) into {venv}",
    ]
    assert "attested-nitro" in _installed(venv)
    assert not _installed(venv) & set(DEV_TOOLS)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_built_distribution_installs_and_runs(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "source"  # build from a copy: the build must not need the checkout
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "dist"),
    )
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (artifact,) = dist.iterdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", str(artifact)],
        check=True,
        timeout=900,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"  # not the checkout: only the installed package
    elsewhere.mkdir()
    attested = str(venv / "bin" / "attested")
    version = subprocess.run(
        [attested, "--version"], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("attested ")
    demo = subprocess.run(
        [attested, "demo", "--offline"], cwd=elsewhere, capture_output=True, text=True, timeout=300
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Done: verification with the pinned AWS root" in demo.stdout
    # The guides travel with the package, as they are in the checkout (force-include).
    guide = subprocess.run(
        [attested, "docs", "service"], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert guide.returncode == 0, guide.stderr
    assert guide.stdout == (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    listed = subprocess.run(
        [attested, "docs"], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    for guide_file in (ROOT / "docs").glob("*.md"):
        assert f"  {guide_file.stem} " in listed.stdout
    completion = subprocess.run(
        [attested, "completion", "bash"], cwd=elsewhere, capture_output=True, timeout=60
    )
    assert completion.returncode == 0, completion.stderr
    assert b"attested" in completion.stdout
    if kind == "wheel":  # the enclave image installs this very file (examples/enclave)
        dockerfile = (ROOT / "examples" / "enclave" / "Dockerfile").read_text()
        pattern = "attested_nitro-*.whl"  # from the build context, --no-index
        assert f"/context/{pattern}" in dockerfile
        assert fnmatch.fnmatch(artifact.name, pattern)
    files = subprocess.run(
        [python, "-m", "pip", "show", "-f", "attested-nitro"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "LICENSE" in files  # the license text travels with the package
