"""The state directory: one root shared by processes, created safely, kept private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from attested import ConfigurationError, Policy, Verifier
from attested.simulator import (
    DEFAULT_IMAGE_PCRS,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    SimulatedNsm,
    load_or_create_root,
)
from attested.trust import TrustRoot
from tests.kit import T0

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_a_private_directory(tmp_path) -> None:
    state = tmp_path / "a" / "state"
    sim = SimulatedNsm(state_dir=state, clock=lambda: T0)
    assert _mode(state) == 0o700
    assert _mode(state / ROOT_KEY_FILE) == 0o600
    assert (state / ROOT_CERT_FILE).read_bytes() == sim.root_pem
    assert sorted(p.name for p in state.iterdir()) == [".lock", ROOT_KEY_FILE, ROOT_CERT_FILE]


def test_a_second_simulator_shares_the_root(tmp_path) -> None:
    first = SimulatedNsm(state_dir=tmp_path, clock=lambda: T0)
    second = SimulatedNsm(state_dir=tmp_path, clock=lambda: T0 + timedelta(days=400))
    assert first.root_certificate == second.root_certificate
    root = TrustRoot.from_pem((tmp_path / ROOT_CERT_FILE).read_bytes())
    for sim, when in ((first, T0), (second, T0 + timedelta(days=400))):
        Verifier(trust_root=root).verify(
            sim.get_attestation_document(), policy=Policy(pcrs={0: DEFAULT_IMAGE_PCRS[0]}), at=when
        )
    # Different processes (here: instances) have their own intermediates.
    assert first.module_id != second.module_id


def test_racing_processes_end_up_with_one_root(tmp_path) -> None:
    code = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from cryptography.hazmat.primitives import hashes\n"
        "from attested.simulator import load_or_create_root\n"
        "root = load_or_create_root(sys.argv[1], now=datetime.now(UTC))\n"
        "print(root.certificate.fingerprint(hashes.SHA256()).hex())\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "state")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(4)
    ]
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 0, err
        outputs.append(out.strip())
    on_disk = x509.load_pem_x509_certificate((tmp_path / "state" / ROOT_CERT_FILE).read_bytes())
    assert set(outputs) == {on_disk.fingerprint(hashes.SHA256()).hex()}
    leftovers = [p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_key_readable_by_others_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path, now=T0)
    os.chmod(tmp_path / ROOT_KEY_FILE, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        SimulatedNsm(state_dir=tmp_path, clock=lambda: T0)


def test_a_certificate_without_its_key_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path, now=T0)
    (tmp_path / ROOT_KEY_FILE).unlink()
    with pytest.raises(ConfigurationError, match="without its key"):
        load_or_create_root(tmp_path, now=T0)


def test_a_key_left_by_a_crashed_creator_is_replaced(tmp_path) -> None:
    load_or_create_root(tmp_path, now=T0)
    (tmp_path / ROOT_CERT_FILE).unlink()
    root = load_or_create_root(tmp_path, now=T0)
    assert load_or_create_root(tmp_path, now=T0).der == root.der


def test_a_key_that_does_not_match_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path / "one", now=T0)
    load_or_create_root(tmp_path / "two", now=T0)
    os.replace(tmp_path / "two" / ROOT_KEY_FILE, tmp_path / "one" / ROOT_KEY_FILE)
    with pytest.raises(ConfigurationError, match="does not belong"):
        load_or_create_root(tmp_path / "one", now=T0)


@pytest.mark.parametrize("damaged", [ROOT_KEY_FILE, ROOT_CERT_FILE])
def test_damaged_files_are_refused(tmp_path, damaged) -> None:
    load_or_create_root(tmp_path, now=T0)
    (tmp_path / damaged).write_bytes(b"-----BEGIN garbage-----\n")
    with pytest.raises(ConfigurationError, match="delete"):
        load_or_create_root(tmp_path, now=T0)


def test_oversized_files_are_refused(tmp_path) -> None:
    load_or_create_root(tmp_path, now=T0)
    (tmp_path / ROOT_CERT_FILE).write_bytes(b"x" * 70000)
    with pytest.raises(ConfigurationError, match="larger"):
        load_or_create_root(tmp_path, now=T0)


def test_a_file_in_place_of_the_directory_is_refused(tmp_path) -> None:
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="state directory"):
        SimulatedNsm(state_dir=tmp_path / "state")


def test_a_root_not_valid_now_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path, now=T0)
    with pytest.raises(ConfigurationError, match="new state directory"):
        SimulatedNsm(state_dir=tmp_path, clock=lambda: T0 - timedelta(days=1))
