"""The local API's HTTP layer against the security review's findings, over real sockets.

Each test drives a real ``Service`` (simulated NSM, the KMS emulator) through its Unix
socket with raw bytes: conflicting framing is refused with 400/505 and the connection
closed; drip-feeding clients are cut off at the whole-request deadline and cannot hold
the connection cap; a refusal for overload and a 413 are answers the client can read; a
client that goes away early costs one DEBUG line and prints nothing on stderr.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested.kms.credentials import StaticCredentials
from attested.service import ERROR_CODES, Service
from tests.runtime.wire import FRAMING_CASES, Dripper, exchange, read_reply
from tests.service.conftest import Emu, StartService, service_config
from tests.service.helpers import ACCESS_KEY, SECRET, ApiClient

pytestmark = pytest.mark.integration


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


@pytest.fixture(scope="module")
def api_socket(emu: Emu, sim_state: Path) -> Iterator[str]:
    """One service for the framing cases (they do not change it)."""
    directory = Path(tempfile.mkdtemp(prefix="att-hard-", dir="/tmp"))
    service = Service(
        service_config(emu, sim_state, directory),
        credentials=StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET),
    )
    service.start()
    try:
        yield str(service.listeners["unix"].path)
    finally:
        service.stop(deadline=5.0)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("raw", "status"), [c[1:] for c in FRAMING_CASES], ids=[c[0] for c in FRAMING_CASES]
)
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    api_socket: str, raw: bytes, status: int
) -> None:
    reply = exchange(lambda: _unix(api_socket), raw)
    assert reply.status == status
    code = reply.json()["error"]
    assert ERROR_CODES[code][0] == status
    assert reply.headers["connection"] == "close"
    assert reply.closed, "the connection must be closed after a framing error"


def test_the_service_still_answers_after_refusals(api_socket: str) -> None:
    for _, raw, _ in FRAMING_CASES:
        exchange(lambda: _unix(api_socket), raw)
    with ApiClient(api_socket) as client:
        assert client.get("/v1/health").status == 200


def test_drip_feeding_clients_are_cut_off_and_cannot_hold_the_cap(
    start_service: StartService,
) -> None:
    # idle_timeout 2 s: the whole-request deadline is min(idle_timeout, 10 s) = 2 s.
    service = start_service(max_connections=3, idle_timeout=2.0)
    path = str(service.listeners["unix"].path)
    drippers = [Dripper(lambda: _unix(path), interval=0.25, give_up=20.0).start() for _ in range(3)]
    time.sleep(0.5)  # every dripper holds a slot: the cap is full
    started = time.monotonic()
    served_after = None
    while time.monotonic() - started < 15:
        with _unix(path) as sock, contextlib.suppress(OSError, http.client.HTTPException):
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            if read_reply(sock).status == 200:
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


def test_a_refusal_for_overload_is_a_503_the_client_reads(start_service: StartService) -> None:
    service = start_service(max_connections=2)
    path = str(service.listeners["unix"].path)
    held = [ApiClient(path) for _ in range(2)]
    try:
        for client in held:  # both slots taken by idle keep-alive connections
            assert client.get("/v1/health").status == 200
        for _ in range(3):
            with _unix(path) as sock:
                time.sleep(0.3)  # the server has decided about this connection by now
                body = json.dumps({"number_of_bytes": 16, "pad": "x" * 4000}).encode()
                sock.sendall(
                    b"POST /v1/generate-random HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
                reply = read_reply(sock)
            assert reply.status == 503
            assert reply.json()["error"] == "overloaded"
            assert reply.headers["retry-after"] == "1"
            assert reply.closed
    finally:
        for client in held:
            client.close()


def test_a_413_is_read_even_when_the_body_comes_late(start_service: StartService) -> None:
    path = str(start_service().listeners["unix"].path)
    body = json.dumps({"ciphertext_blob": "A" * 70_000}).encode()
    for _ in range(3):
        with _unix(path) as sock:
            sock.sendall(
                b"POST /v1/decrypt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            time.sleep(0.3)  # a loaded client: the server has answered before the body
            sock.sendall(body)
            reply = read_reply(sock)
        assert reply.status == 413
        assert reply.json()["error"] == "body_too_large"
        assert reply.closed
    with ApiClient(path) as client:  # http.client sends the head and the body apart
        for _ in range(10):
            answer = client.request("POST", "/v1/decrypt", body)
            assert answer.status == 413


def test_early_disconnects_cost_one_debug_line_and_nothing_on_stderr(
    start_service: StartService, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="attested.service._http")
    path = str(start_service().listeners["unix"].path)
    capfd.readouterr()
    count = 40
    for _ in range(count):
        sock = _unix(path)
        body = b'{"number_of_bytes": 16}'
        sock.sendall(
            b"POST /v1/generate-random HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        sock.close()  # gone before the answer

    def lines() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "attested.service._http" and "ended early" in r.getMessage()
        ]

    deadline = time.monotonic() + 20
    while len(lines()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # nothing more comes
    assert capfd.readouterr().err == ""
    assert len(lines()) == count
    assert {r.levelno for r in lines()} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
