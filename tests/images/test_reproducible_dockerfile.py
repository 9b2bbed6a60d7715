"""examples/enclave/Dockerfile keeps the reproducibility rules, and the rules can fail.

The image is never built here (no Docker daemon, no network, no nitro-cli): these tests
read the Dockerfile and its lock file. docs/reproducible-images.md says what a real
rebuild needs and what was checked by hand.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.images.dockerfile import (
    instructions,
    lock_problems,
    locked_versions,
    normalise,
    problems,
)

ROOT = Path(__file__).resolve().parents[2]
ENCLAVE = ROOT / "examples" / "enclave"


def test_the_example_dockerfile_keeps_every_rule() -> None:
    assert problems(ENCLAVE / "Dockerfile") == []


def _mutated(tmp_path: Path, old: str, new: str) -> Path:
    for name in ("Dockerfile", "requirements.lock"):
        shutil.copy(ENCLAVE / name, tmp_path / name)
    text = (tmp_path / "Dockerfile").read_text()
    assert old in text, old
    (tmp_path / "Dockerfile").write_text(text.replace(old, new, 1))
    return tmp_path / "Dockerfile"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "@sha256:", ":latest#", "names its base by tag, not by digest", id="base-by-tag"
        ),
        pytest.param(
            "https://snapshot.debian.org/archive/%s/%s %s main",
            "http://deb.debian.org/%s %s main",
            "a Debian archive other than snapshot.debian.org",
            id="live-debian-archive",
        ),
        pytest.param(
            "rm -f /etc/apt/sources.list.d/debian.sources;",
            "true;",
            "installs ca-certificates from the live archive",
            id="base-sources-kept",
        ),
        pytest.param(
            "--require-hashes -r /context/requirements.lock",
            "-r /context/requirements.lock",
            "without --require-hashes",
            id="pip-without-hashes",
        ),
        pytest.param(
            "--no-index /context/attested_nitro-*.whl",
            "attested-nitro==0.1.0",
            "pip install attested-nitro==0.1.0 without --require-hashes",
            id="pip-from-the-index",
        ),
        pytest.param(
            "ARG SOURCE_DATE_EPOCH=1787529600",
            "ARG SOURCE_DATE=1787529600",
            "does not set ARG SOURCE_DATE_EPOCH",
            id="no-source-date-epoch",
        ),
    ],
)
def test_each_rule_catches_its_break(tmp_path: Path, old: str, new: str, expected: str) -> None:
    found = problems(_mutated(tmp_path, old, new))
    assert any(expected in problem for problem in found), found


def test_the_rules_refuse_the_floating_dockerfile_this_one_replaced(tmp_path: Path) -> None:
    floating = tmp_path / "Dockerfile"
    floating.write_text(
        "FROM python:3.11-slim\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends iproute2 \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
        'RUN pip install --no-cache-dir "attested-nitro==0.1.0"\n'
        'ENTRYPOINT ["attested", "exec", "--"]\n'
    )
    found = problems(floating)
    assert len(found) == 4, found  # base by tag, live apt, unhashed pip, no epoch


def test_a_lock_without_a_hash_or_a_pin_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "h11==0.16.0 \\\n    --hash=sha256:" + "ab" * 32 + "\n"
        "six==1.17.0\n"
        "urllib3>=2 \\\n    --hash=sha256:" + "cd" * 32 + "\n"
    )
    assert lock_problems(lock) == [
        "requirements.lock: six==1.17.0 has no sha256 hash",
        "requirements.lock: 'urllib3>=2' is not pinned with ==",
    ]


def test_the_lock_pins_and_hashes_what_attested_nitro_needs() -> None:
    lock = ENCLAVE / "requirements.lock"
    assert lock_problems(lock) == []
    versions = locked_versions(lock)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = normalise(requirement.name)
        assert name in versions, f"{name} is a dependency but not in requirements.lock"
        assert requirement.specifier.contains(versions[name]), (name, versions[name])
    assert "attested-nitro" not in versions  # the wheel from the context, not the index


def test_the_lock_was_compiled_from_requirements_in() -> None:
    pins = locked_versions(ENCLAVE / "requirements.in")
    assert pins, "requirements.in pins nothing"
    assert all(locked_versions(ENCLAVE / "requirements.lock")[n] == v for n, v in pins.items())


def test_the_reader_joins_continuations_and_skips_comments() -> None:
    steps = instructions("# a comment\nFROM a@sha256:x AS b\n\nRUN one \\\n  # inside\n  two\n")
    assert [(s.line, s.keyword, s.value) for s in steps] == [
        (2, "FROM", "a@sha256:x AS b"),
        (4, "RUN", "one two"),
    ]
