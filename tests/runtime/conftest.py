"""Fixtures for the runtime kit: a recording application and servers on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from attested._runtime.http import (
    DropConnection,
    HttpLimits,
    HttpServer,
    Request,
    Response,
)
from attested._runtime.listen import open_listener
from attested.net import parse_address


class Recorder:
    """An application that records every request it is given.

    Routes: ``/slow`` sleeps 0.3 s, ``/wait`` waits for :attr:`release`, ``/boom``
    raises, ``/drop`` closes without an answer, ``/bad-header`` answers a header with a
    line break in it; everything else echoes.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.release = threading.Event()
        self.waiting = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        path = request.path
        if path == "/slow":
            time.sleep(0.3)
        elif path == "/wait":
            self.waiting.set()
            self.release.wait(30)
        elif path == "/boom":
            raise RuntimeError("secret-value-that-must-not-leak")
        elif path == "/drop":
            raise DropConnection
        elif path == "/bad-header":
            return Response(status=200, headers={"X-Evil": "a\r\nSet-Cookie: b"})
        body = {
            "method": request.method,
            "path": path,
            "size": len(request.body),
            "headers": dict(request.headers),
        }
        return Response(status=200, body=json.dumps(body).encode())

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]


MakeServer = Callable[..., HttpServer]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_server(recorder: Recorder) -> Iterator[MakeServer]:
    """Start servers on tcp:127.0.0.1:0 (or ``address``); all are stopped afterwards."""
    started: list[HttpServer] = []

    def make(*, address: str = "tcp:127.0.0.1:0", app: Any = None, **options: Any) -> HttpServer:
        limit_names = {"max_body", "max_connections", "idle_timeout", "request_timeout"}
        limits = HttpLimits(**{k: options.pop(k) for k in list(options) if k in limit_names})
        server = HttpServer(
            open_listener(parse_address(address)),
            app if app is not None else recorder,
            limits=limits,
            **options,
        )
        server.start()
        started.append(server)
        return server

    yield make
    recorder.release.set()
    for server in started:
        server.stop(5.0)


def connector(server: HttpServer) -> Callable[[], socket.socket]:
    """Opens a new connection to ``server`` (TCP or Unix)."""

    def connect() -> socket.socket:
        address = server.address
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(address.path))
            return sock
        return socket.create_connection((str(address.host), int(address.port or 0)), timeout=10)

    return connect


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
