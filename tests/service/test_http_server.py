"""The local API's HTTP layer on real sockets: keep-alive, caps, shutdown, Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attested.net import Address, parse_address
from attested.service._http import HttpServer, Request, Response, UnixHTTPConnection


def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("secret-value-that-must-not-leak")
    if request.path == "/slow":
        time.sleep(0.3)
    body = {"method": request.method, "path": request.path, "size": len(request.body)}
    return Response(status=200, body=json.dumps(body).encode())


@pytest.fixture
def tcp_server() -> Iterator[HttpServer]:
    server = HttpServer(parse_address("tcp:127.0.0.1:0"), echo, max_body=1024, max_connections=8)
    server.start()
    yield server
    server.stop(deadline=5)


def _conn(server: HttpServer) -> http.client.HTTPConnection:
    assert server.address.port is not None
    return http.client.HTTPConnection("127.0.0.1", server.address.port, timeout=5)


def test_keep_alive_serves_many_requests_on_one_connection(tcp_server: HttpServer) -> None:
    conn = _conn(tcp_server)
    for i in range(50):
        conn.request("POST", f"/v1/x{i}", body=b"{}")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["path"] == f"/v1/x{i}"
    assert response.getheader("Connection") != "close"
    conn.close()


def test_body_cap_and_malformed_framing(tcp_server: HttpServer) -> None:
    conn = _conn(tcp_server)
    conn.request("POST", "/v1/x", body=b"x" * 1025)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"] == "body_too_large"
    conn.close()
    conn = _conn(tcp_server)
    conn.putrequest("POST", "/v1/x")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411
    conn.close()
    conn = _conn(tcp_server)
    conn.putrequest("POST", "/v1/x")
    conn.putheader("Content-Length", "-4")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()


def test_app_errors_become_500_without_details(tcp_server: HttpServer, caplog) -> None:
    conn = _conn(tcp_server)
    conn.request("GET", "/boom")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 500
    assert b"secret-value" not in body
    conn.close()


def test_connection_cap_answers_503(tcp_server: HttpServer) -> None:
    held = [_conn(tcp_server) for _ in range(8)]
    for conn in held:
        conn.request("GET", "/ok")
        assert conn.getresponse().read()
    extra = _conn(tcp_server)
    extra.request("GET", "/ok")
    response = extra.getresponse()
    assert response.status == 503
    assert response.getheader("Retry-After") == "1"
    for conn in held:
        conn.close()


def test_graceful_stop_finishes_in_flight_and_closes_idle() -> None:
    server = HttpServer(parse_address("tcp:127.0.0.1:0"), echo)
    server.start()
    idle = _conn(server)
    idle.request("GET", "/ok")
    idle.getresponse().read()
    results: list[int] = []

    def slow() -> None:
        conn = _conn(server)
        conn.request("GET", "/slow")
        results.append(conn.getresponse().status)
        conn.close()

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.1)  # the slow request is in flight
    started = time.monotonic()
    assert server.stop(deadline=5) is True
    worker.join(5)
    assert results == [200]
    assert time.monotonic() - started < 3
    # The idle keep-alive connection was closed by the server.
    idle.request("GET", "/ok")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        idle.getresponse()
    idle.close()
    late = _conn(server)
    with pytest.raises(ConnectionRefusedError):
        late.request("GET", "/ok")
    late.close()


def test_unix_socket_mode_stale_file_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file with no server behind it
    server = HttpServer(Address(kind="unix", path=str(path)), echo)
    server.start()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    conn = UnixHTTPConnection(str(path))
    conn.request("POST", "/v1/decrypt", body=b"{}")
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises(OSError, match="in use"):
        HttpServer(Address(kind="unix", path=str(path)), echo)
    server.stop()
    assert not path.exists()
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(OSError, match="not a socket"):
        HttpServer(Address(kind="unix", path=str(regular)), echo)
    assert regular.read_text() == "keep me"


def test_no_file_descriptor_growth(tcp_server: HttpServer) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    for _ in range(20):  # warm up
        conn = _conn(tcp_server)
        conn.request("GET", "/ok")
        conn.getresponse().read()
        conn.close()
    time.sleep(0.2)
    before = open_fds()
    for _ in range(300):
        conn = _conn(tcp_server)
        conn.request("GET", "/ok")
        conn.getresponse().read()
        conn.close()
    deadline = time.monotonic() + 3
    while open_fds() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() <= before + 2


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431, "headers_too_large"),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(70)) + b"\r\n",
            431,
            "headers_too_large",
        ),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
        (b"BREW / HTTP/1.1\r\n\r\n", 501, "method_not_implemented"),
    ],
)
def test_protocol_errors_are_json_too(
    tcp_server: HttpServer, raw: bytes, status: int, code: str
) -> None:
    assert tcp_server.address.port is not None
    with socket.create_connection(("127.0.0.1", tcp_server.address.port), timeout=5) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        response.close()
        assert response.status == status
        assert response.getheader("Content-Type") == "application/json"
        assert response.getheader("Connection") == "close"
        assert body["error"] == code
        assert isinstance(body["message"], str)
        assert body["message"]
