"""``[[egress.forward]]``: raw forwards under the egress allowlist, and TCP keepalive.

A raw forward carries an unmodified app's connection (it dials a name mapped to the
forward, with no proxy) to one destination. It must obey what the CONNECT path obeys:
the allowlist, the DNS rules and the forbidden-address table. Loopback TCP stands in for
vsock; ``hosts`` points the listed name at the loopback target.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from attested.cli import main
from attested.errors import ConfigError
from attested.parent import Parent, parse_parent_config
from attested.relay import Failure, Refusal
from tests.relay.support import Target, recv_exactly, tcp

pytestmark = pytest.mark.integration


def forward_file(port: int, *, listed: bool = True, extra: str = "") -> str:
    address = f'{{address = "127.0.0.1", port = {port}}}, ' if listed else ""
    return f"""
[egress]
allow = [{address}{{address = "db.example.test", port = {port}}}]
hosts = {{"db.example.test" = "127.0.0.1"}}

[[egress.forward]]
listen = "tcp:127.0.0.1:0"
to = "db.example.test:{port}"
{extra}
"""


def test_check_accepts_a_forward_and_names_its_listener(tmp_path: Path, capsys) -> None:
    path = tmp_path / "parent.toml"
    path.write_text(
        "[egress]\n"
        'listen = "vsock:ANY:8000"\n'
        'allow = [{address = "dynamodb.us-west-2.amazonaws.com", port = 443}]\n'
        "[[egress.forward]]\n"
        'listen = "vsock:ANY:8002"\n'
        'to = "dynamodb.us-west-2.amazonaws.com:443"\n'
        "keepalive = 30\n"
        "idle_timeout = 0\n"
    )
    assert main(["parent", "--config", str(path), "--check"]) == 0
    assert capsys.readouterr().out == (
        f"attested parent: {path}: valid (egress, egress-forward-0)\n"
    )
    config = parse_parent_config(path.read_text())
    assert config.egress is not None
    (forward,) = config.egress.forwards
    assert (forward.host, forward.port) == ("dynamodb.us-west-2.amazonaws.com", 443)
    assert forward.options.idle_timeout is None
    assert forward.options.keepalive == 30.0


def test_check_refuses_a_forward_the_allowlist_does_not_name(tmp_path: Path, capsys) -> None:
    path = tmp_path / "parent.toml"
    path.write_text(
        "[egress]\n"
        'allow = [{address = "kms.us-east-1.amazonaws.com", port = 443}]\n'
        "[[egress.forward]]\n"
        'listen = "vsock:ANY:8002"\n'
        'to = "dynamodb.us-west-2.amazonaws.com:443"\n'
        "[[egress.forward]]\n"
        'listen = "vsock:ANY:8003"\n'
        'to = "kms.us-east-1.amazonaws.com:8443"\n'
    )
    assert main(["parent", "--config", str(path), "--check"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"attested parent: {path}: egress.forward[0].to: forward destination "
        "tcp:dynamodb.us-west-2.amazonaws.com:443 is not in the allowlist",
        f"attested parent: {path}: egress.forward[1].to: forward destination "
        "tcp:kms.us-east-1.amazonaws.com:8443 is not in the allowlist",
    ]


@pytest.mark.parametrize(
    ("forward", "problem"),
    [
        (
            'listen = "tcp:127.0.0.1:0"',
            "egress.forward[0].to: required: the destination, 'HOST:PORT'",
        ),
        ('to = "a.test:443"', "egress.forward[0].listen: required"),
        ('listen = "tcp:127.0.0.1:0"\nto = "a.test"', "egress.forward[0].to: 'tcp:a.test'"),
        ('listen = "tcp:127.0.0.1:0"\nto = "a.test:0"', "egress.forward[0].to: a destination"),
        ('listen = "tcp:127.0.0.1:0"\nto = "*.test:443"', "egress.forward[0].to: "),
        ('listen = "tcp:127.0.0.1:0"\nto = 443', "egress.forward[0].to: must be a string"),
        ('listen = "tcp:127.0.0.1:0"\nto = "a.test:443"\nkeepalive = -1', "keepalive: must be 0"),
        ('listen = "tcp:127.0.0.1:0"\nto = "a.test:443"\nkeepalive = true', "keepalive: must be a"),
        ('listen = "tcp:127.0.0.1:0"\nto = "a.test:443"\nlisen = 1', "lisen: unknown key"),
    ],
)
def test_forward_problems_name_their_key(forward: str, problem: str) -> None:
    text = (
        f'[egress]\nallow = [{{address = "a.test", port = 443}}]\n[[egress.forward]]\n{forward}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_parent_config(text)
    assert any(p.startswith(problem) or problem in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_two_forwards_on_one_address_are_refused() -> None:
    text = (
        '[egress]\nlisten = "vsock:ANY:8000"\nallow = [{address = "a.test", port = 443}]\n'
        '[[egress.forward]]\nlisten = "vsock:ANY:8000"\nto = "a.test:443"\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_parent_config(text)
    assert caught.value.problems == (
        "egress.forward[0].listen: vsock:ANY:8000 is also egress.listen",
    )


def connect(parent: Parent, name: str) -> socket.socket:
    return socket.create_connection(tcp(parent.listeners[name]), timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_forward_carries_bytes_to_an_allowed_destination(
    run_parent: Callable[[str], Parent], make_target: Callable[..., Target]
) -> None:
    target = make_target("echo")
    parent = run_parent(forward_file(target.port))
    assert "egress" not in parent.listeners  # only the forward: no CONNECT listener
    with connect(parent, "egress-forward-0") as sock:
        sock.sendall(b"an unmodified client")
        assert recv_exactly(sock, 20) == b"an unmodified client"
    assert parent.stats()["egress-forward-0"].connections_total == 1


def test_a_forward_keeps_the_forbidden_address_rules(
    run_parent: Callable[[str], Parent], make_target: Callable[..., Target]
) -> None:
    """The name is listed, but it resolves to loopback, which is not: nothing is dialled."""
    target = make_target("echo")
    parent = run_parent(forward_file(target.port, listed=False))
    with connect(parent, "egress-forward-0") as sock:
        assert sock.recv(1) == b""  # closed without a byte from the destination
    wait_for(lambda: parent.stats()["egress-forward-0"].refusals[Refusal.FORBIDDEN_ADDRESS] == 1)
    assert target.accepts == 0


def _tcp_timer(local_port: int, remote_port: int) -> str | None:
    """The timer field of the established connection ``local_port`` -> ``remote_port``.

    Only the established one (state 01): a closed connection of an earlier test may still
    sit in TIME_WAIT (timer 03) on the same local port.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
        if ports == (local_port, remote_port) and state == "01":
            return fields[5].split(":")[0]  # 00 none, 01 retransmit, 02 keepalive, ...
    return None


