"""The public API is small, explicit and sorted; private modules stay private."""

from __future__ import annotations

import importlib

import pytest

import attested
import nsm

PUBLIC_MODULES = [
    "attested",
    "attested.errors",
    "attested.document",
    "attested.limits",
    "attested.net",
    "attested.parent",
    "attested.pcr",
    "attested.policy",
    "attested.provider",
    "attested.trust",
    "attested.verify",
    "attested.eif",
    "attested.emulator",
    "attested.enclave",
    "attested.keypolicy",
    "attested.kms",
    "attested.kms.client",
    "attested.kms.credentials",
    "attested.relay",
    "attested.service",
    "attested.simulator",
    "nsm",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for item in exported:
        assert hasattr(module, item), f"{name}.{item} is in __all__ but missing"


def test_top_level_exports_exactly_the_public_names() -> None:
    public = {n for n in dir(attested) if not n.startswith("_") and n != "annotations"}
    modules = {n for n in public if type(getattr(attested, n)).__name__ == "module"}
    assert set(attested.__all__) - {"__version__"} == public - modules


def test_importing_nsm_needs_no_library() -> None:
    assert nsm.__name__ == "nsm"


def test_version_matches_installed_metadata() -> None:
    from importlib.metadata import version

    assert version("attested-nitro") == attested.__version__
