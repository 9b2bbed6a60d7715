"""The attested KMS client: envelope opening cost, key generations, per-call overhead.

1. Envelope opening against its raw cost, measured in the same run: one RSA-2048
   RSA-OAEP(SHA-256) decrypt of the wrapped key plus the AES-256-CBC decrypt, with
   nothing else (no parsing, no checks). Rounds alternate; the median ratio is reported
   (target: at most 1.15x).
2. RSA key generations per KMS call, counted by wrapping
   ``rsa.generate_private_key`` (target: zero).
3. Per-call client overhead beyond the KMS round trip (the attestation document and
   the envelope), p50 and p99, measured inside real boto3 calls against the tests' local
   KMS stand-in. The overhead is timed inside the client, so the server does not change
   it (``bench/service_bench.py`` and ``bench/emulator_bench.py`` measure whole calls
   against the KMS emulator). The attestation documents come from the test PKI
   signer (a real NSM has its own cost). The plain round trip (the same call without
   Recipient) is measured in the same run for scale.

Usage: python bench/kmsclient_bench.py [--rounds N] [--opens N] [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attested.kms import KmsClient, NetworkSettings, RecipientKey, RetryPolicy
from attested.kms import client as client_module
from attested.kms._cms import parse_envelope
from attested.kms._recipient import open_envelope
from attested.kms.credentials import StaticCredentials
from tests.kit import make_kit
from tests.kms import envelopes
from tests.kms.servers import SEALED, DocumentProvider, KmsStandIn

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _raw(private: rsa.RSAPrivateKey, wrapped: bytes, iv: bytes, content: bytes) -> bytes:
    cek = private.decrypt(wrapped, OAEP)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    return decryptor.update(content) + decryptor.finalize()


def envelope_ratio(rounds: int, opens: int) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = RecipientKey.from_private_key(private)
    for size in (32, 4096):
        blob = envelopes.build(bytes(size), private.public_key())
        parsed = parse_envelope(blob)
        parts = (parsed.encrypted_key, parsed.iv, parsed.encrypted_content)
        ratios, ours_us, raw_us = [], [], []
        open_envelope(blob, key)
        _raw(private, *parts)
        for round_number in range(rounds):
            # Short blocks in alternating order, so that clock-speed drift on a shared
            # machine hits both sides alike.
            timings = {}
            order = ("raw", "ours") if round_number % 2 else ("ours", "raw")
            for side in order:
                start = time.perf_counter()
                if side == "raw":
                    for _ in range(opens):
                        _raw(private, *parts)
                else:
                    for _ in range(opens):
                        open_envelope(blob, key)
                timings[side] = (time.perf_counter() - start) / opens
            ratios.append(timings["ours"] / timings["raw"])
            ours_us.append(timings["ours"] * 1e6)
            raw_us.append(timings["raw"] * 1e6)
        print(
            f"envelope ({size}-byte plaintext): open_envelope {statistics.median(ours_us):.0f} us,"
            f" raw RSA-OAEP + AES-CBC {statistics.median(raw_us):.0f} us"
        )
        print(
            f"RATIO envelope opening vs raw decrypts ({size} B): "
            f"{statistics.median(ratios):.3f}x (min {min(ratios):.3f}x, max {max(ratios):.3f}x;"
            " target <= 1.15x)"
        )


class _Timed:
    """Wraps a callable and records how long each call took."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - start)


class _TimedProvider:
    def __init__(self, inner: DocumentProvider) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def get_attestation_document(self, **kwargs: Any) -> bytes:
        start = time.perf_counter()
        try:
            return self.inner.get_attestation_document(**kwargs)
        finally:
            self.seconds.append(time.perf_counter() - start)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def client_overhead(calls: int) -> None:
    print("per-call overhead, timed inside the client, against the tests' local KMS stand-in")
    kit = make_kit()
    generated = 0
    real_generate = rsa.generate_private_key

    def counting(*args: Any, **kwargs: Any) -> rsa.RSAPrivateKey:
        nonlocal generated
        generated += 1
        return real_generate(*args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(rsa, "generate_private_key", counting)
    timed_open = _Timed(open_envelope)
    patch.setattr(client_module, "open_envelope", timed_open)
    try:
        with KmsStandIn() as kms:
            provider = _TimedProvider(DocumentProvider(kit))
            credentials = StaticCredentials(
                access_key_id="AKIABENCHEXAMPLE0001",
                secret_access_key="bench/secret",  # noqa: S106 - a stand-in that checks nothing
            )
            client = KmsClient(
                region="us-east-1",
                attestation=provider,
                credentials=credentials,
                network=NetworkSettings(endpoint_url=kms.url),
                retry=RetryPolicy(max_attempts=1),
            )
            generated_before_calls = generated
            plain = client._boto  # the same connection pool, without Recipient
            totals, plains = [], []
            for i in range(calls + 10):
                start = time.perf_counter()
                client.decrypt(SEALED + b"bench")
                total = time.perf_counter() - start
                start = time.perf_counter()
                plain.decrypt(CiphertextBlob=SEALED + b"bench")
                plain_time = time.perf_counter() - start
                if i >= 10:  # warm-up
                    totals.append(total)
                    plains.append(plain_time)
            client.close()
    finally:
        patch.undo()
    attestation = provider.seconds[10:]
    envelope = timed_open.seconds[10:]
    overhead = [a + e for a, e in zip(attestation, envelope, strict=True)]
    per_call = (generated - generated_before_calls) / calls
    print(
        f"RSA key generations: {generated_before_calls} at client creation (the process "
        f"key), {per_call:.0f} per call over {calls} calls (target 0)"
    )
    print(
        f"client overhead per call (attestation + envelope): p50 {_pct(overhead, 0.5):.2f} ms,"
        f" p99 {_pct(overhead, 0.99):.2f} ms"
    )
    print(
        f"  attestation p50 {_pct(attestation, 0.5):.2f} ms, envelope p50 "
        f"{_pct(envelope, 0.5):.2f} ms; whole attested call p50 {_pct(totals, 0.5):.2f} ms, "
        f"plain call (no Recipient) p50 {_pct(plains, 0.5):.2f} ms"
    )
    print(
        "RATIO attested call vs plain call to the same stand-in (p50): "
        f"{statistics.median(totals) / statistics.median(plains):.2f}x (the stand-in also "
        "parses the document and builds the envelope, so this bounds the overhead from above)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--opens", type=int, default=40)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    envelope_ratio(args.rounds, args.opens)
    client_overhead(args.calls)


if __name__ == "__main__":
    main()
