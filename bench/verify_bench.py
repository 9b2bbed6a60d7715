"""Attestation documents verified per second on one core, against a naive baseline.

Baseline (measured in the same run): decode, verify the document signature and validate
the full certificate chain for every document (``Verifier(cache_size=0)``).
Ours: the same verifier with its CA-chain cache, which still checks the leaf's validity
and profile and the document signature every time, and the leaf's signature by its
issuer once per exact certificate bytes (an NSM signs many documents with one signing
certificate for up to 3 hours, as each vector here is verified again every round).

The two are measured in alternating rounds over the real vectors (each verified at its
own timestamp, passed as ``at=``) and the median round is reported: these machines are
noisy.

Usage: python bench/verify_bench.py [--rounds N] [--docs-per-round N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from datetime import datetime
from pathlib import Path

from attested import Policy, SecurityWarning, Verifier, _cose, parse_attestation
from attested._chain import ChainValidator
from attested.trust import TrustRoot

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "attestation"


def _docs() -> list[bytes]:
    return [p.read_bytes() for p in sorted(VECTORS.glob("real_attestation_*.cbor"))]


def _rate(
    verifier: Verifier, docs: list[tuple[bytes, datetime]], policy: Policy, count: int
) -> float:
    start = time.perf_counter()
    for i in range(count):
        data, when = docs[i % len(docs)]
        verifier.verify(data, policy=policy, at=when)
    return count / (time.perf_counter() - start)


def _split(docs: list[bytes], count: int) -> dict[str, float]:
    """Microseconds per document for decode, signature, full chain and cached chain."""
    parsed = [parse_attestation(d) for d in docs]
    root = TrustRoot.aws_nitro()
    naive = ChainValidator(root, cache_size=0)
    cached = ChainValidator(root)
    out: dict[str, float] = {}

    start = time.perf_counter()
    for i in range(count):
        parse_attestation(docs[i % len(docs)])
    out["decode"] = (time.perf_counter() - start) / count * 1e6

    start = time.perf_counter()
    for i in range(count):
        d = parsed[i % len(parsed)]
        _cose.verify_es384(d.cose, d.signing_certificate.public_key())
    out["signature"] = (time.perf_counter() - start) / count * 1e6

    for name, validator in (("chain (full)", naive), ("chain (cached)", cached)):
        start = time.perf_counter()
        for i in range(count):
            d = parsed[i % len(parsed)]
            validator.validate(d.signing_certificate, d.cabundle, d.timestamp)
        out[name] = (time.perf_counter() - start) / count * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--docs-per-round", type=int, default=140)
    args = parser.parse_args()

    warnings.simplefilter("ignore", SecurityWarning)
    raw = _docs()
    # Each real document is verified at its own timestamp, given explicitly (they expired).
    docs = [(d, parse_attestation(d).timestamp) for d in raw]
    policy = Policy(pcrs={}, unsafe_any_pcrs=True, allow_debug=True)
    naive = Verifier.aws_nitro(cache_size=0)
    ours = Verifier.aws_nitro()
    _rate(naive, docs, policy, len(docs))  # warm up both
    _rate(ours, docs, policy, len(docs))

    naive_rates, our_rates, ratios = [], [], []
    for _ in range(args.rounds):
        n = _rate(naive, docs, policy, args.docs_per_round)
        o = _rate(ours, docs, policy, args.docs_per_round)
        naive_rates.append(n)
        our_rates.append(o)
        ratios.append(o / n)

    split = _split(raw, args.docs_per_round)
    print(f"documents: {len(docs)} real vectors, {args.rounds} rounds of {args.docs_per_round}")
    print(f"baseline (full chain every time): {statistics.median(naive_rates):8.0f} docs/s")
    print(f"attested (CA-chain cache):        {statistics.median(our_rates):8.0f} docs/s")
    print(
        "split per document (us): "
        + ", ".join(f"{name} {value:.0f}" for name, value in split.items())
    )
    print(
        f"RATIO verify throughput vs naive baseline: {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x; target >= 3x)"
    )


if __name__ == "__main__":
    main()
