"""Recipe docs/recipes/sizing.md: the minimum memory ``eif describe`` prints, by nitro-cli's rule.

Images of several sizes, built like nitro-cli's; the printed minimum is checked against
nitro-cli's own comparison (``4 * eif_size > memory_mib << 20`` is refused), written out
here independently, and the driver's 64 MiB floor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eif.images import build_image

pytestmark = [pytest.mark.recipes, pytest.mark.integration]


def nitro_cli_accepts(eif_size: int, memory_mib: int) -> bool:
    """resource_manager.rs EnclaveHandle::new, and the driver's NE_MIN_ENCLAVE_MEM_SIZE."""
    return not 4 * eif_size > memory_mib << 20 and memory_mib << 20 >= 64 << 20


@pytest.mark.parametrize("ramdisk_mib", [0, 20, 33])
def test_describe_prints_the_smallest_memory_nitro_cli_accepts(
    tmp_path: Path, ramdisk_mib: int
) -> None:
    image = build_image(ramdisks=(b"bootstrap", b"\x00" * (ramdisk_mib << 20)))
    path = tmp_path / "app.eif"
    path.write_bytes(image.data)
    run = subprocess.run(
        [sys.executable, "-m", "attested", "eif", "describe", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    minimum = json.loads(run.stdout)["Attested"]["MinimumMemoryMiB"]
    size = path.stat().st_size
    assert nitro_cli_accepts(size, minimum)
    assert not nitro_cli_accepts(size, minimum - 1)
    text = subprocess.run(
        [sys.executable, "-m", "attested", "eif", "describe", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"  memory:    at least {minimum} MiB to launch" in text
