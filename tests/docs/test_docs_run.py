"""Every runnable block of the docs runs, as written, the way a reader would run it.

For each Markdown file, its shell and Python blocks run in order in one fresh directory
that stands in for the root of a checkout: it holds copies of the files the docs point
to (``examples/``, ``policies/``, ``tests/vectors/``), so a later block may use what an
earlier one made, and nothing a block writes reaches the real checkout. The environment
is the one docs/house-rules.md ("Writing docs") promises a reader:

* ``attested`` and ``python`` are the project's (the directory of this interpreter comes
  first on ``PATH``, as after ``. .venv/bin/activate``);
* a KMS emulator runs on 127.0.0.1 with the built-in development identity, as
  ``attested emulator kms`` starts it, and its endpoint and credentials are exported as
  ``AWS_ENDPOINT_URL_KMS``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_DEFAULT_REGION`` and ``AWS_REGION`` (a block that needs more starts its own);
* ``HOME`` is empty (no ``~/.aws``) and instance metadata is switched off; as a safety
  net, other AWS endpoints and any proxy-honouring client are pointed at a closed
  loopback port, so nothing a block runs can reach AWS.

Shell blocks run with ``bash -euo pipefail``; ``console`` blocks run their ``$`` lines.
Python blocks run as scripts. Each block runs in its own process group, gets 90 seconds,
and must have stopped everything it started by the time it ends: whatever is left is
killed and reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested import emulator
from attested.simulator import SimulatedNsm
from attested.trust import TrustRoot
from tests.docs.blocks import ROOT, Block, FenceError, blocks, markdown_files, shell_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLOCK_TIMEOUT = 90.0
# What the docs may point to, relative to the root of a checkout; copied, never linked.
CHECKOUT_FILES = ("examples", "policies", "tests/vectors")
REGION = "us-east-1"
# Tools a document may use that a minimal system lacks (as tests/service skips without curl).
OPTIONAL_TOOLS = ("curl",)


def documents() -> list[Path]:
    found = []
    for path in markdown_files():
        try:
            if any(block.runnable for block in blocks(path)):
                found.append(path)
        except FenceError:
            continue  # test_fences.py reports it
    return found


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """The emulator a reader has running in another terminal: ``attested emulator kms``."""
    state = Path(tempfile.mkdtemp(prefix="att-doc-sim-"))
    try:
        root = SimulatedNsm(state_dir=state)
        root.close()
        config = emulator.EmulatorConfig(
            trust_root=TrustRoot.from_pem((state / "root.pem").read_bytes()), region=REGION
        )
        with emulator.KmsEmulator(config) as kms:
            yield kms.endpoint_url
    finally:
        shutil.rmtree(state, ignore_errors=True)


def reader_environment(home: Path, endpoint: str) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bindir, os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_KMS": endpoint,
        "AWS_ACCESS_KEY_ID": emulator.DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": emulator.DEV_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "PYTHONDONTWRITEBYTECODE": "1",
        # A safety net, not part of what a reader has: should a block miss the emulator,
        # its AWS calls go to a closed loopback port instead of to AWS.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A fresh directory standing in for the root of a checkout (a short path: sockets)."""
    base = Path(tempfile.mkdtemp(prefix="att-doc-", dir="/tmp"))
    try:
        work = base / "checkout"
        for name in CHECKOUT_FILES:
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        (base / "home").mkdir()
        (base / "scripts").mkdir()
        yield work
    finally:
        shutil.rmtree(base, ignore_errors=True)


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for name in CHECKOUT_FILES
        for p in sorted((directory / name).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(
    "document", documents(), ids=lambda p: str(p.relative_to(ROOT)).replace("/", "-")
)
def test_the_runnable_blocks_of_a_document_run(
    document: Path, checkout: Path, kms_endpoint: str
) -> None:
    runnable = [b for b in blocks(document) if b.runnable]
    for tool in OPTIONAL_TOOLS:
        if shutil.which(tool) is None and any(f"{tool} " in b.text for b in runnable):
            pytest.skip(f"{tool} is not installed; {document.name} uses it")
    env = reader_environment(checkout.parent / "home", kms_endpoint)
    before = digests(checkout)
    for number, block in enumerate(runnable):
        run_block(block, number, checkout, env)
    changed = sorted(k for k, v in digests(checkout).items() if before.get(k) != v)
    assert not changed, f"{document.name} changed files of the checkout: {changed}"


def run_block(
    block: Block, number: int, cwd: Path, env: dict[str, str], linger: float = 10.0
) -> None:
    """Run one block; fail the test if it fails or leaves a process after ``linger`` s."""
    script = cwd.parent / "scripts" / f"block-{number}"
    if block.language == "python":
        script.write_text(block.text)
        argv = [sys.executable, str(script)]
    else:
        script.write_text(shell_script(block))
        argv = ["bash", "-euo", "pipefail", str(script)]
    log = script.with_suffix(".log")
    with log.open("wb") as out:  # a file, not a pipe: a process left behind keeps a pipe open
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        process.wait()
        pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT:.0f} s\n{tail(log)}")
    left = wait_group_empty(process.pid, deadline=linger)
    if left:
        kill_group(process.pid)
    if process.returncode != 0:
        pytest.fail(f"{block.where}: exit status {process.returncode}\n{tail(log)}")
    if left:
        pytest.fail(
            f"{block.where}: left processes running ({', '.join(left)}); a block stops "
            f"what it starts\n{tail(log)}"
        )


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(f"{entry.name} {stat[stat.index('(') + 1 : stat.rindex(')')]}")
    return members


