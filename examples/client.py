"""A client of the attested secrets service, using only the Python standard library.

The service (``attested serve``) listens on a Unix domain socket; ``http.client`` speaks
HTTP over it once ``connect`` opens an ``AF_UNIX`` socket. Copy :class:`SecretsClient`
into your application: it needs nothing but the standard library.

Usage::

    python examples/client.py [--socket PATH] health
    python examples/client.py [--socket PATH] random N
    python examples/client.py [--socket PATH] data-key KEY_ARN [--context K=V ...]
    python examples/client.py [--socket PATH] decrypt KEY_ARN CIPHERTEXT_FILE [--context K=V ...]

``decrypt`` writes the plaintext to stdout; ``data-key`` prints the encrypted data key
(base64, to store) and the plaintext key's length (use the key, never print it).
Exit status: 0 ok, 1 the service refused (its error code and message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import sys
from typing import Any

DEFAULT_SOCKET = "/run/attested/api.sock"


class ServiceError(Exception):
    """The service answered with an error: ``status``, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SecretsClient:
    """Calls the service over its Unix socket, on one keep-alive connection.

    Not thread-safe: give each thread its own client.
    """

    def __init__(self, path: str = DEFAULT_SOCKET, *, timeout: float = 30.0) -> None:
        self._path = path
        self._timeout = timeout
        self._conn = _UnixConnection(path, timeout)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SecretsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer, or :class:`ServiceError`."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self._conn.request(method, route, body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The service closed an idle keep-alive connection: reconnect once.
                self._conn.close()
                self._conn = _UnixConnection(self._path, self._timeout)
                if attempt == 2:
                    raise
        if response.status != 200:
            try:
                error = json.loads(payload)
                raise ServiceError(response.status, error["error"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise ServiceError(response.status, "unknown", payload[:200].decode()) from None
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(payload)
        return payload.decode()

    def health(self) -> dict[str, Any]:
        return dict(self.call("GET", "/v1/health"))

    def random(self, count: int) -> bytes:
        answer = self.call("POST", "/v1/generate-random", {"number_of_bytes": count})
        return base64.b64decode(answer["random"])

    def decrypt(
        self, ciphertext: bytes, key_id: str, context: dict[str, str] | None = None
    ) -> bytes:
        body: dict[str, Any] = {"ciphertext_blob": base64.b64encode(ciphertext).decode()}
        body["key_id"] = key_id
        if context:
            body["encryption_context"] = context
        return base64.b64decode(self.call("POST", "/v1/decrypt", body)["plaintext"])

    def data_key(self, key_id: str, context: dict[str, str] | None = None) -> tuple[bytes, bytes]:
        """A new data key: (plaintext key, encrypted key to store with the data)."""
        body: dict[str, Any] = {"key_id": key_id}
        if context:
            body["encryption_context"] = context
        answer = self.call("POST", "/v1/generate-data-key", body)
        return base64.b64decode(answer["plaintext"]), base64.b64decode(answer["ciphertext_blob"])


def _context(pairs: list[str]) -> dict[str, str]:
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--context takes KEY=VALUE, not {pair!r}")
        context[key] = value
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Call the attested secrets service.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"default {DEFAULT_SOCKET}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health")
    random = commands.add_parser("random")
    random.add_argument("count", type=int)
    data_key = commands.add_parser("data-key")
    data_key.add_argument("key_id")
    data_key.add_argument("--context", action="append", default=[])
    decrypt = commands.add_parser("decrypt")
    decrypt.add_argument("key_id")
    decrypt.add_argument("ciphertext_file")
    decrypt.add_argument("--context", action="append", default=[])
    args = parser.parse_args(argv)

    with SecretsClient(args.socket) as client:
        try:
            if args.command == "health":
                print(json.dumps(client.health(), indent=2))
            elif args.command == "random":
                print(client.random(args.count).hex())
            elif args.command == "data-key":
                plaintext, encrypted = client.data_key(args.key_id, _context(args.context))
                print(
                    json.dumps(
                        {
                            "ciphertext_blob": base64.b64encode(encrypted).decode(),
                            "plaintext_length": len(plaintext),
                        }
                    )
                )
            else:
                with open(args.ciphertext_file, "rb") as handle:
                    ciphertext = handle.read()
                plaintext = client.decrypt(ciphertext, args.key_id, _context(args.context))
                sys.stdout.buffer.write(plaintext)
                sys.stdout.flush()
        except ServiceError as exc:
            print(f"the service refused: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
