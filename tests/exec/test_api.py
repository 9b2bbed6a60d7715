"""``attested.exec``'s public API: sorted, resolvable, and documented by its package."""

from __future__ import annotations

import attested.exec


def test_all_is_sorted_and_resolvable() -> None:
    exported = list(attested.exec.__all__)
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(attested.exec, name), name


def test_the_package_says_its_job_and_its_boundaries() -> None:
    doc = attested.exec.__doc__ or ""
    assert "attested exec" in doc
    assert "Boundaries" in doc
