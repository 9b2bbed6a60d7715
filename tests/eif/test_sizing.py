"""The minimum enclave memory an image needs, by nitro-cli's rule, and where it is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.cli import main
from attested.eif import minimum_memory_mib

SYNTHETIC = Path(__file__).parents[1] / "vectors" / "eif" / "synthetic_eif_unsigned.eif"
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "minimum"),
    [
        (0, 64),  # the driver's floor
        (16 * MIB, 64),
        (16 * MIB + 1, 65),  # 4 x (16 MiB + 1 byte) is just over 64 MiB
        (100 * MIB, 400),
        (412_345_678, 1573),  # ceil(4 * 412345678 / 2**20) = ceil(1572.98...)
    ],
)
def test_minimum_memory_is_four_times_the_file_size_and_at_least_64_mib(
    size: int, minimum: int
) -> None:
    assert minimum_memory_mib(size) == minimum


@given(st.integers(0, 1 << 40))
def test_the_minimum_is_exactly_what_nitro_cli_accepts(size: int) -> None:
    """nitro-cli refuses when ``4 * eif_size > memory_mib << 20``."""
    minimum = minimum_memory_mib(size)
    assert not 4 * size > minimum << 20  # accepted
    if minimum > 64:
        assert 4 * size > (minimum - 1) << 20  # one MiB less is refused


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        minimum_memory_mib(-1)


def test_describe_prints_the_minimum_and_its_rule(capsys) -> None:
    assert main(["eif", "describe", str(SYNTHETIC)]) == 0
    assert "  memory:    at least 64 MiB to launch (nitro-cli: 4 x the file size" in (
        capsys.readouterr().out
    )
    assert main(["eif", "describe", str(SYNTHETIC), "--json"]) == 0
    attested = json.loads(capsys.readouterr().out)["Attested"]
    assert attested["MinimumMemoryMiB"] == 64
    assert "resource_manager.rs" in attested["MinimumMemoryRule"]
