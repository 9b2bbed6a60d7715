"""Issue 18's "Done when", as written: ``attested connect`` against real processes.

* an attested ingress run by ``attested exec`` (``[[ingress]] tls = "attested"``) in
  front of ``python -m http.server``: exit 0 and the page;
* ``openssl s_server`` with a self-signed certificate: exit 1, "no attestation was bound";
* the same ingress with another PCR0 in ``--pcr``: exit 1, naming PCR0.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exec.support import EnclaveToml, clean_env, exec_command
from tests.tls.support import OTHER_PCR0, PAGE, PCR0, free_port, listening, self_signed, wait_for


def _connect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attested", "connect", *args],
        capture_output=True, text=True, timeout=120, env=clean_env(), check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exec_ingress(sim_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``attested exec`` running ``python -m http.server`` behind an attested ingress."""
    directory = tmp_path_factory.mktemp("exec")
    site = directory / "site"
    site.mkdir()
    (site / "index.html").write_bytes(PAGE)
    app_port = free_port()
    toml = EnclaveToml(
        directory=directory,
        state=sim_state,
        emulator_url="http://127.0.0.1:9",
        allowed_keys=["*"],
        pcr0=PCR0,
        ingress=[{"listen": "tcp:127.0.0.1:0", "to": f"tcp:127.0.0.1:{app_port}",
                  "tls": "attested"}],
    )  # fmt: skip
    ready = directory / "ready.json"
    app = [sys.executable, "-m", "http.server", str(app_port), "--bind", "127.0.0.1",
           "--directory", str(site)]  # fmt: skip
    process = subprocess.Popen(
        exec_command(toml.write(), app, "--ready-file", str(ready)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, "exec's ready file")
        assert process.poll() is None, "attested exec stopped"
        port = int(json.loads(ready.read_text())["listeners"]["ingress-0"].rsplit(":", 1)[1])
        wait_for(lambda: listening(app_port), "the app")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_connect_to_the_attested_ingress_exits_0_and_prints_the_page(
    exec_ingress: int, sim_state: Path
) -> None:
    done = _connect(
        f"https://127.0.0.1:{exec_ingress}/", "--root", str(sim_state / "root.pem"),
        "--pcr", f"0={PCR0.hex()}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == PAGE.decode()
    assert "VERIFIED" in done.stderr


def test_connect_with_a_fresh_nonce_exits_0(exec_ingress: int, sim_state: Path) -> None:
    done = _connect(
        f"https://127.0.0.1:{exec_ingress}/index.html", "--root", str(sim_state / "root.pem"),
        "--pcr", f"0={PCR0.hex()}", "--nonce",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == PAGE.decode()
    assert "fresh document with our nonce" in done.stderr


def test_connect_with_another_pcr0_exits_1_naming_pcr0(exec_ingress: int, sim_state: Path) -> None:
    done = _connect(
        f"https://127.0.0.1:{exec_ingress}/", "--root", str(sim_state / "root.pem"),
        "--pcr", f"0={OTHER_PCR0.hex()}",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert f"pcr0: expected {OTHER_PCR0.hex()}, got {PCR0.hex()}" in done.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_connect_to_openssl_s_server_exits_1_no_attestation_bound(
    tmp_path: Path, sim_state: Path
) -> None:
    cert, key = self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "cert.pem"),
         "-key", str(tmp_path / "key.pem"), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: listening(port) or server.poll() is not None, "openssl s_server")
        assert server.poll() is None, "openssl s_server did not start"
        done = _connect(
            f"https://127.0.0.1:{port}/", "--root", str(sim_state / "root.pem"),
            "--pcr", f"0={PCR0.hex()}",
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "no attestation document is bound to the certificate" in done.stderr


def test_connect_to_nothing_exits_3(sim_state: Path) -> None:
    done = _connect(f"https://127.0.0.1:{free_port()}/", "--root", str(sim_state / "root.pem"),
                    "--pcr", f"0={PCR0.hex()}")  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "cannot reach" in done.stderr


def test_connect_refuses_a_url_that_is_not_https() -> None:
    done = _connect("http://127.0.0.1:1/")
    assert done.returncode == 2


def test_the_relying_party_example_gets_the_page_and_refuses_another_image(
    exec_ingress: int, sim_state: Path
) -> None:
    example = Path(__file__).parents[2] / "examples" / "relying_party_tls.py"
    common = [f"https://127.0.0.1:{exec_ingress}/", "--trust-root", str(sim_state / "root.pem")]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(example), *common, *extra],
            capture_output=True, text=True, timeout=120, env=clean_env(), check=False,
        )  # fmt: skip

    good = run("--pcr", f"0={PCR0.hex()}", "--nonce")
    assert good.returncode == 0, good.stderr
    assert good.stdout == PAGE.decode()
    bad = run("--pcr", f"0={OTHER_PCR0.hex()}")
    assert bad.returncode == 1
    assert "pcr0" in bad.stderr
