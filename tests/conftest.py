"""Shared test configuration: markers, a clean environment, vectors."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.kit import Kit, make_kit

# The default profile is derandomized so that `./run test` (and CI) is reproducible;
# `HYPOTHESIS_PROFILE=fuzz ./run test` explores new random examples on every run.
settings.register_profile(
    "default",
    deadline=None,  # shared CI machines are noisy; speed is measured in bench/
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "fuzz",
    parent=settings.get_profile("default"),
    derandomize=False,
    max_examples=1000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_STRIPPED_PREFIXES = ("AWS_", "ATTESTED_")
_STRIPPED = {
    "NSM_LIB_PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-enclave",
        action="store_true",
        default=False,
        help="run tests that need a real /dev/nsm and libnsm (inside a Nitro enclave)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-enclave"):
        return
    skip = pytest.mark.skip(reason="needs a Nitro enclave; run with --run-enclave inside one")
    for item in items:
        if "enclave" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's AWS credentials, proxies or NSM library path."""
    for name in list(os.environ):
        if name.startswith(_STRIPPED_PREFIXES) or name in _STRIPPED:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def kit() -> Kit:
    """A Nitro-shaped test PKI valid at ``tests.kit.T0``, shared by the session."""

    return make_kit()
