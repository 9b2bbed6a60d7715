"""Decrypt-with-Recipient requests per second against the KMS emulator, and where time goes.

Setup: the emulator runs as its own process (``attested emulator kms``, as users run it)
trusting a simulated NSM root; one boto3 client per thread talks to it over loopback
HTTP/1.1 keep-alive. A key's policy pins PCR0 and PCR8; every request carries a fresh
attestation document whose public key is an RSA-2048 recipient key.

Baseline (same run, alternating rounds, median reported): a plain Decrypt of the same
ciphertext size without Recipient, on a key with the default policy. The ratio shows what
attestation costs per request.

Split (measured in process on the same inputs, as a share of one Recipient request's
time): attestation verification (``Verifier.verify``: COSE, chain with its CA cache,
ES384), key policy evaluation, and CMS envelope construction (AES-CBC + RSA-OAEP + BER).

Usage: python bench/emulator_bench.py [--rounds N] [--requests N] [--clients N]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attested.emulator import (  # noqa: E402 - after the path set-up
    DEV_ACCESS_KEY_ID,
    DEV_ARN,
    DEV_SECRET_ACCESS_KEY,
    PolicyRequest,
    evaluate_key_policy,
    parse_key_policy,
    recipient_condition_values,
)
from attested.emulator._cms_writer import build_envelope  # noqa: E402
from attested.emulator._service import KmsService  # noqa: E402
from attested.emulator._store import KeyStore  # noqa: E402
from tests.kit import PCR0, PCR8, make_kit  # noqa: E402

ACCOUNT = "111122223333"


def _policy() -> str:
    actions = ["kms:Decrypt"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "NotAction": actions,
                    "Resource": "*",
                },
                {
                    "Sid": "Enclave",
                    "Effect": "Allow",
                    "Principal": {"AWS": DEV_ARN},
                    "Action": actions,
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {
                            "kms:RecipientAttestation:ImageSha384": PCR0.hex(),
                            "kms:RecipientAttestation:PCR0": PCR0.hex(),
                            "kms:RecipientAttestation:PCR8": PCR8.hex(),
                        }
                    },
                },
            ],
        }
    )


def _start(state: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state", str(state),
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(30):
            process.kill()
            raise SystemExit("the emulator did not start")
    return process, process.stdout.readline().decode().strip()


def _client(session: boto3.session.Session, url: str) -> Any:
    return session.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id=DEV_ACCESS_KEY_ID,
        aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4),
    )


def _rate(clients: list[Any], call: Callable[[Any, int], None], per_client: int) -> float:
    errors: list[BaseException] = []

    def work(kms: Any) -> None:
        try:
            for i in range(per_client):
                call(kms, i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"request failed: {errors[0]!r}")
    return len(clients) * per_client / elapsed


def _per_call_us(func: Callable[[int], object], count: int) -> float:
    func(0)
    start = time.perf_counter()
    for i in range(count):
        func(i)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--clients", type=int, default=1, help="concurrent boto3 clients")
    args = parser.parse_args()

    kit = make_kit(datetime.now(UTC))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    documents = [
        kit.document(kit.payload(timestamp=int(time.time() * 1000) + i, public_key=spki))
        for i in range(64)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        (state / "root.pem").write_bytes(kit.pki.root.certificate.public_bytes(Encoding.PEM))
        process, url = _start(state)
        try:
            session = boto3.session.Session()
            clients = [_client(session, url) for _ in range(args.clients)]
            admin = clients[0]
            pinned = admin.create_key(Policy=_policy())["KeyMetadata"]["KeyId"]
            plain = admin.create_key()["KeyMetadata"]["KeyId"]
            secret = os.urandom(32)
            pinned_blob = admin.encrypt(KeyId=pinned, Plaintext=secret)["CiphertextBlob"]
            plain_blob = admin.encrypt(KeyId=plain, Plaintext=secret)["CiphertextBlob"]

            def with_recipient(kms: Any, i: int) -> None:
                answer = kms.decrypt(
                    CiphertextBlob=pinned_blob,
                    Recipient={
                        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                        "AttestationDocument": documents[i % len(documents)],
                    },
                )
                assert "CiphertextForRecipient" in answer

            def baseline(kms: Any, i: int) -> None:
                assert kms.decrypt(CiphertextBlob=plain_blob)["Plaintext"] == secret

            per_client = max(1, args.requests // args.clients)
            _rate(clients, with_recipient, 20)  # warm up: connections, caches
            _rate(clients, baseline, 20)
            recipient_rates, baseline_rates, ratios = [], [], []
            for _ in range(args.rounds):
                b = _rate(clients, baseline, per_client)
                r = _rate(clients, with_recipient, per_client)
                baseline_rates.append(b)
                recipient_rates.append(r)
                ratios.append(r / b)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()

    # In-process split on the same inputs.
    service = KmsService(
        region="us-east-1",
        account_id=ACCOUNT,
        trust_root=kit.root,
        store=KeyStore(None, region="us-east-1", account_id=ACCOUNT),
    )
    now = datetime.now(UTC)
    policy = parse_key_policy(_policy())
    verified = service.verifier.verify(documents[0], policy=service.attestation_policy, at=now)
    request = PolicyRequest(
        caller_arn=DEV_ARN,
        principal_arn=DEV_ARN,
        account=ACCOUNT,
        action="kms:Decrypt",
        resource=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{pinned}",
        context={"aws:principalarn": (DEV_ARN,), **recipient_condition_values(verified.pcrs)},
    )
    assert evaluate_key_policy(policy, request).allowed
    public = key.public_key()
    count = 300
    split = {
        "attestation verification": _per_call_us(
            lambda i: service.verifier.verify(
                documents[i % len(documents)], policy=service.attestation_policy, at=now
            ),
            count,
        ),
        "policy evaluation": _per_call_us(lambda i: evaluate_key_policy(policy, request), count),
        "envelope construction": _per_call_us(
            lambda i: build_envelope(secret, spki, public), count
        ),
    }

    rate = statistics.median(recipient_rates)
    request_us = 1e6 / rate * args.clients
    print(
        f"emulator process, {args.clients} boto3 client(s), keep-alive, "
        f"{args.rounds} rounds of {per_client * args.clients} requests"
    )
    print(f"baseline: Decrypt without Recipient:  {statistics.median(baseline_rates):8.0f} req/s")
    print(f"Decrypt with Recipient (attested):    {rate:8.0f} req/s")
    print(f"split of one Recipient request ({request_us:.0f} us at the client):")
    for name, micros in split.items():
        print(f"  {name:26s} {micros:7.0f} us  {micros / request_us * 100:5.1f} %")
    rest = request_us - sum(split.values())
    share = rest / request_us * 100
    print(f"  {'rest (HTTP, SigV4, JSON, client)':26s} {rest:7.0f} us  {share:5.1f} %")
    print(
        f"RATIO Recipient Decrypt throughput vs plain Decrypt: {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
