"""Real servers on 127.0.0.1 for the KMS client tests.

* :class:`KmsStandIn`: speaks the KMS JSON protocol (``X-Amz-Target: TrentService.*``)
  for the five Recipient operations, answering with real CMS envelopes for the public
  key in the attestation document, over HTTP or HTTPS; faults can be queued.
* :class:`ConnectProxy`: an HTTP CONNECT proxy that maps host names to local ports,
  standing in for the enclave-egress relay plus the parent relay.
* :class:`DocumentProvider`: an AttestationProvider signing documents with the test PKI.

They stand in for the KMS emulator until it lands; they do not check SigV4 or policies.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import selectors
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attested import parse_attestation
from attested.emulator import make_dev_tls
from tests.kit import Kit
from tests.kms import envelopes

KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SEALED = b"sealed:"


class DocumentProvider:
    """Signs a fresh document per call with the requested ``public_key``.

    ``live=True`` stamps documents with the current time (for verifiers that check the
    chain now, like the emulator); otherwise they carry the kit's fixed time.
    """

    def __init__(self, kit: Kit, *, live: bool = False) -> None:
        self.kit = kit
        self.live = live
        self.calls = 0
        self.public_keys: list[bytes | None] = []

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        self.calls += 1
        self.public_keys.append(public_key)
        payload = self.kit.payload(public_key=public_key, user_data=user_data, nonce=nonce)
        if self.live:
            payload["timestamp"] = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
        return self.kit.document(payload)


# --- TLS material ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCa:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    hosts: tuple[str, ...]


def make_test_ca(
    directory: Path, hosts: tuple[str, ...] = ("kms.us-east-1.amazonaws.com",)
) -> LocalCa:
    tls = make_dev_tls(directory, hosts, ca_name="attested test CA")
    return LocalCa(ca_pem=tls.ca, cert_pem=tls.certificate, key_pem=tls.key, hosts=hosts)


# --- a threaded server that can be stopped with keep-alive clients attached --------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: KmsStandIn) -> None:
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Fault:
    status: int
    code: str
    message: str = "stand-in fault"


@dataclass
class Recorded:
    target: str
    body: dict[str, Any]
    headers: dict[str, str] = field(repr=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class KmsStandIn:
    """A KMS stand-in: five Recipient operations, real envelopes, queued faults.

    ``mode``: ``"recipient"`` (like KMS), ``"plaintext-too"`` (also returns the
    plaintext field: an endpoint that ignored Recipient), ``"no-envelope"``.
    """

    def __init__(self, *, tls: LocalCa | None = None) -> None:
        self.tls = tls
        self.requests: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self.mode = "recipient"
        self.agreement_key = ec.generate_private_key(ec.SECP256R1())
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def fail_next(self, count: int, code: str, *, status: int = 400, message: str = "") -> None:
        for _ in range(count):
            self.faults.append(Fault(status, code, message or f"stand-in {code}"))

    def __enter__(self) -> KmsStandIn:
        server = _Server(_Handler, self)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls.cert_pem), str(self.tls.key_pem))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        self._thread.join()

    # -- the operations ---------------------------------------------------------------

    def answer(self, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
        if fault is not None:
            return fault.status, {"__type": fault.code, "message": fault.message}
        operation = target.removeprefix("TrentService.")
        recipient = body.get("Recipient")
        public_key = None
        if recipient is not None:
            if recipient.get("KeyEncryptionAlgorithm") != "RSAES_OAEP_SHA_256":
                return 400, {"__type": "ValidationException", "message": "bad algorithm"}
            document = parse_attestation(base64.b64decode(recipient["AttestationDocument"]))
            assert document.public_key is not None
            loaded = serialization.load_der_public_key(document.public_key)
            assert isinstance(loaded, rsa.RSAPublicKey)
            public_key = loaded
        response: dict[str, Any] = {}
        if operation == "Decrypt":
            blob = base64.b64decode(body["CiphertextBlob"])
            if not blob.startswith(SEALED):
                return 400, {"__type": "InvalidCiphertextException", "message": None}
            plaintext = blob[len(SEALED) :]
            field_name = "Plaintext"
            response = {"KeyId": KEY_ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        elif operation == "GenerateDataKey":
            size = body.get("NumberOfBytes") or {"AES_256": 32, "AES_128": 16}[body["KeySpec"]]
            plaintext = os.urandom(size)
            field_name = "Plaintext"
            response = {"KeyId": KEY_ARN, "CiphertextBlob": _b64(SEALED + plaintext)}
        elif operation == "GenerateDataKeyPair":
            pair = ec.generate_private_key(ec.SECP256R1())
            plaintext = pair.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            field_name = "PrivateKeyPlaintext"
            response = {
                "KeyId": KEY_ARN,
                "KeyPairSpec": body["KeyPairSpec"],
                "PrivateKeyCiphertextBlob": _b64(SEALED + plaintext),
                "PublicKey": _b64(
                    pair.public_key().public_bytes(
                        serialization.Encoding.DER,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                ),
            }
        elif operation == "GenerateRandom":
            plaintext = os.urandom(body["NumberOfBytes"])
            field_name = "Plaintext"
        elif operation == "DeriveSharedSecret":
            peer = serialization.load_der_public_key(base64.b64decode(body["PublicKey"]))
            assert isinstance(peer, ec.EllipticCurvePublicKey)
            plaintext = self.agreement_key.exchange(ec.ECDH(), peer)
            field_name = "SharedSecret"
            response = {"KeyId": KEY_ARN, "KeyAgreementAlgorithm": "ECDH", "KeyOrigin": "AWS_KMS"}
        else:
            return 400, {"__type": "UnknownOperationException"}
        if public_key is None or self.mode == "plaintext-too":
            response[field_name] = _b64(plaintext)
        if public_key is not None and self.mode != "no-envelope":
            response["CiphertextForRecipient"] = _b64(envelopes.build(plaintext, public_key))
        return 200, response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        owner = self.server.owner
        size = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(size) or b"{}")
        target = self.headers.get("X-Amz-Target", "")
        with owner.lock:
            owner.requests.append(Recorded(target, body, dict(self.headers)))
        status, answer = owner.answer(target, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-standin00000")
        self.end_headers()
        self.wfile.write(data)


# --- an HTTP CONNECT proxy ---------------------------------------------------------------


class ConnectProxy:
    """CONNECT host:port -> a mapped local address; anything else gets 403."""

    def __init__(self, routes: dict[tuple[str, int], tuple[str, int]]) -> None:
        self.routes = routes
        self.connects: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._tunnel, args=(conn,), daemon=True)
            with self._lock:
                self._sockets.add(conn)
                self._threads.append(thread)
            thread.start()

    def _tunnel(self, conn: socket.socket) -> None:
        upstream = None
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = line.split(" ", 2)
            host, _, port = target.rpartition(":")
            with self._lock:
                self.connects.append(target)
            route = self.routes.get((host, int(port))) if method == "CONNECT" else None
            if route is None:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            upstream = socket.create_connection(route, timeout=5)
            with self._lock:
                self._sockets.add(upstream)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._pipe(conn, upstream)
        except OSError:
            return
        finally:
            for sock in (conn, upstream):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    sock.close()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(a, selectors.EVENT_READ, b)
            selector.register(b, selectors.EVENT_READ, a)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
