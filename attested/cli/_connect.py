"""``attested connect``: an HTTPS GET that first checks the server is the attested enclave."""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
import urllib.parse
import warnings

from attested.cli._common import (
    EXIT_ENV,
    EXIT_FAIL,
    EXIT_OK,
    epilog,
    pcr_map,
    usage_error,
)
from attested.cli._verify import _trust_root, add_pcr_and_root_arguments
from attested.errors import MalformedError, PeerNotAttested, SecurityWarning
from attested.policy import Policy
from attested.tls import PeerCheck, attested_context, fetch_fresh
from attested.verify import Verifier

MAX_BODY = 64 * 1024 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``connect``."""
    parser = subparsers.add_parser(
        "connect",
        help="GET an https:// URL from an attested enclave, verifying it in the handshake",
        description="Open a TLS connection, verify the attestation document bound to the "
        "server's certificate (chain to the trust root, signature, PCRs, and that it binds "
        "the key this handshake used), then GET the URL and print the body. Nothing is "
        "sent to a server that fails; every failing check is named.",
        epilog=epilog(
            [
                "attested connect https://enclave.example.com:8443/ --pcr 0=HEX --pcr 1=HEX",
                "attested connect https://127.0.0.1:8443/ --root sim/root.pem --pcr 0=HEX --nonce",
            ],
            ok="verified, and the body was printed",
            fail="the server is not an attested enclave matching the policy",
            usage="the URL or an option is wrong",
            env="the connection failed",
            topic="attested-tls",
        ),
    )
    parser.add_argument("url", metavar="URL", help="https://HOST:PORT/PATH")
    add_pcr_and_root_arguments(parser)
    parser.add_argument(
        "--nonce",
        action="store_true",
        help="also ask for a fresh document with a random nonce on the same connection",
    )
    parser.add_argument(
        "--allow-debug",
        action="store_true",
        help="accept debug-mode enclaves (all-zero PCR0). Danger: their memory is readable "
        "by the parent instance",
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=30.0, help="socket timeout (30)"
    )
    parser.set_defaults(handler=_run)


def _target(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise usage_error(f"{url!r:.80} is not an https://HOST[:PORT]/PATH URL")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise usage_error(f"{url!r:.80}: {exc}") from exc
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.hostname, port, path


def _run(args: argparse.Namespace) -> int:
    host, port, path = _target(args.url)
    pcrs = pcr_map(args.pcr)
    notes = []
    if not pcrs:
        notes.append("no --pcr given: any enclave image with a genuine document is accepted")
    if args.allow_debug:
        notes.append("--allow-debug: debug-mode enclaves are accepted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # said once, in the notes
        try:
            policy = Policy(pcrs=pcrs, allow_debug=args.allow_debug, unsafe_any_pcrs=not pcrs)
        except ValueError as exc:
            raise usage_error(str(exc)) from exc
    check = PeerCheck(Verifier(trust_root=_trust_root(args.root)), policy, cache_size=0)
    for note in notes:  # after the trust root: a bad --root is one line alone
        print(f"note: {note}", file=sys.stderr)
    connection = http.client.HTTPSConnection(
        host, port, context=attested_context(check), timeout=args.timeout
    )
    try:
        return _get(connection, check, path, fresh=args.nonce)
    except PeerNotAttested as exc:
        count = len(exc.failures)
        print(
            f"NOT VERIFIED: {host}:{port} is not an attested enclave matching the policy "
            f"({count} check{'s' if count != 1 else ''} failed)",
            file=sys.stderr,
        )
        for failure in exc.failures:
            print(f"  - {failure}", file=sys.stderr)
        return EXIT_FAIL
    except MalformedError as exc:
        print(f"NOT VERIFIED: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        print(f"attested connect: cannot reach {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_ENV
    finally:
        connection.close()


def _get(
    connection: http.client.HTTPSConnection, check: PeerCheck, path: str, *, fresh: bool
) -> int:
    connection.connect()
    sock = connection.sock
    peer = getattr(sock, "attested_peer", None)
    if peer is None:  # pragma: no cover - the context sets it or raises
        raise PeerNotAttested(["binding: the handshake was not checked"])
    if fresh:
        peer = fetch_fresh(connection, check)
    attestation = peer.attestation
    pcr0 = attestation.pcrs.get(0, b"").hex()
    print(
        f"VERIFIED: {attestation.module_id} (PCR0 {pcr0[:16]}...), TLS key sha256 "
        f"{peer.spki_sha256[:16]}...{', fresh document with our nonce' if fresh else ''}",
        file=sys.stderr,
    )
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        print(f"attested connect: the body is larger than {MAX_BODY} bytes", file=sys.stderr)
        return EXIT_ENV
    if not 200 <= response.status < 300:
        print(f"note: HTTP {response.status} {response.reason}", file=sys.stderr)
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    return EXIT_OK
