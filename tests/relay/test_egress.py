"""Egress end to end on loopback: enclave-egress (CONNECT) -> parent-egress -> destination.

TCP on 127.0.0.1 stands in for vsock (same code, another address family). Names are
resolved by a StaticResolver, so "kms.relay.test" reaches 127.0.0.1 only through the
relay, and the client still verifies the certificate for that name.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import boto3
import pytest
from botocore.config import Config

from attested.errors import ConfigurationError, RelayUnavailable
from attested.net import Address, parse_address
from attested.relay import (
    Allowlist,
    EnclaveEgress,
    Failure,
    Forward,
    ParentEgress,
    Refusal,
    Relay,
    RelayOptions,
    Resolver,
    StaticResolver,
)
from attested.relay._tunnel import encode_request
from tests.relay.support import (
    TLS_NAME,
    closed_port,
    connect_through,
    loopback,
    read_head,
    recv_all,
    recv_exactly,
    tcp,
)

pytestmark = pytest.mark.integration


def chain(
    relays: Callable[..., tuple[Relay, tuple[Address, ...]]],
    allowlist: Allowlist,
    *,
    resolver: Resolver | None = None,
    enclave_options: RelayOptions | None = None,
    parent_options: RelayOptions | None = None,
) -> tuple[Relay, Relay, Address]:
    """Start a parent-egress and an enclave-egress pointing at it; return both and the proxy."""
    parent, (parent_addr,) = relays(
        ParentEgress(listen=loopback(), allowlist=allowlist),
        options=parent_options,
        resolver=resolver or StaticResolver({}),
    )
    enclave, (proxy,) = relays(
        EnclaveEgress(listen=loopback(), parent=parent_addr), options=enclave_options
    )
    return enclave, parent, proxy


def test_https_through_both_hops_verifies_the_host_name(relays, tls_server, relay_ca):
    port = tls_server.port
    allowlist = Allowlist.of((TLS_NAME, port), ("127.0.0.1", port))
    enclave, parent, proxy = chain(
        relays, allowlist, resolver=StaticResolver({TLS_NAME: ["127.0.0.1"]})
    )
    sock, status, _ = connect_through(proxy, f"{TLS_NAME}:{port}")
    assert status == 200
    with relay_ca.client_context().wrap_socket(sock, server_hostname=TLS_NAME) as tls:
        peer = tls.getpeercert()
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n\r\n".encode())
        response = recv_all(tls)
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(b"hello through the tunnel\n")
    assert ("DNS", TLS_NAME) in peer["subjectAltName"]
    stats = parent.stats()["parent-egress"]
    assert stats.bytes_up > 0
    assert stats.bytes_down > len(response)  # TLS records, not plaintext
    assert enclave.stats()["enclave-egress"].connections_total == 1


def test_the_client_still_refuses_a_certificate_for_another_name(relays, tls_server, relay_ca):
    port = tls_server.port
    other = "other.relay.test"
    allowlist = Allowlist.of((other, port), ("127.0.0.1", port))
    _, _, proxy = chain(relays, allowlist, resolver=StaticResolver({other: ["127.0.0.1"]}))
    sock, status, _ = connect_through(proxy, f"{other}:{port}")
    assert status == 200  # the relay allows it; TLS end to end is what refuses
    with pytest.raises(ssl.SSLCertVerificationError):
        relay_ca.client_context().wrap_socket(sock, server_hostname=other)
    sock.close()


def test_a_host_not_in_the_allowlist_gets_403_and_nothing_is_dialled(relays, make_target):
    target = make_target()
    allowlist = Allowlist.of(("listed.relay.test", target.port), ("127.0.0.1", target.port))
    enclave, parent, proxy = chain(
        relays,
        allowlist,
        resolver=StaticResolver({"unlisted.relay.test": ["127.0.0.1"]}),
    )
    for host in ("unlisted.relay.test", "127.0.0.2", "LISTED.relay.test.evil"):
        sock, status, head = connect_through(proxy, f"{host}:{target.port}")
        sock.close()
        assert status == 403
        assert b"X-Attested-Relay-Error: not_allowed" in head
        assert b"is not in the parent's allowlist" in head
    # the right name on another port is not listed either
    sock, status, _ = connect_through(proxy, f"listed.relay.test:{target.port + 1}")
    sock.close()
    assert status == 403
    assert target.accepts == 0
    assert parent.stats()["parent-egress"].refusals[Refusal.NOT_ALLOWED] == 4
    assert enclave.stats()["enclave-egress"].refusals[Refusal.NOT_ALLOWED] == 4


@pytest.mark.parametrize(
    "answer",
    ["127.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "0.0.0.0"],  # noqa: S104
)
def test_a_name_resolving_into_forbidden_ranges_is_refused(relays, make_target, answer):
    target = make_target()
    name = "rebind.relay.test"
    _, parent, proxy = chain(
        relays,
        Allowlist.of((name, target.port)),
        resolver=StaticResolver({name: [answer]}),
    )
    sock, status, head = connect_through(proxy, f"{name}:{target.port}")
    sock.close()
    assert status == 403
    assert b"X-Attested-Relay-Error: forbidden_address" in head
    assert b"list the address itself" in head
    assert target.accepts == 0
    assert parent.stats()["parent-egress"].refusals[Refusal.FORBIDDEN_ADDRESS] == 1


def test_a_listed_loopback_address_is_dialled_for_a_listed_name(relays, make_target):
    target = make_target()
    name = "local.relay.test"
    allowlist = Allowlist.of((name, target.port), ("127.0.0.1", target.port))
    _, _, proxy = chain(relays, allowlist, resolver=StaticResolver({name: ["127.0.0.1"]}))
    sock, status, _ = connect_through(proxy, f"{name}:{target.port}")
    with sock:
        assert status == 200
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
    assert target.accepts == 1


def test_every_address_is_tried_in_order(relays, make_target):
    target = make_target()  # listens on 127.0.0.1 only; 127.0.0.2 refuses
    name = "multi.relay.test"
    allowlist = Allowlist.of(
        (name, target.port), ("127.0.0.1", target.port), ("127.0.0.2", target.port)
    )
    resolver = StaticResolver({name: ["127.0.0.2", "127.0.0.1"]})
    _, _, proxy = chain(relays, allowlist, resolver=resolver)
    sock, status, _ = connect_through(proxy, f"{name}:{target.port}")
    with sock:
        assert status == 200
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"


def test_destination_failures_give_502_with_the_reason(relays, make_target):
    port = closed_port()
    allowlist = Allowlist.of(("nowhere.relay.test", port), ("127.0.0.1", port))
    _, parent, proxy = chain(relays, allowlist, resolver=StaticResolver({}))
    sock, status, head = connect_through(proxy, f"nowhere.relay.test:{port}")
    sock.close()
    assert status == 502
    assert b"X-Attested-Relay-Error: resolve_failed" in head
    sock, status, head = connect_through(proxy, f"127.0.0.1:{port}")
    sock.close()
    assert status == 502
    assert b"X-Attested-Relay-Error: connect_failed" in head
    assert b"Connection refused" in head
    failures = parent.stats()["parent-egress"].failures
    assert failures[Failure.RESOLVE] == 1
    assert failures[Failure.CONNECT] == 1


def test_parent_down_gives_502_with_a_clear_reason(relays):
    port = closed_port()
    enclave, (proxy,) = relays(
        EnclaveEgress(listen=loopback(), parent=parse_address(f"tcp:127.0.0.1:{port}"))
    )
    sock, status, head = connect_through(proxy, "kms.us-east-1.amazonaws.com:443")
    sock.close()
    assert status == 502
    assert b"X-Attested-Relay-Error: parent_unavailable" in head
    assert f"cannot reach the parent relay at tcp:127.0.0.1:{port}".encode() in head
    assert enclave.stats()["enclave-egress"].failures[Failure.CONNECT] == 1


def test_a_parent_that_is_not_a_tunnel_endpoint_is_named(relays, make_target):
    echo = make_target()  # what a raw forward (vsock-proxy, socat) to an echo server looks like
    _, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=echo.address))
    sock, status, head = connect_through(proxy, "kms.us-east-1.amazonaws.com:443")
    sock.close()
    assert status == 502
    assert b"X-Attested-Relay-Error: parent_protocol" in head
    assert b"does not speak the attested tunnel protocol" in head


def test_non_connect_methods_get_405(relays):
    _, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=loopback(closed_port())))
    with socket.create_connection(tcp(proxy)) as sock:
        sock.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        response = recv_all(sock)
    assert response.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: CONNECT\r\n" in response
    assert b"set HTTPS_PROXY (not HTTP_PROXY)" in response


def test_oversized_and_malformed_requests_are_refused(relays):
    enclave, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=loopback(closed_port())))
    with socket.create_connection(tcp(proxy)) as sock:
        sock.sendall(b"CONNECT a.test:443 HTTP/1.1\r\nX-Pad: " + b"a" * 9000)
        assert read_head(sock).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(tcp(proxy)) as sock:
        sock.sendall(b"CONNECT a.test HTTP/1.1\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 400 ")
    refusals = enclave.stats()["enclave-egress"].refusals
    assert refusals[Refusal.HEADER_TOO_LARGE] == 1
    assert refusals[Refusal.BAD_REQUEST] == 1


def test_a_client_that_sends_nothing_gets_408(relays):
    enclave, (proxy,) = relays(
        EnclaveEgress(listen=loopback(), parent=loopback(closed_port())),
        options=RelayOptions(handshake_timeout=0.3),
    )
    with socket.create_connection(tcp(proxy), timeout=5) as sock:
        sock.sendall(b"CONNECT a.te")
        assert read_head(sock).startswith(b"HTTP/1.1 408 ")
    assert enclave.stats()["enclave-egress"].failures[Failure.HANDSHAKE_TIMEOUT] == 1


def test_a_malformed_tunnel_header_gets_a_bad_request_reply(relays):
    parent, (address,) = relays(ParentEgress(listen=loopback(), allowlist=Allowlist.of()))
    with socket.create_connection(tcp(address)) as sock:
        sock.sendall(b"ATRQ\x02\x00\x01a\x01\xbb")
        reply = recv_all(sock)
    assert reply[:6] == b"ATRP\x01\x08"  # UNSUPPORTED_VERSION
    with socket.create_connection(tcp(address)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        reply = recv_all(sock)
    assert reply[:6] == b"ATRP\x01\x07"  # BAD_REQUEST
    assert parent.stats()["parent-egress"].refusals[Refusal.BAD_REQUEST] == 2


def test_half_close_crosses_both_hops(relays, make_target):
    target = make_target("count")
    allowlist = Allowlist.of(("127.0.0.1", target.port))
    _, _, proxy = chain(relays, allowlist)
    sock, status, _ = connect_through(proxy, f"127.0.0.1:{target.port}")
    with sock:
        assert status == 200
        sock.sendall(b"z" * 100_000)
        sock.shutdown(socket.SHUT_WR)  # the target answers only after it sees our EOF
        assert recv_all(sock) == b"got 100000"


def test_raw_forward_chain_carries_bytes_and_half_close(relays, make_target):
    target = make_target("count")
    _, (parent_in,) = relays(
        Forward(
            listen=loopback(),
            to=target.address,
            allowlist=Allowlist.of(("127.0.0.1", target.port)),
        )
    )
    _, (enclave_in,) = relays(Forward(listen=loopback(), to=parent_in))
    payload = bytes(range(256)) * 40_000  # 10 MB: past the splice threshold
    with socket.create_connection(tcp(enclave_in)) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == f"got {len(payload)}".encode()


@pytest.mark.parametrize("splice_after", [None, 0, 256 * 1024], ids=["recv_into", "splice", "both"])
def test_bulk_data_arrives_intact_both_ways(relays, make_target, monkeypatch, splice_after):
    spliced = [0]
    real_splice = os.splice

    def counting_splice(*args, **kwargs):
        spliced[0] += 1
        return real_splice(*args, **kwargs)

    monkeypatch.setattr(os, "splice", counting_splice)
    target = make_target("echo")
    options = RelayOptions(splice_after=splice_after)
    _, _, proxy = chain(
        relays,
        Allowlist.of(("127.0.0.1", target.port)),
        enclave_options=options,
        parent_options=options,
    )
    payload = bytes(i * 7 % 251 for i in range(8 * 1024 * 1024))
    sock, status, _ = connect_through(proxy, f"127.0.0.1:{target.port}")
    received = bytearray()

    def reader() -> None:
        while chunk := sock.recv(1 << 20):
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    thread.join(30)
    sock.close()
    assert status == 200
    assert bytes(received) == payload
    assert (spliced[0] > 0) == (splice_after is not None)


def test_unix_socket_listeners_are_cleaned_up(relays, make_target, tmp_path):
    target = make_target()
    path = tmp_path / "relay.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left behind by a dead process
    stale.close()
    relay, (bound,) = relays(Forward(listen=parse_address(f"unix:{path}"), to=target.address))
    assert bound.path == str(path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(b"unix")
        assert recv_exactly(sock, 4) == b"unix"
    with pytest.raises(RelayUnavailable, match="Address already in use"):
        Relay([Forward(listen=bound, to=target.address)]).start()
    relay.stop(1.0)
    assert not path.exists()


def test_guarded_forward_applies_the_dns_rules(relays, make_target):
    target = make_target()
    name = "fixed.relay.test"
    resolver = StaticResolver({name: ["127.0.0.1"]})
    to = parse_address(f"tcp:{name}:{target.port}")
    relay, (refusing,) = relays(
        Forward(listen=loopback(), to=to, allowlist=Allowlist.of((name, target.port))),
        resolver=resolver,
    )
    with socket.create_connection(tcp(refusing)) as sock:
        assert recv_all(sock) == b""  # closed: the name resolves to loopback, not listed
    assert target.accepts == 0
    assert relay.stats()["forward"].refusals[Refusal.FORBIDDEN_ADDRESS] == 1
    _, (allowed,) = relays(
        Forward(
            listen=loopback(),
            to=to,
            allowlist=Allowlist.of((name, target.port), ("127.0.0.1", target.port)),
        ),
        resolver=resolver,
    )
    with socket.create_connection(tcp(allowed)) as sock:
        sock.sendall(b"ok")
        assert recv_exactly(sock, 2) == b"ok"
    with pytest.raises(ConfigurationError, match="not in the allowlist"):
        Forward(listen=loopback(), to=to, allowlist=Allowlist.of(("other.test", 1)))


def test_connection_caps_refuse_clearly_instead_of_queueing(relays, make_target):
    target = make_target()
    allowlist = Allowlist.of(("127.0.0.1", target.port))
    enclave, parent, proxy = chain(
        relays,
        allowlist,
        enclave_options=RelayOptions(max_connections=3),
        parent_options=RelayOptions(max_connections=1),
    )
    first, status, _ = connect_through(proxy, f"127.0.0.1:{target.port}")
    assert status == 200
    second, status, head = connect_through(proxy, f"127.0.0.1:{target.port}")
    assert status == 503  # the parent is at its cap: answered at once, not queued
    assert b"parent-egress is at its cap of 1 connections" in head
    second.close()
    idle = [socket.create_connection(tcp(proxy)) for _ in range(2)]
    time.sleep(0.2)
    third, status, head = connect_through(proxy, f"127.0.0.1:{target.port}")
    assert status == 503
    assert b"enclave-egress is at its cap of 3 connections" in head
    for sock in [first, third, *idle]:
        sock.close()
    assert parent.stats()["parent-egress"].refusals[Refusal.BUSY] == 1
    assert enclave.stats()["enclave-egress"].refusals[Refusal.BUSY] == 2


def test_raw_forward_at_its_cap_closes_at_once(relays, make_target):
    target = make_target()
    relay, (entry,) = relays(
        Forward(listen=loopback(), to=target.address), options=RelayOptions(max_connections=1)
    )
    with socket.create_connection(tcp(entry)) as held:
        held.sendall(b"a")
        assert recv_exactly(held, 1) == b"a"
        with socket.create_connection(tcp(entry), timeout=5) as refused:
            assert refused.recv(10) == b""
    assert relay.stats()["forward"].refusals[Refusal.BUSY] == 1


def test_a_stalled_client_does_not_slow_the_others(relays, make_target):
    flood = make_target("flood")
    echo = make_target("echo")
    allowlist = Allowlist.of(("127.0.0.1", flood.port), ("127.0.0.1", echo.port))
    _, _, proxy = chain(relays, allowlist)
    stalled, status, _ = connect_through(proxy, f"127.0.0.1:{flood.port}")  # never reads
    assert status == 200
    slowloris = socket.create_connection(tcp(proxy))
    slowloris.sendall(b"CONNECT 127.0.0.1:")  # and never finishes its request
    time.sleep(0.5)  # the flood fills every buffer on the way
    sock, status, _ = connect_through(proxy, f"127.0.0.1:{echo.port}")
    assert status == 200
    worst = 0.0
    with sock:
        for i in range(200):
            message = f"round trip {i}".encode().ljust(1024, b".")
            start = time.perf_counter()
            sock.sendall(message)
            assert recv_exactly(sock, len(message)) == message
            worst = max(worst, time.perf_counter() - start)
    assert worst < 0.5
    assert flood.flooded < 64 * 1024 * 1024  # back-pressure: nothing buffers without bound
    stalled.close()
    slowloris.close()


def test_idle_tunnels_are_closed(relays, make_target):
    target = make_target()
    _, parent, proxy = chain(
        relays,
        Allowlist.of(("127.0.0.1", target.port)),
        parent_options=RelayOptions(idle_timeout=0.3),
    )
    sock, status, _ = connect_through(proxy, f"127.0.0.1:{target.port}")
    with sock:
        assert status == 200
        sock.settimeout(10)
        assert sock.recv(10) == b""  # the parent cut the idle tunnel; the enclave followed
    assert parent.stats()["parent-egress"].failures[Failure.IDLE_TIMEOUT] == 1


def test_stop_lets_open_tunnels_finish_then_cuts_at_the_deadline(relays, make_target):
    target = make_target()
    parent, (address,) = relays(
        ParentEgress(listen=loopback(), allowlist=Allowlist.of(("127.0.0.1", target.port)))
    )

    def open_tunnel() -> socket.socket:
        sock = socket.create_connection(tcp(address))
        sock.sendall(encode_request("127.0.0.1", target.port))
        assert recv_exactly(sock, 7) == b"ATRP\x01\x00\x00"
        return sock

    finishing = open_tunnel()
    lingering = open_tunnel()
    stopper = threading.Thread(target=parent.stop, kwargs={"deadline": 1.5})
    started = time.monotonic()
    stopper.start()
    time.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        socket.create_connection(tcp(address), timeout=2)
    finishing.sendall(b"still works")
    assert recv_exactly(finishing, 11) == b"still works"
    finishing.close()
    stopper.join(10)
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 5
    assert lingering.recv(10) == b""  # cut at the deadline
    lingering.close()
    stats = parent.stats()["parent-egress"]
    assert stats.failures[Failure.SHUTDOWN] == 1
    assert stats.connections_active == 0


def test_urllib_through_https_proxy_environment(relays, tls_server, relay_ca, monkeypatch):
    port = tls_server.port
    allowlist = Allowlist.of((TLS_NAME, port), ("127.0.0.1", port))
    _, _, proxy = chain(relays, allowlist, resolver=StaticResolver({TLS_NAME: ["127.0.0.1"]}))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    with urllib.request.urlopen(
        f"https://{TLS_NAME}:{port}/", context=relay_ca.client_context(), timeout=10
    ) as response:
        assert response.read() == b"hello through the tunnel\n"
    with pytest.raises(urllib.error.URLError, match="403"):
        urllib.request.urlopen(
            f"https://{TLS_NAME}:{port + 1}/", context=relay_ca.client_context(), timeout=10
        )


def test_boto3_kms_through_https_proxy_environment(relays, tls_server, relay_ca, monkeypatch):
    port = tls_server.port
    allowlist = Allowlist.of((TLS_NAME, port), ("127.0.0.1", port))
    _, parent, proxy = chain(relays, allowlist, resolver=StaticResolver({TLS_NAME: ["127.0.0.1"]}))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    kms = boto3.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=f"https://{TLS_NAME}:{port}",
        verify=str(relay_ca.ca_path),
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(retries={"max_attempts": 1}),
    )
    answer = kms.generate_random(NumberOfBytes=32)
    assert answer["Plaintext"] == bytes(range(32))
    assert tls_server.targets == ["TrentService.GenerateRandom"]
    assert parent.stats()["parent-egress"].connections_total == 1
