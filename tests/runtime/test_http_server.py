"""The runtime HTTP server on real loopback sockets: framing, caps, deadlines, refusals, stop."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from pathlib import Path

import pytest

from attested._runtime.http import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    HttpServer,
    Response,
)
from attested.emulator import make_dev_tls
from tests.runtime.conftest import MakeServer, Recorder, connector, wait_for
from tests.runtime.wire import (
    FRAMING_CASES,
    Dripper,
    exchange,
    read_replies,
    read_reply,
    reset_on_close,
)

pytestmark = pytest.mark.integration

GET = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
LENGTH = "length_required"


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), len(body), extra)
        + body
    )


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"), [c[1:] for c in FRAMING_CASES], ids=[c[0] for c in FRAMING_CASES]
)
def test_ambiguous_framing_is_refused_closed_and_never_reaches_the_app(
    make_server: MakeServer, recorder: Recorder, raw: bytes, status: int
) -> None:
    server = make_server()
    reply = exchange(connector(server), raw)
    assert reply.status == status
    assert reply.headers["connection"] == "close"
    assert reply.json()["error"]
    assert reply.closed
    assert recorder.requests == []  # neither the first nor a smuggled request
    assert server.stats().protocol_errors == 1


def test_refusals_are_prompt_not_at_the_deadline(make_server: MakeServer) -> None:
    server = make_server(request_timeout=30.0)
    for raw in (b"GET /x\r\n", b"GET / HTTP/1.1\nHost", b"GET / HTTP/1.1\r\nX: \x00"):
        started = time.monotonic()
        with connector(server)() as sock:
            sock.sendall(raw)  # incomplete: the server must not wait for the rest
            assert read_reply(sock).status in (400, 505)
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411, LENGTH),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413, "body_too_large"),
        (b"BREW / HTTP/1.1\r\n\r\n", 501, "method_not_implemented"),
        (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n", 431, "headers_too_large"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS))
            + b"\r\n",
            431,
            "headers_too_large",
        ),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431, "headers_too_large"),
    ],
    ids=["chunked", "gzip", "negative-length", "too-large", "unknown-method", "http-1.2",
         "extra-word", "two-hosts", "long-line", "too-many-fields", "large-head"],
)  # fmt: skip
def test_other_refusals(
    make_server: MakeServer, recorder: Recorder, raw: bytes, status: int, code: str
) -> None:
    server = make_server(max_body=1024)
    reply = exchange(connector(server), raw)
    assert (reply.status, reply.json()["error"]) == (status, code)
    assert reply.closed
    assert recorder.requests == []


def test_the_limits_themselves_are_accepted(make_server: MakeServer, recorder: Recorder) -> None:
    server = make_server(max_body=1024)
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS - 1))
    reply = exchange(connector(server), b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert reply.status == 200
    reply = exchange(connector(server), _post("/max", b"b" * 1024))
    assert (reply.status, reply.json()["size"]) == (200, 1024)
    reply = exchange(connector(server), b"\r\n\r\n" + GET)  # empty lines before a request
    assert reply.status == 200
    same = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"
    assert exchange(connector(server), same).status == 200  # repeated, but not conflicting
    assert exchange(connector(server), b"GET / HTTP/1.0\r\n\r\n").closed  # 1.0: no keep-alive


# --- the ordinary path -----------------------------------------------------------------


def test_keep_alive_pipelining_and_headers(make_server: MakeServer, recorder: Recorder) -> None:
    server = make_server()
    with connector(server)() as sock:
        sock.sendall(_post("/one", b"12345", b"X-Twice: a\r\nX-Twice: b\r\n") + _post("/two", b""))
        first, second = read_replies(sock, ["POST", "POST"])
        one, two = first.json(), second.json()
        assert (one["path"], one["size"], two["path"]) == ("/one", 5, "/two")
        assert one["headers"]["x-twice"] == "a, b"
        assert "connection" not in first.headers
        sock.sendall(GET)
        assert read_reply(sock, timeout=0.5).status == 200
    assert recorder.requests[0].header_list[2:] == (("x-twice", "a"), ("x-twice", "b"))
    assert recorder.requests[0].peer == "127.0.0.1"


def test_head_answers_have_no_body(make_server: MakeServer) -> None:
    server = make_server()
    with connector(server)() as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
        head, after = read_replies(sock, ["HEAD", "GET"])
        assert head.body == b""
        assert int(head.headers["content-length"]) > 0
        assert after.json()["path"] == "/ok"


def test_expect_100_continue(make_server: MakeServer) -> None:
    server = make_server(max_body=1024)
    with connector(server)() as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert json.loads(read_reply(sock, timeout=0.5).body)["size"] == 4
    with connector(server)() as sock:  # too large: 413 at once, no 100
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        reply = read_reply(sock)
        assert (reply.status, reply.closed) == (413, True)


def test_app_errors_become_500_logged_without_stderr(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    capfd.readouterr()
    for path in ("/boom", "/bad-header"):
        reply = exchange(connector(server), b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        assert (reply.status, reply.json()["error"]) == (500, "internal_error")
        assert b"secret-value" not in reply.body
        assert b"Set-Cookie" not in reply.body
        assert "set-cookie" not in reply.headers
    assert server.stats().app_errors == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert capfd.readouterr().err == ""


def test_drop_connection_closes_without_an_answer(make_server: MakeServer) -> None:
    server = make_server()
    with connector(server)() as sock:
        sock.sendall(b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b""


def test_a_pluggable_error_page(make_server: MakeServer) -> None:
    seen: list[tuple[int, str, str]] = []

    def page(status: int, code: str, message: str) -> Response:
        seen.append((status, code, message))
        return Response(status=status, body=b"<" + code.encode() + b">", content_type="text/x")

    server = make_server(error_page=page, max_connections=1)
    reply = exchange(connector(server), b"GET / HTTP/1.1\r\n\r\n")
    assert (reply.status, reply.body, reply.headers["content-type"]) == (
        400,
        b"<bad_request>",
        "text/x",
    )
    # The refused connection holds the one slot until its thread has closed it.
    assert wait_for(lambda: server.stats().connections_open == 0)
    with connector(server)() as held:
        held.sendall(GET)
        assert read_reply(held, timeout=5.0).status == 200
        reply = exchange(connector(server), GET)
    assert (reply.status, reply.body, reply.headers["retry-after"]) == (503, b"<overloaded>", "1")
    assert [s[:2] for s in seen] == [(400, "bad_request"), (503, "overloaded")]


# --- deadlines -------------------------------------------------------------------------


def test_drippers_are_cut_at_the_request_deadline_and_others_are_served(
    make_server: MakeServer,
) -> None:
    server = make_server(request_timeout=1.5, idle_timeout=30.0, max_connections=20)
    drippers = [Dripper(connector(server), interval=0.2, give_up=15.0).start() for _ in range(8)]
    assert wait_for(lambda: server.stats().connections_open == 8)
    started = time.monotonic()
    reply = exchange(connector(server), GET)
    assert reply.status == 200
    assert time.monotonic() - started < 5  # served while the drippers drip
    for dripper in drippers:
        dripper.join(30)
        assert dripper.error is None
        assert dripper.cut_after is not None
        assert 1.3 <= dripper.cut_after < 10, dripper.cut_after
    assert server.stats().timeouts == 8


def test_a_dripping_body_is_cut_at_the_deadline_too(make_server: MakeServer) -> None:
    server = make_server(request_timeout=1.0, max_body=100_000)
    with connector(server)() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b"x")
                sock.settimeout(0.1)
                if sock.recv(10) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed
        assert time.monotonic() - started >= 0.9


def test_idle_connections_close_after_idle_timeout_quietly(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(idle_timeout=0.5)
    with connector(server)() as sock:
        sock.sendall(GET)
        assert read_reply(sock).status == 200
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""
        assert 0.3 <= time.monotonic() - started < 5
    assert not [r for r in caplog.records if "connection from" in r.getMessage()]


# --- refusals --------------------------------------------------------------------------


def test_over_the_cap_a_readable_503_even_with_a_late_body(make_server: MakeServer) -> None:
    server = make_server(max_connections=2)
    held = [connector(server)() for _ in range(2)]
    try:
        assert wait_for(lambda: server.stats().connections_open == 2)
        for _ in range(3):
            with connector(server)() as sock:
                time.sleep(0.3)
                sock.sendall(_post("/late", b"z" * 20_000))
                reply = read_reply(sock)
            assert (reply.status, reply.json()["error"]) == (503, "overloaded")
            assert reply.headers["retry-after"] == "1"
            assert reply.closed
    finally:
        for sock in held:
            sock.close()
    assert server.stats().connections_refused == 3
    assert wait_for(lambda: server.stats().connections_open == 0)
    assert exchange(connector(server), GET).status == 200


def test_a_413_is_readable_when_the_body_comes_late(make_server: MakeServer) -> None:
    server = make_server(max_body=1024)
    with connector(server)() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(b"y" * 70_000)
        reply = read_reply(sock)
    assert (reply.status, reply.closed) == (413, True)


def test_early_disconnects_one_debug_line_each_no_stderr(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("test.runtime.early")
    server = make_server(logger=logger)
    capfd.readouterr()
    count = 40
    for n in range(count):
        sock = connector(server)()
        reset_on_close(sock)
        # Half of them reset in the middle of the request, half while it is served.
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n" + (b"\r\n" if n % 2 else b""))
        sock.close()

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == logger.name]

    assert wait_for(lambda: len(lines()) >= count, timeout=30)
    time.sleep(0.5)
    assert capfd.readouterr().err == ""
    assert len(lines()) == count
    assert {r.levelno for r in lines()} == {logging.DEBUG}
    assert server.stats().early_closes == count


# --- stop ------------------------------------------------------------------------------


def test_stop_finishes_in_flight_closes_idle_and_refuses_new(
    make_server: MakeServer, recorder: Recorder
) -> None:
    server = make_server()
    idle = connector(server)()
    idle.sendall(GET)
    assert read_reply(idle, timeout=0.1).status == 200
    results: list[int] = []

    def in_flight() -> None:
        results.append(exchange(connector(server), b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").status)

    worker = threading.Thread(target=in_flight)
    worker.start()
    assert recorder.waiting.wait(10)
    threading.Timer(0.3, recorder.release.set).start()
    assert server.stop(5.0) is True
    worker.join(10)
    assert results == [200]
    assert idle.recv(1) == b""  # the idle keep-alive connection was closed
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        connector(server)()


def test_stop_reports_a_missed_deadline(make_server: MakeServer, recorder: Recorder) -> None:
    server = make_server()

    def in_flight() -> None:
        with connector(server)() as sock:
            sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(100)

    worker = threading.Thread(target=in_flight, daemon=True)
    worker.start()
    assert recorder.waiting.wait(10)
    started = time.monotonic()
    assert server.stop(0.3) is False
    assert time.monotonic() - started < 5
    recorder.release.set()
    worker.join(10)


# --- TLS and Unix sockets ---------------------------------------------------------------


def test_tls_slow_handshakes_do_not_block_others(make_server: MakeServer, tmp_path: Path) -> None:
    tls = make_dev_tls(tmp_path, ("127.0.0.1",))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.certificate, tls.key)
    server = make_server(ssl_context=context, request_timeout=1.5, max_connections=3)
    silent = connector(server)()  # connects, never says hello
    try:
        client = tls.client_context()
        for _ in range(2):
            with client.wrap_socket(connector(server)(), server_hostname="127.0.0.1") as sock:
                sock.sendall(GET)
                reply = read_reply(sock)
                assert (reply.status, reply.closed) == (200, False)
        started = time.monotonic()
        silent.settimeout(10)
        assert silent.recv(1) == b""  # cut at the request deadline
        assert time.monotonic() - started < 9
    finally:
        silent.close()
    held = [client.wrap_socket(connector(server)(), server_hostname="127.0.0.1") for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(GET)
            assert read_reply(sock, timeout=0.2).status == 200
        with client.wrap_socket(connector(server)(), server_hostname="127.0.0.1") as extra:
            extra.sendall(GET)
            assert read_reply(extra).status == 503  # readable over TLS too
    finally:
        for sock in held:
            sock.close()


def test_a_unix_socket_server(make_server: MakeServer, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = make_server(address=f"unix:{path}")
    reply = exchange(connector(server), GET)
    assert reply.status == 200
    assert json.loads(reply.body)["path"] == "/ok"
    server.stop(1.0)
    assert not path.exists()


def test_counters(make_server: MakeServer) -> None:
    server: HttpServer = make_server()
    exchange(connector(server), GET)
    exchange(connector(server), b"GET /x\r\n\r\n")
    assert wait_for(lambda: server.stats().connections_open == 0)
    stats = server.stats()
    assert (stats.connections_accepted, stats.requests, stats.protocol_errors) == (2, 1, 1)
    with connector(server)():
        assert wait_for(lambda: server.stats().connections_open == 1)
