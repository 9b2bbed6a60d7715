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


# -- another local user must not be able to swap the root (ssh's StrictModes) ---------------


def _open_up(path: Path, mode: int) -> None:
    """Give ``path`` a mode that lets other users change it (what these tests refuse)."""
    os.chmod(path, mode)


def _simulate(state: Path, out: Path) -> list[str]:
    return ["simulate", "attest", "--state", str(state), "--out", str(out)]


@pytest.mark.parametrize(
    ("mode", "who"), [(0o777, "others"), (0o770, "its group")], ids=["0777", "0770"]
)
def test_an_existing_directory_writable_by_others_is_refused(tmp_path, mode, who) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _open_up(state, mode)
    with pytest.raises(ConfigurationError) as caught:
        SimulatedNsm(state_dir=state, clock=lambda: T0)
    message = str(caught.value)
    assert str(state) in message
    assert f"writable by {who} (mode {mode:04o})" in message
    assert f"chmod go-w {state}" in message
    assert list(state.iterdir()) == []  # nothing was created in it


def test_the_cli_refuses_a_world_writable_state_directory(tmp_path, capsys) -> None:
    from attested.cli import main

    state = tmp_path / "state"
    state.mkdir()
    _open_up(state, 0o777)
    assert main(_simulate(state, tmp_path / "doc")) == 3
    err = capsys.readouterr().err
    assert f"{state} is writable by others (mode 0777)" in err
    assert not (tmp_path / "doc").exists()
    assert not (state / ROOT_CERT_FILE).exists()


def test_a_root_made_before_the_directory_was_opened_up_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path / "state", now=T0)
    _open_up(tmp_path / "state", 0o777)
    with pytest.raises(ConfigurationError, match=r"writable by others \(mode 0777\)"):
        load_or_create_root(tmp_path / "state", now=T0)


def test_a_parent_writable_by_others_is_refused_unless_sticky(tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    _open_up(shared, 0o777)  # anyone could rename state away and put their own there
    with pytest.raises(ConfigurationError, match=rf"{shared} is writable by others"):
        load_or_create_root(shared / "state", now=T0)
    _open_up(shared, 0o1777)  # like /tmp: only the owner may rename what is in it
    load_or_create_root(shared / "state", now=T0)
    assert _mode(shared / "state") == 0o700


def test_missing_parents_are_created_private(tmp_path) -> None:
    old = os.umask(0o002)  # a umask that would leave group-writable parents
    try:
        load_or_create_root(tmp_path / "a" / "b" / "state", now=T0)
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "state"):
        assert _mode(path) == 0o700
    load_or_create_root(tmp_path / "a" / "b" / "state", now=T0)  # and accepted again


@pytest.mark.parametrize("name", [ROOT_CERT_FILE, ROOT_KEY_FILE])
def test_files_writable_by_others_are_refused(tmp_path, name) -> None:
    load_or_create_root(tmp_path, now=T0)
    _open_up(tmp_path / name, 0o622 if name == ROOT_CERT_FILE else 0o600 | 0o020)
    with pytest.raises(ConfigurationError, match=f"{tmp_path / name} is"):
        load_or_create_root(tmp_path, now=T0)


def test_a_symlinked_root_is_refused(tmp_path) -> None:
    load_or_create_root(tmp_path / "mine", now=T0)
    load_or_create_root(tmp_path / "other", now=T0)
    (tmp_path / "mine" / ROOT_CERT_FILE).unlink()
    (tmp_path / "mine" / ROOT_CERT_FILE).symlink_to(tmp_path / "other" / ROOT_CERT_FILE)
    with pytest.raises(ConfigurationError, match="is a symbolic link"):
        load_or_create_root(tmp_path / "mine", now=T0)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
@pytest.mark.parametrize("what", ["directory", ROOT_CERT_FILE, ROOT_KEY_FILE])
def test_anything_owned_by_another_user_is_refused(tmp_path, what) -> None:
    state = tmp_path / "state"
    load_or_create_root(state, now=T0)
    target = state if what == "directory" else state / what
    os.chown(target, 65534, 65534)
    with pytest.raises(
        ConfigurationError, match=rf"{target} is owned by another user \(uid 65534\)"
    ):
        load_or_create_root(state, now=T0)


def test_the_emulator_refuses_a_world_writable_simulated_state(tmp_path, capsys) -> None:
    from attested.cli import main

    state = tmp_path / "state"
    load_or_create_root(state, now=T0)
    _open_up(state, 0o777)
    assert main(["emulator", "kms", "--simulated-state", str(state)]) == 3
    assert f"{state} is writable by others (mode 0777)" in capsys.readouterr().err
    os.chmod(state, 0o700)
    _open_up(state / ROOT_CERT_FILE, 0o666)
    assert main(["emulator", "kms", "--simulated-state", str(state)]) == 3
    assert f"{state / ROOT_CERT_FILE} is writable by others" in capsys.readouterr().err


def test_the_service_refuses_a_world_writable_simulated_state(tmp_path) -> None:
    from attested.service import Service, ServiceConfig

    state = tmp_path / "state"
    load_or_create_root(state, now=T0)
    _open_up(state, 0o777)
    config = ServiceConfig(
        api_unix=str(tmp_path / "api.sock"),
        nsm_backend="simulated",
        nsm_simulated_state=str(state),
        allowed_keys=("*",),
        credentials_source="environment",
    )
    service = Service(config)
    try:
        with pytest.raises(ConfigurationError, match=rf"{state} is writable by others"):
            service.start()
    finally:
        service.stop(deadline=5.0)
    assert not (tmp_path / "api.sock").exists()
