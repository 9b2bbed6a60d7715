"""AF_VSOCK: the same engine with another address family, where the kernel allows it.

These machines have /dev/vsock but usually no loopback transport, so a full chain over
vsock runs only where ``vsock:1:PORT`` (VMADDR_CID_LOCAL) accepts connections.
"""

from __future__ import annotations

import random
import socket
import time

import pytest

from attested.errors import RelayUnavailable
from attested.net import parse_address
from attested.relay import Allowlist, EnclaveEgress, Forward, ParentEgress, RelayOptions
from tests.relay.support import connect_through, loopback, recv_exactly

pytestmark = pytest.mark.integration

VMADDR_CID_LOCAL = 1


def _vsock_family() -> int:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        pytest.skip("this Python has no AF_VSOCK")
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
    except OSError as exc:
        pytest.skip(f"the kernel refuses AF_VSOCK sockets: {exc}")
    return int(family)


def _free_vsock_port(family: int) -> int:
    for _ in range(20):
        port = random.randint(40_000, 60_000)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((socket.VMADDR_CID_ANY, port))
            except OSError:
                continue
            return port
    pytest.skip("no free vsock port, or vsock bind is not allowed here")


def _loopback_works(family: int) -> bool:
    port = _free_vsock_port(family)
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((socket.VMADDR_CID_ANY, port))
        server.listen(1)
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(1.0)
            try:
                client.connect((VMADDR_CID_LOCAL, port))
            except OSError:
                return False
    return True


def test_a_relay_listens_on_vsock(relays, make_target) -> None:
    family = _vsock_family()
    port = _free_vsock_port(family)
    target = make_target()
    try:
        relay, (bound,) = relays(
            Forward(listen=parse_address(f"vsock:ANY:{port}"), to=target.address)
        )
    except RelayUnavailable as exc:
        pytest.skip(f"cannot listen on vsock here: {exc}")
    assert bound.kind == "vsock"
    assert bound.port == port
    assert relay.stats()["forward"].listen == bound


def test_an_unreachable_vsock_parent_gets_a_clear_error(relays) -> None:
    family = _vsock_family()
    port = _free_vsock_port(family)
    parent = parse_address(f"vsock:{VMADDR_CID_LOCAL}:{port}")  # nothing listens there
    _, (proxy,) = relays(
        EnclaveEgress(listen=loopback(), parent=parent),
        options=RelayOptions(connect_timeout=0.5),
    )
    start = time.monotonic()
    sock, status, head = connect_through(proxy, "kms.us-east-1.amazonaws.com:443")
    sock.close()
    assert status in (502, 504)
    assert f"cannot reach the parent relay at vsock:1:{port}".encode() in head
    assert time.monotonic() - start < 5


def test_the_egress_chain_over_vsock_loopback(relays, make_target) -> None:
    family = _vsock_family()
    if not _loopback_works(family):
        pytest.skip("no vsock loopback transport (vsock_loopback) on this kernel")
    target = make_target("echo")
    port = _free_vsock_port(family)
    relays(
        ParentEgress(
            listen=parse_address(f"vsock:ANY:{port}"),
            allowlist=Allowlist.of(("127.0.0.1", target.port)),
        )
    )
    _, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=parse_address(f"vsock:1:{port}")))
    sock, status, _ = connect_through(proxy, f"127.0.0.1:{target.port}")
    with sock:
        assert status == 200
        sock.sendall(b"over vsock")
        assert recv_exactly(sock, 10) == b"over vsock"
