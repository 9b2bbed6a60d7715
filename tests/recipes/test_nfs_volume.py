"""Recipe docs/recipes/nfs-volume.md: a long-lived, mostly idle TCP protocol through both relays.

Not real NFS (a mount needs CAP_SYS_ADMIN; the recipe says why): a small request and
answer protocol with NFS's shape, one connection, calls separated by silence, and a bulk
read, through the enclave's forward and the parent's ``[[egress.forward]]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from attested.parent import Parent
from attested.relay import Failure, Forward, Relay, RelayOptions
from tests.relay.support import loopback, recv_exactly, tcp

pytestmark = [pytest.mark.recipes, pytest.mark.integration]

BULK = 32 * 1024 * 1024
_CALL = struct.Struct(">4sI")  # operation, size


class FileServer:
    """Answers ``PING`` with ``PONG`` and ``READ n`` with n deterministic bytes, per connection."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stopped = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            self._socks.append(sock)
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                while True:
                    head = recv_exactly(sock, _CALL.size)
                    operation, size = _CALL.unpack(head)
                    if operation == b"PING":
                        sock.sendall(b"PONG")
                    else:
                        sock.sendall(content(size))
            except (ConnectionError, OSError):
                return

    def close(self) -> None:
        self._stopped.set()
        self._accept.join(10)
        self.server.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)


def content(size: int) -> bytes:
    block = hashlib.sha256(b"exported file").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def chain(
    run_parent: Callable[[str], Parent],
    enclave_relays: Callable[..., Relay],
    port: int,
    idle: str,
) -> tuple[Parent, Relay]:
    """The recipe's two sides, with loopback TCP for vsock."""
    parent = run_parent(
        f"""
        [egress]
        allow = [{{address = "127.0.0.1", port = {port}}}]
        [[egress.forward]]
        listen = "tcp:127.0.0.1:0"   # vsock:ANY:2049
        to = "127.0.0.1:{port}"
        idle_timeout = {idle}
        keepalive = 30
        """
    )
    enclave = enclave_relays(
        Forward(listen=loopback(), to=parent.listeners["egress-forward-0"], name="nfs"),
        options=RelayOptions(idle_timeout=None, keepalive=30.0),  # --idle-timeout 0
    )
    return parent, enclave


def call(sock: socket.socket, operation: bytes, size: int = 0) -> bytes:
    sock.sendall(_CALL.pack(operation, size))
    return recv_exactly(sock, 4 if operation == b"PING" else size)


def test_a_silent_mount_survives_and_a_bulk_read_arrives_whole(
    run_parent: Callable[[str], Parent],
    enclave_relays: Callable[..., Relay],
    file_server: FileServer,
) -> None:
    parent, enclave = chain(run_parent, enclave_relays, file_server.port, idle="0")
    with socket.create_connection(tcp(enclave.listeners["nfs"]), timeout=30) as mount:
        assert call(mount, b"PING") == b"PONG"
        time.sleep(2.5)  # silence: longer than the control's idle timeout below
        assert call(mount, b"PING") == b"PONG"
        data = call(mount, b"READ", BULK)
        assert hashlib.sha256(data).digest() == hashlib.sha256(content(BULK)).digest()
    assert file_server.connections == 1  # one connection for the whole session
    stats = parent.stats()["egress-forward-0"]
    assert stats.bytes_down >= BULK
    assert stats.failures[Failure.IDLE_TIMEOUT] == 0


def test_with_an_idle_timeout_the_silence_cuts_the_mount(
    run_parent: Callable[[str], Parent],
    enclave_relays: Callable[..., Relay],
    file_server: FileServer,
) -> None:
    """The control: what ``idle_timeout = 0`` prevents."""
    parent, enclave = chain(run_parent, enclave_relays, file_server.port, idle="1")
    with socket.create_connection(tcp(enclave.listeners["nfs"]), timeout=30) as mount:
        assert call(mount, b"PING") == b"PONG"
        assert mount.recv(1) == b""  # cut during the silence (within about 1-6 s)
    assert parent.stats()["egress-forward-0"].failures[Failure.IDLE_TIMEOUT] == 1
