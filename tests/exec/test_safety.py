"""Where a plaintext may be, and where it never is.

The app's environment and its secret files (mode 0400, created whole, in memory-backed
directories only) hold it; exec's logs, its command line, its own environment, its
reprs and messages do not; exec starts no other program; the files go when the app ends.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from attested.exec import SecretSpec, SetupError
from attested.exec._config import InlineCiphertext
from attested.exec._files import RAMFS_MAGIC, TMPFS_MAGIC, filesystem_type, write_secret_file
from attested.exec._handover import Handover
from attested.exec._open import Plaintexts
from tests.exec.support import (
    Emulator,
    EnclaveToml,
    b64,
    clean_env,
    exec_command,
    run_exec,
    sink_lines,
    wait_for,
)

pytestmark = pytest.mark.integration

PLAINTEXT = b"never-in-a-log-Zk2QmT9v"


def forms(secret: bytes) -> list[str]:
    """The ways a plaintext could show up in text."""
    return [
        secret.decode("latin-1"),
        base64.b64encode(secret).decode(),
        secret.hex(),
        base64.urlsafe_b64encode(secret).decode(),
    ]


def _toml(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    plaintext: bytes = PLAINTEXT,
    **secret: object,
) -> EnclaveToml:
    blob = emulator.encrypt(emulator.good, plaintext, {})
    toml = EnclaveToml(
        directory=short_dir, state=sim_state, emulator_url=emulator.url,
        allowed_keys=[emulator.good],
    )  # fmt: skip
    toml.secrets.append(
        {"name": "db-password", "ciphertext": b64(blob), "key_id": emulator.good, **secret}
    )
    return toml


@pytest.mark.slow
def test_only_the_apps_environment_and_file_hold_the_plaintext(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    sink: tuple[str, Path],
) -> None:
    secret_file = secret_dir / "db-password"
    toml = _toml(emulator, sim_state, short_dir, env="DB_PASSWORD", file=str(secret_file))
    toml.ship_to = sink[0]
    stop, pid_file = short_dir / "stop", short_dir / "app.pid"
    app = f"echo $$ > {pid_file}; echo started; while [ ! -e {stop} ]; do sleep 0.1; done"
    log = short_dir / "exec.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            exec_command(toml.write(), ["sh", "-c", app], "--log-level", "DEBUG"),
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
    try:
        app_pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "app"))
        proc = Path("/proc")
        exec_environ = (proc / str(process.pid) / "environ").read_bytes()
        exec_cmdline = (proc / str(process.pid) / "cmdline").read_bytes()
        app_environ = (proc / str(app_pid) / "environ").read_bytes()
        children = (proc / str(process.pid) / "task" / str(process.pid) / "children").read_text()
        info = secret_file.lstat()
        content = secret_file.read_bytes()
    finally:
        stop.touch()
        status = process.wait(60)
    assert status == 0
    assert b"DB_PASSWORD=" + PLAINTEXT in app_environ.split(b"\0")  # the app has it
    assert content == PLAINTEXT
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert info.st_uid == os.geteuid()
    assert children.split() == [str(app_pid)]  # exec starts no other program
    for blob in (exec_environ, exec_cmdline):
        assert PLAINTEXT not in blob
    wait_for(lambda: any(line.get("message") == "started" for line in sink_lines(sink[1])), "sink")
    texts = [log.read_text(), sink[1].read_text()]
    assert "DEBUG" in texts[0]
    own = [line for line in sink_lines(sink[1]) if line.get("source") == "attested-exec"]
    assert any(line["level"] == "DEBUG" for line in own)  # exec's own log is shipped too
    for text in texts:
        for form in forms(PLAINTEXT):
            assert form not in text
    assert not secret_file.exists()  # removed once the app ended


def test_a_plaintext_with_a_nul_cannot_be_an_environment_variable_but_can_be_a_file(
    emulator: Emulator, sim_state: Path, short_dir: Path, secret_dir: Path
) -> None:
    binary = b"\x00\x01binary-key\xff"
    as_env = run_exec(_toml(emulator, sim_state, short_dir, binary, env="KEY").write(), ["true"])
    assert as_env.status == 1
    assert "secret 'db-password'" in as_env.stderr
    assert "NUL byte" in as_env.stderr
    target = secret_dir / "key.bin"
    toml = _toml(emulator, sim_state, short_dir, binary, file=str(target))
    as_file = run_exec(toml.write(), ["sh", "-c", f"od -An -tx1 {target} | tr -d ' \\n'"])
    assert as_file.status == 0, as_file.stderr
    assert as_file.stdout.decode() == binary.hex()


def _on_disk(path: Path) -> bool:
    return filesystem_type(str(path)) not in (TMPFS_MAGIC, RAMFS_MAGIC)


def test_a_file_outside_tmpfs_is_refused_by_default_and_warned_about_on_request(
    emulator: Emulator, sim_state: Path, short_dir: Path
) -> None:
    if not _on_disk(short_dir):
        pytest.skip("/tmp is on tmpfs here: no disk-backed directory to try")
    target = short_dir / "secrets" / "db-password"
    refused = run_exec(_toml(emulator, sim_state, short_dir, file=str(target)).write(), ["true"])
    assert refused.status == 3
    assert "secret 'db-password'" in refused.stderr
    assert "not on tmpfs or ramfs" in refused.stderr
    assert not target.exists()
    toml = _toml(emulator, sim_state, short_dir, file=str(target))
    toml.exec_settings["tmpfs"] = "warn"
    warned = run_exec(toml.write(), ["cat", str(target)])
    assert warned.status == 0, warned.stderr
    assert warned.stdout == PLAINTEXT
    assert "WARNING" in warned.stderr
    assert "not on tmpfs or ramfs" in warned.stderr


def test_a_directory_others_can_write_to_is_refused(
    emulator: Emulator, sim_state: Path, short_dir: Path, secret_dir: Path
) -> None:
    shared = secret_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    run = run_exec(_toml(emulator, sim_state, short_dir, file=str(shared / "x")).write(), ["true"])
    assert run.status == 3
    assert "can be written by others" in run.stderr


def test_the_owner_is_set_as_configured_or_start_up_says_it_needs_root(
    emulator: Emulator, sim_state: Path, short_dir: Path, secret_dir: Path
) -> None:
    target = secret_dir / "owned"
    toml = _toml(emulator, sim_state, short_dir, file=str(target), owner="65534:65534",
                 mode="0440")  # fmt: skip
    if os.geteuid() == 0:
        run = run_exec(toml.write(), ["stat", "-c", "%u:%g %a", str(target)])
        assert run.status == 0, run.stderr
        assert run.stdout.decode().strip() == "65534:65534 440"
    else:
        run = run_exec(toml.write(), ["true"])
        assert run.status == 3
        assert "needs root" in run.stderr


def test_the_file_is_never_seen_with_a_wider_mode(secret_dir: Path) -> None:
    """Another thread lists the directory and stats every entry while files are written."""
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(secret_dir):
                with contextlib.suppress(FileNotFoundError):
                    seen.add(stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))

    watcher = threading.Thread(target=watch)
    old_umask = os.umask(0)  # the widest umask: the mode must not depend on it
    watcher.start()
    try:
        for index in range(200):
            write_secret_file(str(secret_dir / f"s{index % 3}"), b"x" * 64, mode=0o400,
                              owner=None, tmpfs="require", secret="s")  # fmt: skip
    finally:
        done.set()
        watcher.join(30)
        os.umask(old_umask)
    assert seen
    assert seen <= {0o400}


def test_a_link_planted_at_the_target_is_replaced_not_followed(
    secret_dir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = secret_dir / "db-password"
    target.symlink_to(victim)
    write_secret_file(str(target), PLAINTEXT, mode=0o400, owner=None, tmpfs="require", secret="s")
    assert victim.read_text() == "keep me"
    assert not target.is_symlink()
    assert target.read_bytes() == PLAINTEXT


def test_a_file_where_a_directory_is_needed_is_a_setup_error(secret_dir: Path) -> None:
    (secret_dir / "plain").write_text("")
    with pytest.raises(SetupError, match="cannot use the directory"):
        write_secret_file(str(secret_dir / "plain" / "x"), b"v", mode=0o400, owner=None,
                          tmpfs="require", secret="s")  # fmt: skip


def test_reprs_and_buffers_hold_no_plaintext() -> None:
    plaintexts = Plaintexts()
    plaintexts.put("db-password", PLAINTEXT)
    buffer = plaintexts.value("db-password")
    assert buffer is not None
    handover = Handover({b"DB_PASSWORD": PLAINTEXT}, ["/run/secrets/db"])
    spec = SecretSpec(
        name="db-password", source=InlineCiphertext(blob=b"\x01" * 64), key_id="alias/k"
    )
    for text in (repr(plaintexts), repr(handover), repr(spec), str(spec.source)):
        for form in forms(PLAINTEXT):
            assert form not in text
    assert "\\x01" not in repr(spec)
    plaintexts.clear()
    assert buffer == bytearray(len(PLAINTEXT))  # overwritten with zeros
    handover.clear()
    assert dict(handover.env) == {}


def test_the_supervisor_is_not_dumpable() -> None:
    """Its memory is closed to ptrace and /proc/PID/mem for the app's user (not root)."""
    code = (
        "import ctypes; from attested.exec._supervise import make_undumpable; "
        "make_undumpable(); print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.decode().strip() == "0"
