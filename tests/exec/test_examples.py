"""examples/enclave/: the Dockerfile runs ``attested exec``, and the example app runs under it."""

from __future__ import annotations

import hashlib
import http.client
import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attested.cli import build_parser, main
from attested.net import parse_address
from tests.exec.support import (
    Emulator,
    EnclaveToml,
    b64,
    clean_env,
    exec_command,
    sink_lines,
    wait_for,
)

ENCLAVE = Path(__file__).resolve().parents[2] / "examples" / "enclave"


def test_the_dockerfile_runs_attested_exec_and_checks_the_config_at_build() -> None:
    lines = [line.strip() for line in (ENCLAVE / "Dockerfile").read_text().splitlines()]
    entrypoint = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT "))[11:])
    command = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    assert entrypoint[:2] == ["attested", "exec"]
    args = build_parser().parse_args([*entrypoint[1:], *command])
    assert args.config == Path("/etc/attested/enclave.toml")
    assert args.argv == ["--", "python3", "/app/app.py"]
    check = next(line for line in lines if line.startswith("RUN attested exec"))
    assert shlex.split(check)[1:] == [*entrypoint[:-1], "--check"]
    assert "iproute2" not in (ENCLAVE / "Dockerfile").read_text()  # lo is an ioctl now


def test_the_example_configuration_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--config", str(ENCLAVE / "enclave.toml"), "--check"]) == 0
    assert "valid (4 secret(s), 1 host(s), 1 ingress forward(s))" in capsys.readouterr().out


def test_the_example_app_says_it_listens_only_once_it_does() -> None:
    """Its "app listening" line is what readiness checks wait for (and the test below).

    On a port it cannot bind, it must fail without having said it listens: printed
    before the bind, the line raced the bind, and a client that trusted it was reset.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(ENCLAVE / "app.py")],
            env={"PATH": "/usr/bin:/bin", "APP_PORT": str(port), "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert "Address already in use" in done.stderr
    assert "app listening" not in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_the_example_app_runs_unmodified_under_exec(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    sink: tuple[str, Path],
) -> None:
    with socket.socket() as probe:  # a free port for the app
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = b"example-app-password"
    blob = emulator.encrypt(emulator.good, password, {"app": "billing"})
    toml = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=emulator.url,
        allowed_keys=[emulator.good],
        ship_to=sink[0],
        exec_settings={"app_name": "billing"},
        ingress=[{"listen": "tcp:127.0.0.1:0", "to": f"tcp:127.0.0.1:{port}"}],
    )
    toml.secrets.append(
        {"name": "db-password", "ciphertext": b64(blob), "key_id": emulator.good,
         "encryption_context": {"app": "billing"}, "env": "DB_PASSWORD",
         "file": str(secret_dir / "db-password")}
    )  # fmt: skip
    ready = short_dir / "ready.json"
    env = clean_env(
        APP_PORT=str(port), PYTHONUNBUFFERED="1", ATTESTED_API_SOCKET=str(short_dir / "api.sock")
    )
    command = exec_command(toml.write(), [sys.executable, str(ENCLAVE / "app.py")],
                           "--ready-file", str(ready))  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, "exec's ready file")
        ingress = parse_address(json.loads(ready.read_text())["listeners"]["ingress-0"])
        listening = f"app listening on 127.0.0.1:{port}"
        wait_for(lambda: listening in [x.get("message") for x in sink_lines(sink[1])], "the app")
        assert ingress.host is not None
        connection = http.client.HTTPConnection(ingress.host, ingress.port, timeout=30)
        connection.request("GET", "/")
        answer = json.loads(connection.getresponse().read())
        connection.close()
    finally:
        process.terminate()
        status = process.wait(60)
    assert len(answer["random"]) == 44  # 32 bytes, base64, from the local API
    fingerprint = hashlib.sha256(password).hexdigest()[:12]
    messages = [line.get("message") for line in sink_lines(sink[1])]
    assert f"database password loaded (sha256 {fingerprint}...)" in messages
    assert "request /" in messages
    assert status == 128 + 15  # the app (no handler) ended by the forwarded SIGTERM
