"""Helpers for the relay tests: loopback targets, a TLS server with a test CA, clients."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from attested.emulator import make_dev_tls
from attested.net import Address, parse_address
from attested.relay._logs import ACK

TLS_NAME = "kms.relay.test"


class Target:
    """An asyncio TCP server on 127.0.0.1 in its own thread.

    Modes: ``echo`` (echo until EOF, then close), ``count`` (read until EOF, then answer
    ``got N`` and close: proves half-close), ``flood`` (write until the peer goes away).
    """

    def __init__(self, mode: str = "echo", *, flood_chunk: int = 1 << 20) -> None:
        self.mode = mode
        self.accepts = 0
        self.active = 0
        self.peak = 0
        self.flooded = 0
        self._flood_chunk = b"x" * flood_chunk
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.address = parse_address(f"tcp:127.0.0.1:{self.port}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.mode == "echo":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            elif self.mode == "count":
                total = 0
                while data := await reader.read(65536):
                    total += len(data)
                writer.write(f"got {total}".encode())
                await writer.drain()
            elif self.mode == "flood":
                while True:
                    writer.write(self._flood_chunk)
                    await writer.drain()
                    self.flooded += len(self._flood_chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            self.active -= 1
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()
            for _ in range(3):  # let the closing transports run connection_lost
                await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def loopback(port: int = 0) -> Address:
    return parse_address(f"tcp:127.0.0.1:{port}")


def tcp(address: Address) -> tuple[str, int]:
    """The (host, port) of a tcp address, as socket functions take it."""
    assert address.kind == "tcp"
    assert address.host is not None
    assert address.port is not None
    return (address.host, address.port)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect_through(
    proxy: Address, target: str, *, timeout: float = 10.0
) -> tuple[socket.socket, int, bytes]:
    """Send ``CONNECT target`` to the proxy; return the socket, status and whole response head.

    For an error status, the body (Content-Length) is read and appended.
    """
    sock = socket.create_connection(tcp(proxy), timeout=timeout)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = read_head(sock)
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        head += recv_exactly(sock, length)
    return sock, status, head


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed before the response head ended: {data!r}")
        data += chunk
    return data


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def wait_acked(sock: socket.socket, count: int) -> None:
    """Read the log sink's acknowledgements until ``count`` lines are written and flushed.

    The sink acknowledges each batch it wrote with the running total, and lines sent in
    one ``sendall`` may arrive, and be written, in more than one batch: the first
    acknowledgement may not cover them all.
    """
    while ACK.unpack(recv_exactly(sock, ACK.size))[0] < count:
        pass


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- TLS ----------------------------------------------------------------------------------


class RelayCa:
    """A CA and a server certificate for ``TLS_NAME`` and ``localhost``."""

    def __init__(self, directory: Path) -> None:
        tls = make_dev_tls(directory, (TLS_NAME, "localhost"), ca_name="attested relay test CA")
        self.ca_path = tls.ca
        self.cert_path = tls.certificate
        self.key_path = tls.key

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))


class _KmsLikeHandler(BaseHTTPRequestHandler):
    """Answers GET with a page and KMS GenerateRandom POSTs with 32 bytes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello through the tunnel\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        target = self.headers.get("X-Amz-Target", "")
        self.server.targets.append(target)  # type: ignore[attr-defined]
        body = json.dumps({"Plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class TlsServer:
    """A threaded HTTPS server on 127.0.0.1 with the test CA's certificate."""

    def __init__(self, ca: RelayCa) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(ca.cert_path), str(ca.key_path))
        self.accepts = 0
        outer = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                outer.accepts += 1
                sock.settimeout(10)
                return context.wrap_socket(sock, server_side=True), addr

            def handle_error(self, request, client_address):
                pass  # failed handshakes are part of some tests

        self._server = Server(("127.0.0.1", 0), _KmsLikeHandler)
        self._server.targets = []  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def targets(self) -> list[str]:
        return self._server.targets  # type: ignore[attr-defined,no-any-return]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
