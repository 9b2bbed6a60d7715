"""Signals, exit statuses and reaping, with a real process tree.

``attested exec`` runs as a real process (and as a real PID 1 in a new PID namespace,
when user namespaces let a non-root user make one); the app is a POSIX shell script.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested.exec import AppExit
from attested.exec._supervise import Supervisor
from tests.exec.support import EnclaveToml, clean_env, exec_command, run_exec, wait_for

pytestmark = pytest.mark.integration

NO_KMS = "http://127.0.0.1:9"  # never called: these configurations have no secrets


@pytest.fixture
def config(sim_state: Path, short_dir: Path) -> Path:
    return EnclaveToml(
        directory=short_dir, state=sim_state, emulator_url=NO_KMS, allowed_keys=["*"]
    ).write()


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def start(
    spawned: list[subprocess.Popen[bytes]], command: list[str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    spawned.append(process)
    return process


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("exit 0", 0),
        ("exit 42", 42),
        ("exit 255", 255),
        ("kill -KILL $$", 128 + signal.SIGKILL),
        ("kill -USR1 $$", 128 + signal.SIGUSR1),
    ],
)
def test_the_apps_status_comes_back(config: Path, script: str, status: int) -> None:
    assert run_exec(config, ["sh", "-c", script]).status == status


TRAPS = """
trap 'echo "got TERM"; exit 42' TERM
trap 'echo "got INT"; exit 5' INT
trap 'echo "got HUP" >> "$1.hup"' HUP
touch "$1.ready"
while :; do sleep 0.1; done
"""


def test_sigterm_is_forwarded_and_the_apps_answer_is_the_status(
    config: Path, short_dir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    script = short_dir / "traps.sh"
    script.write_text(TRAPS)
    base = short_dir / "app"
    log = short_dir / "exec.log"
    process = start(spawned, exec_command(config, ["sh", str(script), str(base)]), log)
    wait_for(lambda: Path(f"{base}.ready").exists() or process.poll() is not None, "the app")
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 42, log.read_text()
    assert "got TERM" in log.read_text()
    assert "SIGTERM received: forwarded to the app" in log.read_text()


def test_sighup_is_forwarded_and_the_app_keeps_running_then_sigint(
    config: Path, short_dir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    script = short_dir / "traps.sh"
    script.write_text(TRAPS)
    base = short_dir / "app"
    log = short_dir / "exec.log"
    process = start(spawned, exec_command(config, ["sh", str(script), str(base)]), log)
    wait_for(lambda: Path(f"{base}.ready").exists() or process.poll() is not None, "the app")
    process.send_signal(signal.SIGHUP)
    wait_for(lambda: Path(f"{base}.hup").exists(), "the app's HUP trap")
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 5, log.read_text()


def test_an_app_without_a_handler_ends_by_the_signal_and_exec_says_128_plus_n(
    config: Path, short_dir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    ready = short_dir / "ready"
    log = short_dir / "exec.log"
    process = start(spawned, exec_command(config, ["sh", "-c", f"touch {ready}; exec sleep 300"]),
                    log)  # fmt: skip
    wait_for(lambda: ready.exists() or process.poll() is not None, "the app")
    time.sleep(0.2)  # let sh exec sleep (both end by SIGTERM alike)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 128 + signal.SIGTERM


ORPHAN = """
( sleep 1 & echo $! > "$1" )
orphan=$(cat "$1")
echo "orphan $orphan parent $(awk '/^PPid:/ {print $2}' /proc/$orphan/status)"
i=0
while [ -e /proc/$orphan ]; do   # a zombie stays in /proc until its parent reaps it
    i=$((i + 1))
    if [ $i -gt 900 ]; then echo "orphan $orphan not reaped"; exit 1; fi
    sleep 0.1
