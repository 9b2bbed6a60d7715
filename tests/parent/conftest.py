"""Fixtures for the parent tests: loopback targets, AWS credentials in the environment."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attested.parent import Parent, ParentConfig, parse_parent_config
from attested.relay._logs import SINK_FIELDS
from tests.kms.test_credentials import _Imds, serve_imds
from tests.relay.conftest import make_target, no_leaked_threads

__all__ = ["make_target", "no_leaked_threads", "unstamped"]

ACCESS_KEY = "AKIAPARENTEXAMPLE001"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPARENTKEY"


def unstamped(line: str) -> dict[str, object]:
    """A sink line without the sink's own fields (received, peer, enclave): what was sent."""
    record = json.loads(line)
    assert isinstance(record, dict)
    for name in SINK_FIELDS:
        record.pop(name, None)
    return record


@pytest.fixture
def aws_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials in the environment only: no profile files, no instance metadata."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def run_parent(tmp_path: Path) -> Iterator[Callable[[str], Parent]]:
    """Start a Parent from TOML text (paths relative to tmp_path); stopped at teardown."""
    started: list[Parent] = []

    def start(text: str) -> Parent:
        config: ParentConfig = parse_parent_config(text, base=tmp_path)
        parent = Parent(config).start()
        started.append(parent)
        return parent

    yield start
    for parent in started:
        parent.stop(deadline=1.0)


class _ClosingImds(_Imds):
    """The IMDSv2 stand-in of the KMS tests, closing each connection after its answer."""

    protocol_version = "HTTP/1.0"


@pytest.fixture
def imds() -> Iterator[str]:
    """A local IMDSv2 with a role whose credentials expire in 6 hours; yields its URL."""
    with serve_imds(_ClosingImds) as url:
        yield url
