"""The deployment examples: the parent's file loads, units and scripts call real commands."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attested.cli import build_parser
from attested.parent import load_parent_config
from attested.service import load_config
from tests.images.dockerfile import instructions, resolve

EXAMPLES = Path(__file__).parents[2] / "examples"
ENCLAVE = EXAMPLES / "enclave"
SYSTEMD = EXAMPLES / "systemd"
ENTRYPOINT_VARIABLES = {"PARENT_CID": "3", "EGRESS_PORT": "8000", "APP_PORT": "8443"}


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name)
    return parser


def attested_commands_in_units() -> list[list[str]]:
    commands = []
    for path in sorted(SYSTEMD.glob("*.service")):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("Exec"):
                argv = shlex.split(value.lstrip("-+!@"))
                if Path(argv[0]).name == "attested":
                    commands.append(argv[1:])
    return commands


def attested_commands_in_entrypoint() -> list[list[str]]:
    commands = []
    for line in (ENCLAVE / "entrypoint.sh").read_text().splitlines():
        line = line.strip()
        if not line.startswith("attested "):
            continue
        for name, value in ENTRYPOINT_VARIABLES.items():
            line = line.replace("${" + name + "}", value)
        assert "$" not in line, f"unknown variable in {line!r}"
        commands.append(shlex.split(line.removesuffix("&"))[1:])
    return commands


def known_subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices or ())


def test_the_parent_example_is_valid_and_production_shaped() -> None:
    config = load_parent_config(EXAMPLES / "parent.toml")
    assert config.listener_names() == ("egress", "credentials", "ingress-0", "logs")
    assert config.egress is not None
    assert config.credentials is not None
    assert config.logs is not None
    for address in (config.egress.listen, config.credentials.listen, config.logs.listen):
        assert address is not None
        assert address.kind == "vsock"
    assert config.egress.allowlist.permits("kms.us-east-1.amazonaws.com", 443)
    assert config.credentials.source == "imds"
    # The enclave CID of the unit is the one the parent serves.
    exec_start = unit("nitro-enclave.service")["Service"]["ExecStart"]
    cid = int(re.findall(r"--enclave-cid (\d+)", exec_start)[0])
    assert config.credentials.allowed_peers == (cid,)
    assert [forward.to.cid for forward in config.ingress] == [cid]


def test_the_parent_unit_is_hardened_and_reloads_with_sighup() -> None:
    service = unit("attested-parent.service")["Service"]
    assert service["Type"] == "notify"  # run_part sends READY=1 once every listener is up
    assert service["WatchdogSec"].endswith("s")
    assert int(service["WatchdogSec"].removesuffix("s")) >= 10
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["DynamicUser"] == "yes"
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_VSOCK",
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
    }
    assert service["CapabilityBoundingSet"] == ""
    enclave = unit("nitro-enclave.service")["Unit"]
    assert "attested-parent.service" in enclave["After"].split()
    assert "attested-parent.service" in enclave["Requires"].split()


def test_unit_commands_parse_with_this_cli() -> None:
    commands = attested_commands_in_units()
    assert ["parent", "--config", "/etc/attested/parent.toml", "--check"] in commands
    for argv in commands:
        build_parser().parse_args(argv)  # exits (fails the test) on an unknown option


def test_entrypoint_commands_parse_with_this_cli() -> None:
    commands = attested_commands_in_entrypoint()
    assert [argv[0] for argv in commands] == ["relay", "serve", "relay"]
    for argv in commands:
        build_parser().parse_args(argv)


@pytest.mark.integration
def test_every_subcommand_used_answers_help() -> None:
    used = {
        tuple(argv[:2]) if argv[0] == "relay" else (argv[0],)
        for argv in attested_commands_in_units() + attested_commands_in_entrypoint()
    }
    assert {words[0] for words in used} <= known_subcommands()
    for words in sorted(used):
        done = subprocess.run(
            [sys.executable, "-m", "attested", *words, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "usage: attested " + " ".join(words) in done.stdout


def test_the_dockerfile_copies_what_is_there() -> None:
    lines = [
        line.strip()
        for line in (ENCLAVE / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    steps = instructions((ENCLAVE / "Dockerfile").read_text())
    args = dict(s.value.split("=", 1) for s in steps if s.keyword == "ARG" and "=" in s.value)
    base = resolve(next(s.value for s in steps if s.keyword == "FROM"), args)
    assert base.split("@")[0] in {"python:3.11-slim-bookworm", "amazonlinux:2023"}
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    for source, _ in copies:
        assert (ENCLAVE / source).is_file(), source
    destinations = {destination for _, destination in copies}
    assert "/etc/attested/enclave.toml" in destinations  # attested exec (tests/exec)
    assert (
        'ENTRYPOINT ["attested", "exec", "--config", "/etc/attested/enclave.toml", "--"]' in lines
    )
    # attested-nitro from the wheel in the build context (tests/images: the pins and hashes)
    assert any(
        s.keyword == "RUN" and "pip install" in s.value and "attested_nitro-*.whl" in s.value
        for s in steps
    )
    # attested-nitro is not on PyPI: the header says how to build its wheel here first
    assert (
        "python -m build --wheel --outdir examples/enclave" in (ENCLAVE / "Dockerfile").read_text()
    )


def test_the_entrypoint_is_valid_bash() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(ENCLAVE / "entrypoint.sh")], check=True, timeout=30)


@pytest.mark.integration
def test_the_loopback_fallback_brings_lo_up_in_a_fresh_network_namespace() -> None:
    """What an enclave boots with: ``lo`` down. Run the entrypoint's Python fallback there."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare")
    script = (ENCLAVE / "entrypoint.sh").read_text()
    fallback = script.split("python3 - <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    probe = (
        "import socket\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "socket.create_connection(server.getsockname(), timeout=2).close()\n"
        "print('loopback works')\n"
    )
    before = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", probe], capture_output=True, timeout=30, check=False
    )
    if b"Operation not permitted" in before.stderr or b"unshare failed" in before.stderr:
        pytest.skip("no user network namespaces here")
    assert before.returncode != 0  # lo is down in a new namespace
    after = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", fallback + "\n" + probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert after.stdout == "loopback works\n", after.stderr


def test_the_serve_example_loads_with_the_service_config() -> None:
    config = load_config(ENCLAVE / "serve.toml", {})
    assert config.credentials_source == "parent"
    assert config.credentials_parent == "vsock:3:8001"
    assert config.kms_proxy == "http://127.0.0.1:3128"
