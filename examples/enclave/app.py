"""A minimal enclave app for ``attested exec``: no SDK, no attestation code, no log client.

Its secret arrives in ``DB_PASSWORD`` (and in ``/run/secrets/db-password``, mode 0400)
before it starts; what it prints goes to the parent's log sink line by line. It answers
on 127.0.0.1:$APP_PORT (the ``[[ingress]]`` of enclave.toml) with random bytes from the
local API (``attested exec`` runs it on unix:/run/attested/api.sock). Replace it with
your own program, in any language.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The local API's socket: serve's own override variable, which exec passes on.
API_SOCKET = os.environ.get("ATTESTED_API_SOCKET", "/run/attested/api.sock")


class _UnixConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(API_SOCKET)


def random_bytes(count: int) -> str:
    connection = _UnixConnection("localhost", timeout=10)
    body = json.dumps({"number_of_bytes": count})
    connection.request("POST", "/v1/generate-random", body, {"Content-Type": "application/json"})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return str(answer.get("random", ""))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = json.dumps({"random": random_bytes(32)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        print(f"request {self.path}")  # stdout: shipped to the parent by attested exec


def main() -> None:
    password = os.environ.get("DB_PASSWORD", "")
    # Never print a secret: its fingerprint is enough to tell versions apart.
    fingerprint = hashlib.sha256(password.encode()).hexdigest()[:12] if password else "none"
    print(f"database password loaded (sha256 {fingerprint}...)")
    port = int(os.environ.get("APP_PORT", "8443"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # listening from here on
    print(f"app listening on 127.0.0.1:{port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
