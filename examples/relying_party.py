"""A relying party: ask the enclave for a fresh attestation document and verify it.

The enclave's service hands out documents at ``POST /v1/attestation`` with the caller's
nonce, user data and public key inside. A relying party (a peer, an auditor, a client
that wants to send secrets to this enclave) sends a fresh random nonce, then verifies the
document with an explicit trust root, the PCRs it expects, and that nonce, so an old
document cannot be replayed.

Usage::

    python examples/relying_party.py --socket PATH --pcr 0=HEX [--pcr 8=HEX ...]
        [--trust-root ROOT.pem]   # default: the AWS Nitro Enclaves root
        [--user-data TEXT]

With the simulated NSM (development), pass its ``STATE_DIR/root.pem`` as the trust root.
Here the document comes over the enclave's own Unix socket; a remote relying party
reaches the same API through a relay (``attested relay``), or asks the application to
forward the nonce. Exit status: 0 verified, 1 refused, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from datetime import timedelta

from attested import AttestedError, Policy, TrustRoot, Verifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import DEFAULT_SOCKET, SecretsClient, ServiceError


def _pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not index.isdigit():
        raise argparse.ArgumentTypeError(f"--pcr takes INDEX=HEX, not {text!r}")
    try:
        return int(index), bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PCR{index} is not hex") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify the enclave's attestation.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--trust-root", help="root certificate PEM (default: AWS Nitro root)")
    parser.add_argument("--pcr", type=_pcr, action="append", required=True)
    parser.add_argument("--user-data", default="")
    args = parser.parse_args(argv)

    if args.trust_root:
        with open(args.trust_root, "rb") as handle:
            root = TrustRoot.from_pem(handle.read(), name=args.trust_root)
    else:
        root = TrustRoot.aws_nitro()
    nonce = os.urandom(32)  # fresh for every check: a replayed document fails
    user_data = args.user_data.encode()
    request = {"nonce": base64.b64encode(nonce).decode()}
    if user_data:
        request["user_data"] = base64.b64encode(user_data).decode()

    with SecretsClient(args.socket) as client:
        try:
            answer = client.call("POST", "/v1/attestation", request)
        except ServiceError as exc:
            print(f"the service refused: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    document = base64.b64decode(answer["document"])

    policy = Policy(
        pcrs=dict(args.pcr),
        nonce=nonce,
        user_data=user_data or None,
        max_age=timedelta(minutes=5),
    )
    try:
        verified = Verifier(trust_root=root).verify(document, policy=policy)
    except AttestedError as exc:
        print(f"NOT verified: {exc}", file=sys.stderr)
        return 1
    print(f"verified: module {verified.module_id}, made {verified.timestamp.isoformat()}")
    for index in sorted(dict(args.pcr)):
        print(f"  PCR{index} = {verified.pcrs[index].hex()}")
    print(f"  nonce matches ({nonce.hex()[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