class _Peers:
    """A loopback server that remembers the peer port of each accepted connection."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def accept(self) -> int:
        self.server.settimeout(10)
        sock, peer = self.server.accept()
        self.accepted.append(sock)
        return int(peer[1])

    def close(self) -> None:
        for sock in self.accepted:
            sock.close()
        self.server.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
@pytest.mark.parametrize(("keepalive", "timer"), [("", "02"), ("keepalive = 0", "00")])
def test_relayed_connections_use_tcp_keepalive(
    run_parent: Callable[[str], Parent], keepalive: str, timer: str
) -> None:
    """The socket the relay dials keeps a keepalive timer (02) while idle, unless 0."""
    peers = _Peers()
    try:
        parent = run_parent(forward_file(peers.port, extra=keepalive))
        with connect(parent, "egress-forward-0"):
            dialled_from = peers.accept()
            wait_for(lambda: _tcp_timer(dialled_from, peers.port) is not None)
            assert _tcp_timer(dialled_from, peers.port) == timer
    finally:
        peers.close()


def test_an_idle_forward_is_cut_only_with_an_idle_timeout(
    run_parent: Callable[[str], Parent], make_target: Callable[..., Target]
) -> None:
    target = make_target("echo")
    parent = run_parent(forward_file(target.port, extra="idle_timeout = 0.4"))
    with connect(parent, "egress-forward-0") as sock:
        wait_for(lambda: sock.recv(1) == b"")
    wait_for(lambda: parent.stats()["egress-forward-0"].failures[Failure.IDLE_TIMEOUT] == 1)
