"""Verify a saved attestation document offline against pinned PCRs and print a report.

Usage: python examples/verify_offline.py DOC PCR0_HEX [--at-document-time]

DOC is a raw (CBOR) attestation document. Exit status 0 when it verifies, 1 when not.
This uses only the public API of ``attested``.
"""

from __future__ import annotations

import sys
import warnings

from attested import AttestedError, Policy, SecurityWarning, Verifier


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, pcr0_hex = argv[0], argv[1]
    archived = "--at-document-time" in argv[2:]
    with open(path, "rb") as handle:
        data = handle.read()
    policy = Policy(pcrs={0: bytes.fromhex(pcr0_hex)})
    verifier = Verifier.aws_nitro()
    try:
        with warnings.catch_warnings():
            if archived:
                # We know: an archived document is checked at its own timestamp.
                warnings.simplefilter("ignore", SecurityWarning)
            verified = verifier.verify(data, policy=policy, at_document_time=archived)
    except AttestedError as exc:
        print(f"not verified: {type(exc).__name__}: {exc}")
        return 1
    print(f"verified: module {verified.module_id}, made {verified.timestamp.isoformat()}")
    for index, value in verified.pcrs.items():
        if any(value):
            print(f"  PCR{index}: {value.hex()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
