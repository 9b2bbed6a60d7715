"""Recipe docs/recipes/legacy-web-app.md: an unmodified web app, traffic in and out.

Loopback TCP stands in for vsock. An HTTPS server with the test CA stands in for the API
(DynamoDB in the recipe; its certificate names TLS_NAME); an HTTP server stands in for the
app. The parent is the real ``Parent`` from the recipe's configuration, with loopback
addresses; the enclave side runs the raw forwards its entrypoint starts.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attested.cli import main
from attested.net import parse_address
from attested.parent import Parent
from attested.relay import EnclaveEgress, Forward, Relay
from tests.relay.support import TLS_NAME, RelayCa, TlsServer, connect_through, loopback, tcp

pytestmark = [pytest.mark.recipes, pytest.mark.integration]


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"legacy app: " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[int]:
    """The legacy web app in the enclave, on its loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


def parent_toml(api_port: int, enclave_ingress_port: int) -> str:
    """The recipe's parent.toml, with loopback TCP for vsock."""
    return f"""
    [egress]
    listen = "tcp:127.0.0.1:0"   # the CONNECT path, to show that it refuses the rest
    allow = [
      {{address = "{TLS_NAME}", port = {api_port}}},
      {{address = "127.0.0.1", port = {api_port}}},  # hosts points the name here (ADR 0067)
    ]
    hosts = {{"{TLS_NAME}" = "127.0.0.1"}}

    [[egress.forward]]
    listen = "tcp:127.0.0.1:0"   # vsock:ANY:8002
    to = "{TLS_NAME}:{api_port}"

    [[ingress]]
    listen = "tcp:127.0.0.1:0"   # tcp:0.0.0.0:443
    to = "tcp:127.0.0.1:{enclave_ingress_port}"   # vsock:16:8443
    allow_parent_target = true   # only because loopback stands in for the enclave
    """


def test_traffic_in_and_out_of_an_unmodified_app(
    run_parent: Callable[[str], Parent],
    enclave_relays: Callable[..., Relay],
    tls_server: TlsServer,
    relay_ca: RelayCa,
    app: int,
) -> None:
    # The enclave's ingress: vsock:ANY:8443 -> tcp:127.0.0.1:8443 (the app).
    ingress = enclave_relays(
        Forward(listen=loopback(), to=parse_address(f"tcp:127.0.0.1:{app}"), name="in")
    )
    parent = run_parent(parent_toml(tls_server.port, ingress.listeners["in"].port or 0))
    # The enclave's egress forward: 127.0.0.2:443 (the name in /etc/hosts) -> vsock:3:8002.
    egress = enclave_relays(
        Forward(listen=loopback(), to=parent.listeners["egress-forward-0"], name="out")
    )

    # In: a client on the internet side asks the parent's port; the app answers.
    host, port = tcp(parent.listeners["ingress-0"])
    client = http.client.HTTPConnection(host, port, timeout=10)
    client.request("GET", "/orders/42")
    answer = client.getresponse()
    assert (answer.status, answer.read()) == (200, b"legacy app: /orders/42")
    client.close()

    # Out: the unmodified app dials the API by name; /etc/hosts sends it to the forward.
    # Its TLS, checked against the API's name, ends at the API, not at the parent.
    context = relay_ca.client_context()
    raw = socket.create_connection(tcp(egress.listeners["out"]), timeout=10)
    with context.wrap_socket(raw, server_hostname=TLS_NAME) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") or reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(b"hello through the tunnel\n")
    assert parent.stats()["egress-forward-0"].connections_total == 1

    # The allowlist refuses everything else: a CONNECT elsewhere through the proxy ...
    proxy = enclave_relays(EnclaveEgress(listen=loopback(), parent=parent.listeners["egress"]))
    for target in ("dynamodb.us-west-2.amazonaws.com:443", f"127.0.0.1:{app}"):
        sock, status, head = connect_through(proxy.listeners["enclave-egress"], target)
        sock.close()
        assert status == 403, head


def test_a_forward_the_allowlist_does_not_name_fails_check(tmp_path: Path, capsys) -> None:
    path = tmp_path / "parent.toml"
    path.write_text(
        '[egress]\nallow = [{address = "dynamodb.us-west-2.amazonaws.com", port = 443}]\n'
        '[[egress.forward]]\nlisten = "vsock:ANY:8002"\nto = "s3.us-west-2.amazonaws.com:443"\n'
    )
    assert main(["parent", "--config", str(path), "--check"]) == 2
    assert "egress.forward[0].to: forward destination" in capsys.readouterr().err


def test_the_recipe_files_parent_config_is_valid(tmp_path: Path) -> None:
    """The recipe's own parent.toml passes --check (the docs test also loads it)."""
    text = (Path(__file__).parents[2] / "docs/recipes/legacy-web-app.md").read_text()
    block = text.split("```toml parent-config\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "parent.toml"
    path.write_text(block)
    assert main(["parent", "--config", str(path), "--check"]) == 0
