"""A minimal enclave app: answers on 127.0.0.1:$APP_PORT with random bytes from KMS.

It uses the secrets service over its unix socket (``attested serve``) and ships its
logs to the parent's sink. Replace it with your own; the entrypoint runs the image's
CMD after the service is ready.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attested.relay import VsockLogHandler

API_SOCKET = "/run/attested/api.sock"
log = logging.getLogger("app")


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
        log.info("request %s", self.path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, handlers=[VsockLogHandler("vsock:3:8090")])
    port = int(os.environ.get("APP_PORT", "8443"))
    log.info("app listening on 127.0.0.1:%d", port)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