done
echo "orphan reaped"
"""


def test_orphans_of_the_app_are_adopted_and_reaped_as_a_subreaper(
    config: Path, short_dir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    """Not PID 1 and not root: PR_SET_CHILD_SUBREAPER makes exec adopt the app's orphans."""
    script = short_dir / "orphan.sh"
    script.write_text(ORPHAN)
    log = short_dir / "exec.log"
    process = start(spawned, exec_command(config, ["sh", str(script), str(short_dir / "pid")]),
                    log)  # fmt: skip
    assert process.wait(120) == 0, log.read_text()
    text = log.read_text()
    assert f"parent {process.pid}" in text  # adopted by exec, not by the machine's init
    assert "orphan reaped" in text


def _can_make_pid_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rpf", "--mount-proc", "sh", "-c", "test $$ = 1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_make_pid_namespace(), reason="cannot make a PID namespace here")
def test_as_pid_1_orphans_are_reaped_without_being_a_subreaper(
    sim_state: Path, short_dir: Path
) -> None:
    """A real PID 1 (a new PID namespace through a user namespace: no root needed)."""
    config = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=NO_KMS,
        allowed_keys=["*"],
        exec_settings={"subreaper": False},
    ).write()
    script = short_dir / "orphan.sh"
    script.write_text(ORPHAN)
    done = subprocess.run(
        ["unshare", "-rpf", "--mount-proc",
         *exec_command(config, ["sh", str(script), str(short_dir / "pid")])],
        capture_output=True,
        env=clean_env(),
        timeout=180,
        check=False,
    )  # fmt: skip
    output = done.stdout.decode()
    assert done.returncode == 0, output + done.stderr.decode()
    assert "parent 1" in output  # exec is PID 1 there
    assert "orphan reaped" in output


def test_no_such_command_is_127_and_not_executable_is_126(config: Path, short_dir: Path) -> None:
    missing = run_exec(config, [str(short_dir / "no-such-app")])
    assert missing.status == 127
    assert "no such command" in missing.stderr
    plain = short_dir / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)  # without an x bit, execve refuses even root
    denied = run_exec(config, [str(plain)])
    assert denied.status == 126
    assert "not executable" in denied.stderr


def test_a_stop_signal_during_start_up_stops_it_without_running_the_app(
    sim_state: Path, short_dir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    """S3 that accepts and never answers holds a secret; SIGTERM does not wait for it."""
    with socket.socket() as stuck:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(8)
        port = stuck.getsockname()[1]
        toml = EnclaveToml(
            directory=short_dir,
            state=sim_state,
            emulator_url=NO_KMS,
            allowed_keys=["*"],
            exec_settings={"s3_endpoint_url": f"http://127.0.0.1:{port}"},
        )
        toml.secrets.append(
            {"name": "slow", "s3": "s3://bucket/slow.bin", "key_id": "alias/x", "env": "SLOW"}
        )
        marker = short_dir / "the-app-ran"
        log = short_dir / "exec.log"
        process = start(spawned, exec_command(toml.write(), ["touch", str(marker)]), log)
        stuck.settimeout(60)
        connection, _ = stuck.accept()  # exec is fetching the ciphertext now
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
        elapsed = time.monotonic() - began
        connection.close()
    assert status == 128 + signal.SIGTERM, log.read_text()
    assert not marker.exists()
    assert "the app was not started" in log.read_text()
    # S3 would time out after 3 attempts of 10 s: start-up did not wait for it.
    assert elapsed < 25


def test_a_part_that_dies_stops_the_app(short_dir: Path) -> None:
    """In process: when the parts stop serving, the app gets SIGTERM and it is reported."""
    with Supervisor(subreaper=False) as supervisor:
        supervisor.start(["sleep", "300"], dict(os.environb), stdout=None, stderr=None)
        ended = supervisor.supervise(parts_running=lambda: False, stop_timeout=30)
    assert ended == AppExit(ended.pid, None, signal.SIGTERM, part_failed=True)
    assert ended.status == 128 + signal.SIGTERM
