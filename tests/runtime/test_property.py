"""Arbitrary bytes as a request never crash a connection thread or the server."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attested._runtime.http import HttpLimits, HttpServer
from attested._runtime.listen import open_listener
from attested.net import parse_address
from tests.runtime.conftest import Recorder, connector, wait_for
from tests.runtime.wire import exchange

pytestmark = pytest.mark.integration

# Pieces of real requests, so that examples get past the first checks, mixed with noise.
_PIECES = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"HEAD / HTTP/1.0\r\n",
        b"GET /\r\n",
        b"Host: x\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Content-Length: 4, 5\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"X: \xff\xfe\r\n",
        b" folded\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"abc",
        b":",
        b" ",
    ]
)
_FIELD = st.tuples(
    st.sampled_from([b"X-A", b"Accept", b"Content-Type", b"X-Amz-Target", b"Connection"]),
    st.binary(max_size=30),
)


@st.composite
def _well_formed(draw: st.DrawFn) -> bytes:
    """A request that is valid up to its body, followed by anything (a pipelined tail)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"DELETE"]))
    path = b"/" + draw(st.binary(max_size=20)).hex().encode()
    fields = b"".join(b"%s: %s\r\n" % (n, v.hex().encode()) for n, v in draw(st.lists(_FIELD)))
    body = draw(st.binary(max_size=200))
    declared = draw(st.one_of(st.just(len(body)), st.integers(0, 2000)))
    tail = draw(st.one_of(st.just(b""), REQUEST_PIECES))
    return (
        b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
        % (method, path, declared, fields)
        + body
        + tail
    )


REQUEST_PIECES = st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=25).map(b"".join)
REQUESTS = st.one_of(st.binary(max_size=3000), REQUEST_PIECES, _well_formed())


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[HttpServer, Recorder]]:
    recorder = Recorder()
    server = HttpServer(
        open_listener(parse_address("tcp:127.0.0.1:0")),
        recorder,
        limits=HttpLimits(max_body=1024, request_timeout=5.0, idle_timeout=5.0),
        logger=logging.getLogger("test.runtime.fuzz"),
    )
    server.start()
    yield server, recorder
    server.stop(5.0)


def _send(server: HttpServer, data: bytes) -> bytes:
    """Send ``data``, end the sending side, read whatever comes back until the close."""
    received = bytearray()
    with connector(server)() as sock:
        sock.settimeout(15)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return bytes(received)


def test_arbitrary_bytes_never_crash_the_server(
    server: tuple[HttpServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    http_server, recorder = server
    caplog.set_level(logging.DEBUG, logger="test.runtime.fuzz")
    threads_before = threading.active_count()

    @settings(
        max_examples=max(200, settings().max_examples),  # more with the fuzz profile
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=REQUESTS)
    def run(data: bytes) -> None:
        answer = _send(http_server, data)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 ")

    run()
    stats = http_server.stats()
    print("STATS", stats)
    assert stats.app_errors == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    # Every connection thread ended; the server still answers.
    assert wait_for(lambda: http_server.stats().connections_open == 0)
    assert wait_for(lambda: threading.active_count() <= threads_before)
    reply = exchange(connector(http_server), b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 200
    assert recorder.paths()[-1] == "/after"
