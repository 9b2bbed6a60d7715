"""Helpers for the attested TLS tests: certificates, a man in the middle, an app, ports."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PCR0 = bytes.fromhex("a1" * 48)
OTHER_PCR0 = bytes.fromhex("e2" * 48)
PAGE = b"<html><body>hello from the enclave app</body></html>\n"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def http_app(site: Path) -> Iterator[int]:
    """An unmodified ``python -m http.server`` serving ``site`` (index.html = PAGE)."""
    site.mkdir(exist_ok=True)
    (site / "index.html").write_bytes(PAGE)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: listening(port) or process.poll() is not None, "http.server")
        assert process.poll() is None, "http.server did not start"
        yield port
    finally:
        process.terminate()
        process.wait(30)


def self_signed(
    *, extensions: list[x509.Extension[x509.ExtensionType]] | None = None
) -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate and key (PEM), with extra extensions copied in."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=3))
    )
    for extension in extensions or []:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class TlsServer:
    """A TLS server in a thread (a man in the middle): answers one page, records what came."""

    port: int
    received: list[bytes] = field(default_factory=list)


@contextlib.contextmanager
def tls_server(directory: Path, cert_pem: bytes, key_pem: bytes) -> Iterator[TlsServer]:
    """Serve HTTPS with this certificate on loopback until the block ends."""
    cert_file, key_file = directory / "mitm-cert.pem", directory / "mitm-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    server = TlsServer(port=listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    data = tls.recv(65536)
                    server.received.append(data)
                    if data:
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nstolen!")
            except (OSError, ssl.SSLError):
                pass
            finally:
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
        listener.close()
