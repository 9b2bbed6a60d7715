"""The emulator's HTTP edge against the security review's findings, over real sockets.

The same framing cases as the local API (the emulator answers them KMS-style, with
``__type``), drip-feeding clients cut off at the whole-request deadline, and refusals
(503 for overload, 413) that the client can read even when it sends its body late.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Callable

import pytest

from attested.emulator import EmulatorConfig, KmsEmulator
from tests.emulator.conftest import Enclave, client
from tests.emulator.rawhttp import post, sign
from tests.runtime.wire import FRAMING_CASES, Dripper, exchange, read_reply

pytestmark = pytest.mark.integration

# The emulator takes POST only: the cases that use GET are sent as POST, so that each
# one meets the check it is about rather than the method check.
CASES = [(name, raw.replace(b"GET ", b"POST ", 1), status) for name, raw, status in FRAMING_CASES]


def _tcp(emu: KmsEmulator) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        return socket.create_connection(emu.address, timeout=10)

    return connect


@pytest.mark.parametrize(("raw", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    emulator: KmsEmulator, raw: bytes, status: int
) -> None:
    before = emulator.request_count
    reply = exchange(_tcp(emulator), raw)
    assert reply.status == status
    assert reply.json()["__type"] == "SerializationException"
    assert reply.headers["content-type"] == "application/x-amz-json-1.1"
    assert reply.headers["x-amzn-requestid"]
    assert reply.closed, "the connection must be closed after a framing error"
    assert emulator.request_count == before + 1
    assert client(emulator.endpoint_url).generate_random(NumberOfBytes=8)["Plaintext"]


def test_other_methods_get_501_kms_style(emulator: KmsEmulator) -> None:
    reply = exchange(_tcp(emulator), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 501
    assert reply.json()["__type"] == "UnknownOperationException"
    assert reply.closed


def test_drip_feeding_clients_are_cut_off_and_cannot_hold_the_cap(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    # idle_timeout 2 s: the whole-request deadline is min(idle_timeout, 10 s) = 2 s.
    emu = start_emulator(
        EmulatorConfig(trust_root=enclave.kit.root, max_connections=3, idle_timeout=2.0)
    )
    drippers = [Dripper(_tcp(emu), interval=0.25, give_up=20.0).start() for _ in range(3)]
    time.sleep(0.5)  # every dripper holds a slot: the cap is full
    url = emu.endpoint_url
    body = b'{"NumberOfBytes": 16}'
    started = time.monotonic()
    served_after = None
    while time.monotonic() - started < 15:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, _ = post(url, body, sign(url, "GenerateRandom", body))
            if status == 200:
                served_after = time.monotonic() - started
                break
        time.sleep(0.2)
    for dripper in drippers:
        dripper.join(30)
    assert served_after is not None, "the cap stayed full of drippers"
    assert served_after < 12
    for dripper in drippers:
        assert dripper.error is None
        assert dripper.cut_after is not None, "a dripper was never cut off"
        assert 1.5 <= dripper.cut_after <= 12, dripper.cut_after


def test_a_refusal_for_overload_is_a_503_the_client_reads(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, max_connections=2))
    url = emu.endpoint_url
    body = b'{"NumberOfBytes": 16}'
    held = [http.client.HTTPConnection(*emu.address, timeout=10) for _ in range(2)]
    try:
        for connection in held:  # both slots taken by idle keep-alive connections
            status, _, _ = post(url, body, sign(url, "GenerateRandom", body), connection=connection)
            assert status == 200
        padded = b'{"NumberOfBytes": 16, "Pad": "' + b"x" * 4000 + b'"}'
        for _ in range(3):
            with _tcp(emu)() as sock:
                time.sleep(0.3)  # the server has decided about this connection by now
                headers = sign(url, "GenerateRandom", padded)
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: {emu.address[0]}\r\n{head}"
                    f"Content-Length: {len(padded)}\r\n\r\n".encode()
                    + padded
                )
                reply = read_reply(sock)
            assert reply.status == 503
            assert reply.json()["__type"] == "ServiceUnavailableException"
            assert reply.headers["retry-after"] == "1"
            assert reply.closed
    finally:
        for connection in held:
            connection.close()
    assert emu.stats().answers["ServiceUnavailableException"] == 3


def test_a_413_is_read_even_when_the_body_comes_late(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(EmulatorConfig(trust_root=enclave.kit.root, max_body_size=4096))
    body = b"x" * 70_000
    for _ in range(3):
        with _tcp(emu)() as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            time.sleep(0.3)  # a loaded client: the server has answered before the body
            sock.sendall(body)
            reply = read_reply(sock)
        assert reply.status == 413
        assert reply.json()["__type"] == "SerializationException"
        assert reply.closed
