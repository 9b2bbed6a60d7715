"""A Relay is a part like the others: start all or nothing, stop(deadline), running, listeners."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from attested._runtime.lifecycle import Lifecycle
from attested.errors import AttestedError
from attested.net import Address, parse_address
from attested.relay import Forward, LogSink, Relay, RelayUnavailable

pytestmark = pytest.mark.integration

ANY_PORT = parse_address("tcp:127.0.0.1:0")


def _refused(address: Address) -> bool:
    try:
        with socket.create_connection((str(address.host), int(address.port or 0)), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def _state(part: Lifecycle) -> tuple[bool, dict[str, Address]]:
    return part.running, dict(part.listeners)


def test_a_relay_is_a_lifecycle_part_on_real_loopback(make_target, tmp_path: Path) -> None:
    target = make_target("echo")
    relay = Relay(
        [
            Forward(listen=ANY_PORT, to=target.address, name="in"),
            LogSink(listen=ANY_PORT, out=tmp_path / "logs.jsonl", name="logs"),
        ]
    )
    part: Lifecycle = relay  # mypy checks the protocol statically, isinstance at run time
    assert isinstance(part, Lifecycle)
    assert _state(part) == (False, {})
    try:
        bound = relay.start()  # the addresses in role order, for callers that still use them
        assert _state(part) == (True, {"in": bound[0], "logs": bound[1]})
        assert all(address.port for address in bound)
        with socket.create_connection(("127.0.0.1", int(bound[0].port or 0)), timeout=10) as conn:
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
    finally:
        assert part.stop(5.0)
    assert _state(part) == (False, {})
    assert _refused(bound[0])
    assert part.stop(5.0)  # twice is harmless


def test_stop_before_start_is_harmless() -> None:
    relay = Relay([Forward(listen=ANY_PORT, to=parse_address("tcp:127.0.0.1:9"))])
    assert relay.stop(1.0)
    assert not relay.running
    assert relay.listeners == {}


def test_start_binds_all_or_nothing(make_target, tmp_path: Path) -> None:
    target = make_target("echo")
    busy = socket.create_server(("127.0.0.1", 0))
    path = tmp_path / "in.sock"
    try:
        taken = parse_address(f"tcp:127.0.0.1:{busy.getsockname()[1]}")
        relay = Relay(
            [
                Forward(listen=parse_address(f"unix:{path}"), to=target.address, name="a"),
                Forward(listen=taken, to=target.address, name="b"),
            ]
        )
        with pytest.raises(RelayUnavailable) as info:
            relay.start()
        assert isinstance(info.value, AttestedError)
        assert str(taken) in str(info.value)
        assert not path.exists()  # the first listener was closed and its file removed
        assert not relay.running
        assert relay.listeners == {}
    finally:
        busy.close()


def test_a_log_sink_that_cannot_open_its_file_leaves_no_socket_file(tmp_path: Path) -> None:
    path = tmp_path / "logs.sock"
    relay = Relay(
        [LogSink(listen=parse_address(f"unix:{path}"), out=tmp_path / "missing" / "logs.jsonl")]
    )
    with pytest.raises(RelayUnavailable, match="cannot open"):
        relay.start()
    assert not path.exists()
    assert relay.listeners == {}
    assert relay.stop(1.0)


@pytest.mark.parametrize("kind", ["forward", "logs"])
def test_a_connection_accepted_as_the_relay_stops_is_closed_not_leaked(
    kind: str, tmp_path: Path
) -> None:
    """An accepted connection whose handler had not started when stop cancelled it.

    Under load the accept and the stop can fall in the same loop iteration: the handler's
    task is cancelled before its first step, so its own clean-up never runs. The socket
    must still be closed (not left to the garbage collector's ResourceWarning) and the
    connection counted as gone.
    """
    role = (
        Forward(listen=ANY_PORT, to=parse_address("tcp:127.0.0.1:9"), name="relay")
        if kind == "forward"
        else LogSink(listen=ANY_PORT, out=tmp_path / "logs.jsonl", name="relay")
    )
    relay = Relay([role])
    relay.start()
    accepted, peer = socket.socketpair()
    try:
        loop = relay._loop
        assert loop is not None
        listener = relay._listeners[0]

        async def admit_then_stop() -> None:
            relay._admit(listener, accepted)  # the task exists; it has not run a step
            await relay._shutdown(0.0)

        asyncio.run_coroutine_threadsafe(admit_then_stop(), loop).result(30)
        assert accepted.fileno() == -1, "the accepted socket was left open"
        assert listener.counters.active == 0
    finally:
        relay.stop(5.0)
        peer.close()
        accepted.close()
