"""Every long-running part is a ``Lifecycle``, and there is one parallel stop.

Each part is started for real on loopback: its listeners accept connections while it
runs, and refuse them once ``stop(deadline)`` has returned ``True``.
"""

from __future__ import annotations

import ast
import socket
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from attested._runtime.lifecycle import Lifecycle
from attested.emulator import EmulatorConfig, KmsEmulator
from attested.errors import CredentialsUnavailable
from attested.kms._credproto import AwsCredentials
from attested.kms.credentials import StaticCredentials
from attested.net import Address, parse_address
from attested.parent import CredentialServer, Parent, parse_parent_config
from attested.relay import Forward, Relay
from attested.service import Service, ServiceConfig
from attested.simulator import SimulatedNsm

pytestmark = pytest.mark.integration

ATTESTED = Path(__file__).parents[2] / "attested"
ARN = "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555"


def _credentials() -> AwsCredentials:
    return AwsCredentials(
        access_key_id="AKIAPARTSEXAMPLE0001",
        secret_access_key="parts-secret",
        expiration=datetime.now(UTC) + timedelta(hours=1),
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="att-parts-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def nsm(workdir: Path) -> Iterator[SimulatedNsm]:
    provider = SimulatedNsm(state_dir=workdir / "nsm")
    yield provider
    provider.close()


def _service(workdir: Path, nsm: SimulatedNsm) -> Service:
    config = ServiceConfig(
        api_unix=str(workdir / "api.sock"),
        api_tcp="tcp:127.0.0.1:0",
        kms_endpoint_url="http://127.0.0.1:9",  # never called here
        egress_listen="tcp:127.0.0.1:0",
        egress_parent="tcp:127.0.0.1:9",
        allowed_keys=(ARN,),
        credentials_source="environment",
    )
    credentials = StaticCredentials(access_key_id="AKIAPARTSEXAMPLE0001", secret_access_key="s")
    return Service(config, attestation=nsm, credentials=credentials)


def _parent(workdir: Path, nsm: SimulatedNsm) -> Parent:
    config = parse_parent_config(
        """
        [egress]
        listen = "tcp:127.0.0.1:0"
        allow = [{address = "kms.us-east-1.amazonaws.com", port = 443}]
        [credentials]
        listen = "tcp:127.0.0.1:0"
        [[ingress]]
        listen = "tcp:127.0.0.1:0"
        to = "tcp:127.0.0.1:9"
        allow_parent_target = true  # loopback TCP stands in for the enclave
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "enclave.log"
        """,
        base=workdir,
    )
    return Parent(config, credential_source=_credentials)


def _credential_server(workdir: Path, nsm: SimulatedNsm) -> CredentialServer:
    return CredentialServer("tcp:127.0.0.1:0", source=_credentials)


def _emulator(workdir: Path, nsm: SimulatedNsm) -> KmsEmulator:
    return KmsEmulator(EmulatorConfig(trust_root=nsm.trust_root))


def _relay(workdir: Path, nsm: SimulatedNsm) -> Any:
    forward = Forward(
        listen=parse_address("tcp:127.0.0.1:0"), to=parse_address("tcp:127.0.0.1:9"), name="in"
    )
    return Relay([forward])


PARTS: dict[str, tuple[Callable[[Path, SimulatedNsm], Any], set[str]]] = {
    "service": (_service, {"unix", "tcp", "egress"}),
    "parent": (_parent, {"egress", "credentials", "ingress-0", "logs"}),
    "credential server": (_credential_server, {"credentials"}),
    "emulator": (_emulator, {"kms"}),
    "relay": (_relay, {"in"}),
}


def running(part: Lifecycle) -> bool:
    return part.running  # read afresh each time (mypy would narrow an attribute)


def _connect(address: Address) -> None:
    if address.kind == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(address.path))
        return
    socket.create_connection((str(address.host), int(address.port or 0)), timeout=10).close()


@pytest.mark.parametrize("name", list(PARTS))
def test_the_part_is_a_lifecycle_and_starts_and_stops_on_loopback(
    name: str, workdir: Path, nsm: SimulatedNsm
) -> None:
    make, names = PARTS[name]
    part = make(workdir, nsm)
    assert isinstance(part, Lifecycle)
    assert not running(part)
    assert dict(part.listeners) == {}
    assert part.stop(1.0) is True  # before start: harmless
    part.start()
    try:
        assert running(part)
        bound = dict(part.listeners)
        assert set(bound) == names
        for address in bound.values():
            assert address.port != 0 or address.kind == "unix"  # the real port
            _connect(address)
    finally:
        stopped = part.stop(10.0)
    assert stopped is True
    assert not running(part)
    assert dict(part.listeners) == {}
    for address in bound.values():
        with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
            _connect(address)
    assert part.stop(1.0) is True  # again: harmless


def test_a_failed_start_leaves_nothing_running(workdir: Path, nsm: SimulatedNsm) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        parts: list[Lifecycle] = [
            CredentialServer(f"tcp:127.0.0.1:{port}", source=_credentials),
            KmsEmulator(EmulatorConfig(trust_root=nsm.trust_root, port=port)),
        ]
        for part in parts:
            with pytest.raises((CredentialsUnavailable, OSError), match="in use"):
                part.start()
            assert not part.running
            assert dict(part.listeners) == {}


# --- one parallel stop -------------------------------------------------------------------


def _parallel_stoppers(tree: ast.AST) -> list[str]:
    """Functions that start threads and stop other parts: a hand-made parallel stop.

    ``self.stop(...)`` (a part undoing its own failed start) is not a parallel stop.
    """
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        calls = [n.func for n in ast.walk(node) if isinstance(n, ast.Call)]
        names = {f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "") for f in calls}
        stops_others = any(
            isinstance(f, ast.Attribute)
            and f.attr == "stop"
            and not (isinstance(f.value, ast.Name) and f.value.id == "self")
            for f in calls
        )
        if stops_others and names & {"Thread", "ThreadPoolExecutor"}:
            found.append(node.name)
    return found


def test_stop_all_is_the_only_parallel_stop() -> None:
    found = {
        f"{path.relative_to(ATTESTED.parent)}:{name}"
        for path in sorted(ATTESTED.rglob("*.py"))
        for name in _parallel_stoppers(ast.parse(path.read_text(), str(path)))
    }
    assert found == {"attested/_runtime/lifecycle.py:stop_all"}


def test_the_check_finds_a_hand_made_parallel_stop() -> None:
    """The shape of the two copies that were replaced (service, parent)."""
    copy = (
        "def _close_all(self, deadline):\n"
        "    def stop(part):\n"
        "        part.stop(deadline)\n"
        "    threads = [threading.Thread(target=stop, args=(p,)) for p in self._parts]\n"
    )
    assert _parallel_stoppers(ast.parse(copy)) == ["_close_all"]
