"""Memory stays flat for large images: a 256 MiB sparse EIF under tracemalloc."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from attested.eif import SectionType, read_eif
from attested.eif._build import Zeros, write_eif
from tests.eif.images import METADATA_JSON, measure

SIZE = 256 << 20
PEAK_LIMIT = 64 << 20


@pytest.fixture(scope="module")
def big_eif(tmp_path_factory) -> Path:
    path: Path = tmp_path_factory.mktemp("eif") / "big.eif"
    with path.open("w+b") as handle:
        write_eif(
            handle,
            [
                (SectionType.KERNEL, b"kernel" * 1000),
                (SectionType.CMDLINE, b"console=ttyS0"),
                (SectionType.METADATA, METADATA_JSON),
                (SectionType.RAMDISK, b"bootstrap" * 1000),
                (SectionType.RAMDISK, Zeros(SIZE)),
            ],
        )
    return path


def _zeros_pcr(size: int) -> bytes:
    digest, chunk = hashlib.sha384(), bytes(1 << 20)
    for _ in range(size // len(chunk)):
        digest.update(chunk)
    return hashlib.sha384(bytes(48) + digest.digest()).digest()


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_large_image_is_measured_in_flat_memory(big_eif: Path, parallel: bool) -> None:
    tracemalloc.start()
    try:
        with big_eif.open("rb") as handle:
            image = read_eif(handle, parallel=parallel)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.intact
    assert image.size > SIZE
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    assert image.pcr1 == measure(b"kernel" * 1000 + b"console=ttyS0" + b"bootstrap" * 1000)
    if not parallel:
        assert image.pcr2 == _zeros_pcr(SIZE)
