"""Reading one request on its own (no server, no threads): only our three outcomes, ever."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested._runtime.request import METHODS, Gone, Refused, Request, Wire, read_request
from tests.runtime.test_property import _PIECES


def _read(data: bytes, max_body: int = 64) -> tuple[Request, bool, bytes]:
    """Send ``data`` and end the stream, then read one request from the other end."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        wire = Wire(ours)
        deadline = time.monotonic() + 10.0
        request, closing = read_request(
            wire, deadline, peer="local", methods=METHODS, max_body=max_body
        )
        return request, closing, bytes(wire.buf)


def test_a_request_its_body_and_what_follows() -> None:
    request, closing, rest = _read(
        b"\r\nPOST /x?y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabcGET"
    )
    assert (request.method, request.path, request.body, request.peer) == (
        "POST",
        "/x?y",
        b"abc",
        "local",
    )
    assert request.headers["x-a"] == "1, 2"
    assert request.header_list[1:] == (("x-a", "1"), ("x-a", "2"), ("content-length", "3"))
    assert not closing
    assert rest == b"GET"  # a pipelined request stays for the next read


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 505),
        (b"BREW / HTTP/1.1\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 65 + b"\r\n", 431),
    ],
)
def test_a_broken_rule_is_refused_with_its_status(data: bytes, status: int) -> None:
    with pytest.raises(Refused) as info:
        _read(data)
    assert info.value.status == status


def test_http_1_0_and_connection_close_ask_to_close() -> None:
    assert _read(b"GET / HTTP/1.0\r\n\r\n")[1]
    assert _read(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n")[1]


@given(st.lists(_PIECES, max_size=12).map(b"".join) | st.binary(max_size=200))
def test_any_bytes_give_a_request_or_one_of_our_refusals(data: bytes) -> None:
    status = 0
    try:
        request, _, _ = _read(data)
        assert len(request.body) == int(request.headers.get("content-length", "0"))
    except Refused as refused:
        status = refused.status
    except Gone:
        pass  # the stream ended before a whole request
    assert status in {0, 400, 411, 413, 431, 501, 505}
