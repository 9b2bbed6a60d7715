"""One CLI voice: every subcommand keeps the exit-status table and says a failure in one line.

The subcommands are walked from the argparse tree, so a new one cannot be skipped: each
must have a row in ``CASES`` (or the test fails, naming it). For each, four situations
(ADR 0075):

* a usage error (an unknown option): exit 2;
* a missing input file: exit 3;
* a malformed input file: exit 2;
* a reader that goes away (stdout a pipe whose reading end is closed): the exit status
  is the one the command has with a reader, and nothing is said about the pipe.

In the first three, stderr is exactly one line, ``attested COMMAND: ...``, with no
traceback and no log line before it, and with ``--json`` the same message is on stdout
as ``{"error": {"code": ..., "message": ...}}``. Usage, missing and malformed run in
process (fast, and what the process would print); the broken pipes run as processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from attested.cli import build_parser, main, parsers
from attested.simulator import SimulatedNsm
from tests.kit import VECTORS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MARLIN = str(VECTORS / "attestation" / "real_attestation_marlin.cbor")
EIF = str(VECTORS / "eif" / "synthetic_eif_unsigned.eif")
CMS_KEY = str(VECTORS / "cms" / "kms_recipient_edgebit_key.pem")
CMS_BLOB = str(VECTORS / "cms" / "kms_recipient_edgebit.der")
POLICY = str(ROOT / "policies" / "generated" / "decrypt-pcr0-pcr8.json")
ACCOUNT = ["--account", "111122223333"]
ROLES = [
    "--enclave-role",
    "arn:aws:iam::111122223333:role/enclave-parent",
    "--admin-role",
    "arn:aws:iam::111122223333:role/KeyAdmin",
]
PCR0 = "0=" + "5e" * 48
CLOSED = "https://127.0.0.1:9/"  # the discard port: nothing listens there in tests
NA = "n/a"  # with the reason after it: the command reads no such input


@dataclass(frozen=True)
class Cases:
    """One subcommand's arguments for each situation.

    ``{missing}`` is a path that does not exist, ``{bad}`` a file of garbage, ``{tmp}`` a
    fresh directory, ``{sim}`` a simulated NSM's state directory. A string starting with
    ``n/a`` says why the situation does not apply. ``pipe`` is run with stdout a broken
    pipe; ``daemon``: the command serves until SIGTERM (it gets ``--ready-file``).
    """

    missing: list[str] | str
    malformed: list[str] | str
    pipe: list[str]
    daemon: bool = False


CASES: dict[str, Cases] = {
    "verify": Cases(
        missing=["verify", "{missing}"],
        malformed=["verify", "{bad}", "--json"],
        pipe=["verify", MARLIN, "--pcr", PCR0],  # not verified: exit 1, piped or not
    ),
    "inspect": Cases(
        missing=["inspect", "{missing}"],
        malformed=["inspect", "{bad}", "--json"],
        pipe=["inspect", MARLIN],
    ),
    "demo": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        pipe=["demo", "--offline"],
    ),
    "simulate attest": Cases(
        missing=[
            "simulate",
            "attest",
            "--state",
            "{sim}",
            "--out",
            "{tmp}/d",
            "--public-key-file",
            "{missing}",
        ],
        malformed=["simulate", "attest", "--state", "{badsim}", "--out", "{tmp}/d"],
        pipe=["simulate", "attest", "--state", "{sim}", "--out", "-"],
    ),
    "emulator kms": Cases(
        missing=["emulator", "kms", "--simulated-state", "{sim}", "--identities", "{missing}"],
        malformed=["emulator", "kms", "--trust-root", "{bad}"],
        pipe=["emulator", "kms", "--simulated-state", "{sim}"],
        daemon=True,
    ),
    "cms decrypt": Cases(
        missing=["cms", "decrypt", "--key", CMS_KEY, "{missing}"],
        malformed=["cms", "decrypt", "--key", CMS_KEY, "{bad}"],
        pipe=["cms", "decrypt", "--key", CMS_KEY, CMS_BLOB],
    ),
    "eif describe": Cases(
        missing=["eif", "describe", "{missing}"],
        malformed=["eif", "describe", "{bad}", "--json"],
        pipe=["eif", "describe", EIF],
    ),
    "eif compare": Cases(
        missing=["eif", "compare", "{missing}", EIF],
        malformed=["eif", "compare", EIF, "{bad}", "--json"],
        pipe=["eif", "compare", EIF, EIF],
    ),
    "connect": Cases(
        missing=["connect", CLOSED, "--pcr", PCR0, "--root", "{missing}"],
        malformed=["connect", CLOSED, "--pcr", PCR0, "--root", "{bad}"],
        pipe=["connect", CLOSED, "--pcr", PCR0, "--timeout", "5"],  # exit 3, piped or not
    ),
    "pcr": Cases(
        missing=["pcr", "--input", "{missing}"],
        malformed=["pcr", "--signing-cert", "{bad}"],
        pipe=["pcr", "--string", "hello"],
    ),
    "keypolicy generate": Cases(
        missing=["keypolicy", "generate", *ACCOUNT, *ROLES, "--measurements", "{missing}"],
        malformed=["keypolicy", "generate", *ACCOUNT, *ROLES, "--eif", "{bad}"],
        pipe=["keypolicy", "generate", *ACCOUNT, *ROLES, "--pcr", PCR0],
    ),
    "keypolicy audit": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        # Nothing listens there: the keys cannot be listed, exit 3 piped or not.
        pipe=[
            "keypolicy",
            "audit",
            "--region",
            "us-east-1",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--max-attempts",
            "1",
        ],
    ),
    "keypolicy lint": Cases(
        missing=["keypolicy", "lint", "{missing}"],
        malformed=["keypolicy", "lint", "{bad}", "--json"],
        pipe=["keypolicy", "lint", POLICY],
    ),
    "relay enclave-egress": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        pipe=["relay", "enclave-egress", "--forward", "tcp:127.0.0.1:0=tcp:127.0.0.1:9"],
        daemon=True,
    ),
    "relay parent-egress": Cases(
        missing=[
            "relay",
            "parent-egress",
            "--listen",
            "tcp:127.0.0.1:0",
            "--allowlist",
            "{missing}",
        ],
        malformed=["relay", "parent-egress", "--listen", "tcp:127.0.0.1:0", "--allowlist", "{bad}"],
        pipe=["relay", "parent-egress", "--forward", "tcp:127.0.0.1:0=tcp:127.0.0.1:9"],
        daemon=True,
    ),
    "relay ingress": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        pipe=["relay", "ingress", "--listen", "tcp:127.0.0.1:0", "--to", "tcp:127.0.0.1:9"],
        daemon=True,
    ),
    "relay logs": Cases(
        missing=["relay", "logs", "--listen", "tcp:127.0.0.1:0", "--out", "{missing}/x.log"],
        malformed=f"{NA}: reads no file",
        pipe=["relay", "logs", "--listen", "tcp:127.0.0.1:0", "--out", "-"],
        daemon=True,
    ),
    "serve": Cases(
        missing=["serve", "--config", "{missing}"],
        malformed=["serve", "--config", "{bad}"],
        pipe=["serve", "--config", "{serve_toml}"],
        daemon=True,
    ),
    "exec": Cases(
        missing=["exec", "--config", "{missing}", "--check"],
        malformed=["exec", "--config", "{bad}", "--check"],
        pipe=["exec", "--config", "{serve_toml}", "--check"],
    ),
    "parent": Cases(
        missing=["parent", "--config", "{missing}"],
        malformed=["parent", "--config", "{bad}"],
        pipe=["parent", "--config", str(ROOT / "examples" / "parent.toml"), "--check"],
    ),
    "docs": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        pipe=["docs", "service"],
    ),
    "completion": Cases(
        missing=f"{NA}: reads no file",
        malformed=f"{NA}: reads no file",
        pipe=["completion", "bash"],
    ),
}


def leaves() -> dict[str, list[str]]:
    """Every runnable subcommand, by name (``keypolicy lint``), from the parser."""
    found = {}
    for parser in parsers(build_parser()):
        words = parser.prog.split()[1:]
        if words and parser.get_default("handler") is not None:
            found[" ".join(words)] = words
    return found


def test_every_subcommand_has_its_cases() -> None:
    assert sorted(leaves()) == sorted(CASES), "add the new subcommand to CASES"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("voice")
    (base / "bad").write_bytes(b"\x00\xffnot what any command reads\n[[[\n")
    sim = base / "sim"
    SimulatedNsm(state_dir=sim).close()
    badsim = base / "badsim"
    badsim.mkdir(mode=0o700)
    for name in ("root.pem", "root-key.pem"):
        (badsim / name).write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
        (badsim / name).chmod(0o600)
    serve = base / "serve.toml"
    serve.write_text(
        f'[api]\nunix = "{base}/api.sock"\n[nsm]\nbackend = "simulated"\n'
        f'simulated_state = "{sim}"\n[kms]\nallowed_keys = ["*"]\n'
        '[credentials]\nsource = "parent"\nparent = "tcp:127.0.0.1:9"\n'
    )
    return {
        "missing": str(base / "no-such-file"),
        "bad": str(base / "bad"),
        "sim": str(sim),
        "badsim": str(badsim),
        "serve_toml": str(serve),
        "tmp": str(base),
    }


def fill(argv: list[str], files: dict[str, str], tmp: Path) -> list[str]:
    values = {**files, "tmp": str(tmp)}
    return [arg.format(**values) if "{" in arg else arg for arg in argv]


def assert_one_line(command: str, err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"attested {command}: "), lines[0]
    return lines[0].removeprefix(f"attested {command}: ")


def assert_json_error(out: str, message: str, code: str) -> None:
    assert json.loads(out) == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_usage_error_exits_2_in_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    words = leaves()[command]
    assert main([*words, "--no-such-option"]) == 2
    out, err = capsys.readouterr()
    message = assert_one_line(command, err)
    assert message.endswith(f" (see: attested {command} --help)")
    assert out == ""
    if any("--json" in a.option_strings for a in _parser(command)._actions):
        assert main([*words, "--json", "--no-such-option"]) == 2
        out, err = capsys.readouterr()
        assert_json_error(out, assert_one_line(command, err), "usage")


def _parser(command: str) -> argparse.ArgumentParser:
    return next(p for p in parsers(build_parser()) if p.prog == f"attested {command}")


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_missing_file_exits_3_in_one_line(
    command: str, files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = CASES[command].missing
    if isinstance(argv, str):
        pytest.skip(argv)
    assert main(fill(argv, files, tmp_path)) == 3
    out, err = capsys.readouterr()
    message = assert_one_line(command, err)
    assert "no-such-file" in message
    assert out == ""


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_malformed_input_exits_2_in_one_line(
    command: str, files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = CASES[command].malformed
    if isinstance(argv, str):
        pytest.skip(argv)
    argv = fill(argv, files, tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    message = assert_one_line(command, err)
    if "--json" in argv:
        assert_json_error(out, message, "invalid_input")
    else:
        assert out == ""


def run_piped(argv: list[str], *, daemon: bool, tmp: Path) -> tuple[int, str]:
    """Run ``attested ARGV`` with stdout a pipe whose reading end is already closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    ready = tmp / f"ready-{time.monotonic_ns()}.json"
    extra = ["--ready-file", str(ready)] if daemon else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "attested", *argv, *extra],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp,
        )
    finally:
        os.close(write_end)
    try:
        if daemon:
            deadline = time.monotonic() + 60
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err.decode(errors="replace")


def test_a_reader_that_goes_away_changes_nothing(
    files: dict[str, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    runs: list[tuple[str, list[str], bool, int]] = []
    for command, cases in sorted(CASES.items()):
        argv = fill(cases.pipe, files, tmp_path)
        # With a reader: a daemon stopped by SIGTERM exits 0; the others, as in process.
        status = 0 if cases.daemon else main(argv)
        capsysbinary.readouterr()
        runs.append((command, argv, cases.daemon, status))
    runs += [("--help", ["--help"], False, 0), ("verify --help", ["verify", "--help"], False, 0)]

    def broken(run: tuple[str, list[str], bool, int]) -> tuple[str, int, int, str]:
        name, argv, daemon, status = run
        return name, status, *run_piped(argv, daemon=daemon, tmp=tmp_path)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(broken, runs))
    for name, status, broken_status, err in results:
        assert broken_status == status, f"{name}: {status} with a reader, {broken_status}\n{err}"
        for word in ("Traceback", "BrokenPipe", "Broken pipe", "Exception ignored"):
            assert word not in err, f"{name}: {err}"
    statuses = {name: status for name, status, _, _ in results}
    assert statuses["verify"] == 1  # not verified stays not verified
    assert statuses["demo"] == statuses["docs"] == 0
