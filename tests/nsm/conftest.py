"""Fixtures for the nsm binding: the compiled libnsm stand-in, and devices on top of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import nsm
from tests.nsm.stub import Stub, StubUnavailable, build_stub


@pytest.fixture(scope="session")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stub compiled once per session; skips every test that needs it without cc."""
    try:
        return build_stub(tmp_path_factory.mktemp("libnsm-stub"))
    except StubUnavailable as exc:
        pytest.skip(f"{exc}; the libnsm binding tests need it")


@pytest.fixture
def stub(stub_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stub:
    """The stub, reset, with $NSM_LIB_PATH pointing at it."""
    monkeypatch.setenv("NSM_LIB_PATH", str(stub_path))
    control = Stub(stub_path)
    control.reset()
    return control


@pytest.fixture
def device(stub: Stub) -> Iterator[nsm.NsmDevice]:
    """An NsmDevice on the libnsm backend, talking to the stub."""
    with nsm.open_device(backend="libnsm") as opened:
        yield opened
