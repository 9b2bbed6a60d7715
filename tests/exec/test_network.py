"""The enclave's network under ``attested exec``: egress, ``[[hosts]]``, ingress, ``lo``.

Real parts end to end, loopback TCP standing in for vsock: exec's in-process
enclave-egress relay -> a parent-egress relay with an allowlist -> the KMS emulator and
moto over HTTPS (a throwaway CA). The ``[[hosts]]`` tunnels go through the same parent
relay by name. ``lo`` is brought up inside a new network namespace (a user namespace
gives the capability without root); where none can be made, those tests are skipped.
"""

from __future__ import annotations

import json
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from werkzeug.serving import make_server

from attested.emulator import make_dev_tls
from attested.errors import ConfigurationError
from attested.exec import HostEntry
from attested.exec._net import HOSTS_BEGIN, HOSTS_END, write_hosts
from attested.net import parse_address
from attested.relay import Allowlist, Forward, ParentEgress, Relay, StaticResolver
from tests.exec.support import (
    REGION,
    Emulator,
    EnclaveToml,
    clean_env,
    exec_command,
    run_exec,
    start_emulator,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Https:
    emulator: Emulator
    moto_url: str
    ca: Path

    @property
    def ports(self) -> tuple[int, int]:
        return int(self.emulator.url.rsplit(":", 1)[1]), int(self.moto_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def https(sim_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    """The emulator (a process) and moto (a thread), both over HTTPS from one throwaway CA."""
    moto_server = pytest.importorskip("moto.server")
    directory = tmp_path_factory.mktemp("tls")
    tls = make_dev_tls(directory, ("127.0.0.1",))
    emulator = start_emulator(
        sim_state, directory / "emulator.log", "--tls-cert", str(tls.certificate),
        "--tls-key", str(tls.key), ca=str(tls.ca),
    )  # fmt: skip
    app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, ssl_context=(str(tls.certificate), str(tls.key)),
        request_handler=moto_server.MotoRequestHandler,
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Https(emulator, f"https://127.0.0.1:{server.server_port}", Path(tls.ca))
    finally:
        server.shutdown()
        thread.join(30)
        stop_process(emulator.process)


def parent_egress(*allowed: tuple[str, int], resolver: StaticResolver | None = None) -> Relay:
    relay = Relay(
        [ParentEgress(listen=parse_address("tcp:127.0.0.1:0"), allowlist=Allowlist.of(*allowed))],
        resolver=resolver,
    )
    relay.start()
    return relay


def egress_toml(https: Https, sim_state: Path, short_dir: Path, parent: Relay) -> EnclaveToml:
    toml = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=https.emulator.url,
        allowed_keys=[https.emulator.good],
        exec_settings={"secretsmanager_endpoint_url": https.moto_url},
        top={
            "kms": {"ca_bundle": str(https.ca)},
            "egress": {
                "listen": "tcp:127.0.0.1:0",
                "parent": str(parent.listeners["parent-egress"]),
            },
        },
    )
    blob = https.emulator.encrypt(https.emulator.good, b"through-both-relays", {})
    secrets = boto3.client(
        "secretsmanager", region_name=REGION, endpoint_url=https.moto_url, verify=str(https.ca),
        aws_access_key_id="AKIDMOTOADMIN", aws_secret_access_key="moto-admin-secret",
    )  # fmt: skip
    name = f"relayed-{short_dir.name}"
    secrets.create_secret(Name=name, SecretBinary=blob)
    toml.secrets.append(
        {"name": "relayed", "secretsmanager": name, "key_id": https.emulator.good,
         "env": "RELAYED"}
    )  # fmt: skip
    return toml


def test_secrets_manager_and_kms_are_reached_through_the_egress_relays(
    https: Https, sim_state: Path, short_dir: Path
) -> None:
    kms_port, moto_port = https.ports
    parent = parent_egress(("127.0.0.1", kms_port), ("127.0.0.1", moto_port))
    try:
        config = egress_toml(https, sim_state, short_dir, parent).write()
        run = run_exec(config, ["sh", "-c", 'echo "$RELAYED"; echo "proxy=$HTTPS_PROXY"'])
        stats = parent.stats().listeners[0]
    finally:
        parent.stop(5.0)
    assert run.status == 0, run.stderr
    lines = run.stdout.decode().splitlines()
    assert lines[0] == "through-both-relays"
    assert lines[1].startswith("proxy=http://127.0.0.1:")  # the app gets the egress proxy
    assert stats.connections_total >= 2  # Secrets Manager and KMS, through the parent


@pytest.mark.parametrize("blocked", ["secretsmanager", "kms"])
def test_egress_refused_by_the_parent_stops_start_up_naming_the_secret(
    https: Https, sim_state: Path, short_dir: Path, blocked: str
) -> None:
    kms_port, moto_port = https.ports
    allowed = ("127.0.0.1", kms_port) if blocked == "secretsmanager" else ("127.0.0.1", moto_port)
    parent = parent_egress(allowed)
    try:
        config = egress_toml(https, sim_state, short_dir, parent).write()
        marker = short_dir / "ran"
        run = run_exec(config, ["touch", str(marker)])
    finally:
        parent.stop(5.0)
    assert run.status == 3, run.stderr
    assert "secret 'relayed'" in run.stderr
    assert "tunnel" in run.stderr
    if blocked == "secretsmanager":  # the message names the host and port to allow
        assert f"allowlist lists 127.0.0.1:{moto_port}" in run.stderr
    assert not marker.exists()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"echo:" + self.request.recv(1024))


def test_hosts_entries_are_written_and_tunnelled_to_their_name_through_the_parent(
    sim_state: Path, short_dir: Path
) -> None:
    """A legacy app dials a name; [[hosts]] points it at a loopback forward that tunnels."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        port = echo.server_address[1]
        name = "echo.internal.test"
        parent = parent_egress(
            (name, port), ("127.0.0.1", port), resolver=StaticResolver({name: ["127.0.0.1"]})
        )
        hosts = short_dir / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n10.1.2.3\tkept.example\n")
        toml = EnclaveToml(
            directory=short_dir,
            state=sim_state,
            emulator_url="http://127.0.0.1:9",
            allowed_keys=["*"],
            hosts=[{"name": name, "address": "127.0.0.10", "ports": [port]}],
            top={"egress": {"parent": str(parent.listeners["parent-egress"])}},
        )
        ready, stop = short_dir / "ready.json", short_dir / "stop"
        process = subprocess.Popen(
            exec_command(toml.write(), ["sh", "-c", f"while [ ! -e {stop} ]; do sleep 0.1; done"],
                         "--ready-file", str(ready)),
            stderr=subprocess.PIPE,
            env=clean_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: ready.exists() or process.poll() is not None, "exec's ready file")
            listeners = json.loads(ready.read_text())["listeners"]
            assert listeners[f"{name}:{port}"] == f"tcp:127.0.0.10:{port}"
            with socket.create_connection(("127.0.0.10", port), timeout=30) as client:
                client.sendall(b"ping")
                answer = client.recv(1024)
            text = hosts.read_text()
        finally:
            stop.touch()
            status = process.wait(60)
            assert process.stderr is not None
            process.stderr.close()
            parent.stop(5.0)
            echo.shutdown()
    assert status == 0
    assert answer == b"echo:ping"
    assert f"{HOSTS_BEGIN}\n127.0.0.10\t{name}\n{HOSTS_END}" in text
    assert "10.1.2.3\tkept.example" in text


def test_the_hosts_block_is_replaced_not_repeated_and_localhost_is_added(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# image file\n10.0.0.1 db.internal\n")
    hosts.chmod(0o644)
    write_hosts(hosts, [HostEntry(name="a.example", address="127.0.0.10")])
    write_hosts(hosts, [HostEntry(name="b.example", address="127.0.0.11")])
    text = hosts.read_text()
    assert text.count(HOSTS_BEGIN) == 1
    assert "a.example" not in text
    assert "127.0.0.11\tb.example" in text
    assert "10.0.0.1 db.internal" in text
    assert "127.0.0.1\tlocalhost" in text
    assert hosts.stat().st_mode & 0o777 == 0o644


def test_ingress_forwards_from_the_parent_side_to_the_app(sim_state: Path, short_dir: Path) -> None:
    """[[ingress]]: the parent's forward arrives (tcp standing in for vsock) and reaches the app."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as app_server:
        threading.Thread(target=app_server.serve_forever, daemon=True).start()
        app_port = app_server.server_address[1]
        toml = EnclaveToml(
            directory=short_dir,
            state=sim_state,
            emulator_url="http://127.0.0.1:9",
            allowed_keys=["*"],
            ingress=[{"listen": "tcp:127.0.0.1:0", "to": f"tcp:127.0.0.1:{app_port}"}],
        )
        ready, stop = short_dir / "ready.json", short_dir / "stop"
        process = subprocess.Popen(
            exec_command(toml.write(), ["sh", "-c", f"while [ ! -e {stop} ]; do sleep 0.1; done"],
                         "--ready-file", str(ready)),
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: ready.exists() or process.poll() is not None, "exec's ready file")
            address = parse_address(json.loads(ready.read_text())["listeners"]["ingress-0"])
            assert address.host is not None
            assert address.port is not None
            with socket.create_connection((address.host, address.port), timeout=30) as client:
                client.sendall(b"hello")
                answer = client.recv(1024)
        finally:
            stop.touch()
            process.wait(60)
            app_server.shutdown()
    assert answer == b"echo:hello"


def _unshare(*extra: str) -> list[str] | None:
    if shutil.which("unshare") is None:
        return None
    command = ["unshare", "-rn", *extra]
    probe = subprocess.run([*command, "true"], capture_output=True, check=False)
    return command if probe.returncode == 0 else None


NETNS = _unshare()
NETNS_NO_CAP = (
    _unshare("setpriv", "--bounding-set", "-net_admin") if shutil.which("setpriv") else None
)
LO_STATE = "from attested.exec._net import loopback_state; print(loopback_state())"


@pytest.mark.skipif(NETNS is None, reason="cannot make a network namespace here")
def test_exec_brings_lo_up_in_a_fresh_network_namespace(sim_state: Path, short_dir: Path) -> None:
    """A new network namespace starts, like an enclave, with lo down and no 127.0.0.1."""
    assert NETNS is not None
    fresh = subprocess.run([*NETNS, sys.executable, "-c", LO_STATE], capture_output=True,
                           check=True)  # fmt: skip
    assert fresh.stdout.decode().strip() == "(False, None)"
    config = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url="http://127.0.0.1:9",
        allowed_keys=["*"],
        top={"api": {"tcp": "127.0.0.1:0"}},
    ).write()
    done = subprocess.run(
        [*NETNS, *exec_command(config, [sys.executable, "-c", LO_STATE])],
        capture_output=True, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "(True, '127.0.0.1')"
    assert "loopback interface lo is up with 127.0.0.1/8" in done.stderr.decode()


@pytest.mark.skipif(NETNS_NO_CAP is None, reason="cannot drop CAP_NET_ADMIN in a namespace here")
def test_without_cap_net_admin_a_down_lo_stops_start_up_with_status_3(
    sim_state: Path, short_dir: Path
) -> None:
    assert NETNS_NO_CAP is not None
    config = EnclaveToml(
        directory=short_dir, state=sim_state, emulator_url="http://127.0.0.1:9",
        allowed_keys=["*"],
    ).write()  # fmt: skip
    marker = short_dir / "ran"
    done = subprocess.run(
        [*NETNS_NO_CAP, *exec_command(config, ["touch", str(marker)])],
        capture_output=True, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "CAP_NET_ADMIN" in done.stderr.decode()
    assert not marker.exists()


def test_lo_already_up_needs_no_privilege(sim_state: Path, short_dir: Path) -> None:
    """On this machine lo is up: exec changes nothing and needs no capability for it."""
    config = EnclaveToml(
        directory=short_dir, state=sim_state, emulator_url="http://127.0.0.1:9",
        allowed_keys=["*"],
    ).write()  # fmt: skip
    run = run_exec(config, ["true"])
    assert run.status == 0, run.stderr
    assert "loopback interface lo is up" not in run.stderr


def test_a_tunnel_forward_checks_its_destination() -> None:
    """``Forward(tunnel_to=...)``, the relay role behind [[hosts]]."""
    listen, parent = parse_address("tcp:127.0.0.10:443"), parse_address("vsock:3:8000")
    forward = Forward(
        listen=listen, to=parent, tunnel_to=("DynamoDB.us-east-1.amazonaws.com.", 443)
    )
    assert forward.tunnel_to == ("dynamodb.us-east-1.amazonaws.com", 443)
    for bad in (("bad host", 443), ("a.example", 0), ("a.example", 70000)):
        with pytest.raises(ConfigurationError, match="tunnel destination"):
            Forward(listen=listen, to=parent, tunnel_to=bad)
    with pytest.raises(ConfigurationError, match="allowlist to the parent"):
        Forward(listen=listen, to=parent, tunnel_to=("a.example", 443),
                allowlist=Allowlist.of(("a.example", 443)))  # fmt: skip