def wait_group_empty(pgid: int, deadline: float) -> list[str]:
    end = time.monotonic() + deadline
    while True:
        members = group_members(pgid)
        if not members or time.monotonic() > end:
            return members
        time.sleep(0.1)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


# --- the runner itself -------------------------------------------------------------------


def synthetic(language: str, text: str) -> Block:
    return Block(Path("doc.md"), 7, language, "", False, text)


def test_a_failing_command_fails_the_block_with_its_output(
    checkout: Path, kms_endpoint: str
) -> None:
    env = reader_environment(checkout.parent / "home", kms_endpoint)
    made = synthetic("sh", "echo before\nfalse\necho after\n")
    with pytest.raises(pytest.fail.Exception, match=r"doc\.md:7: exit status 1\nbefore$"):
        run_block(made, 0, checkout, env)
    unset = synthetic("console", "$ echo $NO_SUCH_VARIABLE\n")
    with pytest.raises(pytest.fail.Exception, match="NO_SUCH_VARIABLE: unbound variable"):
        run_block(unset, 1, checkout, env)


def test_a_process_left_running_is_reported_and_stopped(checkout: Path, kms_endpoint: str) -> None:
    env = reader_environment(checkout.parent / "home", kms_endpoint)
    made = synthetic("sh", "sleep 300 &\necho $! > sleeper.pid\n")
    with pytest.raises(pytest.fail.Exception, match=r"left processes running \(\d+ sleep\)"):
        run_block(made, 0, checkout, env, linger=1.0)
    pid = int((checkout / "sleeper.pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed; its zombie is reaped by init
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_blocks_see_the_readers_environment(checkout: Path, kms_endpoint: str) -> None:
    env = reader_environment(checkout.parent / "home", kms_endpoint)
    made = synthetic(
        "python",
        "import os, shutil, sys\n"
        "print(shutil.which('attested'), sys.executable, os.environ['AWS_ENDPOINT_URL_KMS'])\n"
        "assert os.path.isfile('examples/demo/measurements.json')\n"
        "import boto3\n"
        "print(len(boto3.client('kms').list_keys()['Keys']) >= 0)\n",
    )
    run_block(made, 0, checkout, env)
    output = (checkout.parent / "scripts" / "block-0.log").read_text()
    assert str(Path(sys.executable).parent / "attested") in output
    assert kms_endpoint in output
