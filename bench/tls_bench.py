"""Attested TLS connections against plain TLS connections to the same server, same run.

Server: an :class:`attested.tls.AttestedTlsIngress` with the simulated NSM in front of
a trivial HTTP app on loopback. Each connection does a full TLS handshake (no session
resumption) and one small GET.

* Baseline: a plain client context (no certificate check at all) to the same ingress.
* Repeat: the attested context with one :class:`~attested.tls.PeerCheck` kept across
  connections (verification cached per certificate): the target is <= 1.2x baseline.
* First: a new ``PeerCheck`` per connection, so every connection verifies the document
  (chain and ES384 signature), for reference.

Rounds alternate and the median round is reported: these machines are noisy.

Usage: python bench/tls_bench.py [--rounds N] [--connections N]
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import logging
import ssl
import statistics
import threading
import time
from collections.abc import Callable

from attested import Policy, Verifier
from attested.net import parse_address
from attested.simulator import SimulatedNsm
from attested.tls import AttestedTlsIngress, PeerCheck, attested_context

PCR0 = bytes.fromhex("a1" * 48)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # One write: headers and body in separate small writes would meet Nagle's
        # algorithm and delayed ACKs (40 ms per connection), hiding what is measured.
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _get(port: int, context: ssl.SSLContext) -> None:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    connection.request("GET", "/")
    connection.getresponse().read()
    connection.close()


def _time(count: int, connect: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(count):
        connect()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    with SimulatedNsm(pcrs={0: PCR0}) as nsm:
        ingress = AttestedTlsIngress(
            listen=parse_address("tcp:127.0.0.1:0"),
            to=parse_address(f"tcp:127.0.0.1:{app.server_address[1]}"),
            attestation=nsm,
        )
        with ingress:
            port = ingress.listeners["attested-tls"].port
            assert port is not None
            verifier = Verifier(trust_root=nsm.trust_root)
            policy = Policy(pcrs={0: PCR0})
            plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            plain.check_hostname = False
            plain.verify_mode = ssl.CERT_NONE
            cached = attested_context(PeerCheck(verifier, policy))

            def first() -> None:
                _get(port, attested_context(PeerCheck(verifier, policy, cache_size=0)))

            _get(port, plain)
            _get(port, cached)  # warm up: the one verification of the cached context
            rows: dict[str, list[float]] = {"plain": [], "repeat": [], "first": []}
            for _ in range(args.rounds):
                rows["plain"].append(_time(args.connections, lambda: _get(port, plain)))
                rows["repeat"].append(_time(args.connections, lambda: _get(port, cached)))
                rows["first"].append(_time(max(args.connections // 4, 1), first))
    app.shutdown()
    base = statistics.median(rows["plain"])
    print(f"plain TLS connection + GET:          {base * 1e3:7.2f} ms (baseline)")
    for name, label in (("repeat", "attested, cached per certificate"),
                        ("first", "attested, verified every time")):  # fmt: skip
        value = statistics.median(rows[name])
        print(f"{label + ':':36} {value * 1e3:7.2f} ms  {value / base:4.2f}x")
    print("target: attested repeat connections <= 1.2x plain TLS")


if __name__ == "__main__":
    main()
