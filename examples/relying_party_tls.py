"""A relying party over attested TLS: GET a page only from the enclave image it expects.

The enclave runs its app behind ``attested exec``'s ``[[ingress]]`` with
``tls = "attested"`` (docs/attested-tls.md). This client checks, inside the TLS
handshake, that the server's certificate carries a genuine attestation document with the
expected PCRs that binds the key of this very handshake; only then does it send its
request. With ``--nonce`` it also asks for a document made now, for a random nonce.

Usage::

    python examples/relying_party_tls.py https://HOST:PORT/PATH --pcr 0=HEX [--pcr 8=HEX ...]
        [--trust-root ROOT.pem]   # default: the AWS Nitro Enclaves root
        [--nonce]

With the simulated NSM (development), pass its ``STATE_DIR/root.pem`` as the trust root.
Exit status: 0 verified (the body is printed), 1 refused, 2 usage, 3 connection failed.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.parse

from attested import Policy, TrustRoot, Verifier
from attested.errors import PeerNotAttested
from attested.tls import PeerCheck, attested_context, fetch_fresh


def _pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not index.isdigit():
        raise argparse.ArgumentTypeError(f"--pcr takes INDEX=HEX, not {text!r}")
    try:
        return int(index), bytes.fromhex(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--pcr {index}: not hex") from exc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--pcr", action="append", type=_pcr, required=True)
    parser.add_argument("--trust-root", help="PEM root (default: AWS Nitro Enclaves Root-G1)")
    parser.add_argument("--nonce", action="store_true", help="also check a fresh document")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "https" or not url.hostname:
        parser.error("the URL must be https://HOST[:PORT]/PATH")

    if args.trust_root:
        with open(args.trust_root, "rb") as handle:
            root = TrustRoot.from_pem(handle.read(), name=args.trust_root)
    else:
        root = TrustRoot.aws_nitro()
    # One PeerCheck per policy: it caches each certificate's verification.
    check = PeerCheck(Verifier(trust_root=root), Policy(pcrs=dict(args.pcr)))
    connection = http.client.HTTPSConnection(
        url.hostname, url.port or 443, context=attested_context(check), timeout=30
    )
    try:
        connection.connect()  # the handshake runs the check; nothing is sent before it
        peer = connection.sock.attested_peer  # type: ignore[union-attr]
        if args.nonce:
            peer = fetch_fresh(connection, check)
        print(f"verified {peer.attestation.module_id}, key {peer.spki_sha256}", file=sys.stderr)
        connection.request("GET", url.path or "/")
        sys.stdout.buffer.write(connection.getresponse().read())
        return 0
    except PeerNotAttested as refused:
        print("refused: the server is not the expected enclave:", file=sys.stderr)
        for failure in refused.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot connect: {exc}", file=sys.stderr)
        return 3
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
