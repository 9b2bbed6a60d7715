"""Decrypts through ``attested serve`` against direct library calls and a per-call process.

Setup: the KMS emulator runs as its own process (``attested emulator kms``) trusting a
simulated NSM root; ``attested serve`` runs as its own process (simulated NSM on the same
root, environment credentials); a key's policy pins PCR0. Every decrypt carries a fresh
attestation document. One caller, one request at a time, keep-alive everywhere:

* service: ``POST /v1/decrypt`` over the Unix socket (``http.client``, as
  ``examples/client.py`` does), JSON and base64 both ways;
* direct: :meth:`attested.kms.KmsClient.decrypt` in this process (the same library the
  service uses, the same simulated NSM root, the same emulator);
* per-call process, like ``kmstool-enclave-cli``: for each decrypt a new process starts,
  makes a new RSA-2048 key, asks a new attestation document, calls KMS and opens the
  envelope. (Our baseline process is Python; kmstool is C and starts faster, so the time
  of a bare ``python -c pass`` is printed for scale.)

Service and direct run in alternating rounds (drift on a shared machine hits both); the
ratios use the medians over all calls. Targets: service p50 at most 1.3x direct; the
per-call process at least 20x slower than the service.

Usage: python bench/service_bench.py [--rounds N] [--calls N] [--processes N]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time

from _stack import PLAINTEXT, ROOT, pct, report, stack

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from tests.kit import PCR0
from tests.service.helpers import ApiClient

# One kmstool-like call: new process, new RSA-2048 key, new document, KMS, envelope.
PER_CALL = """
import base64, os, sys
from cryptography.hazmat.primitives.asymmetric import rsa
from attested.kms import KmsClient, NetworkSettings, RecipientKey
from attested.kms.credentials import StaticCredentials
from attested.simulator import SimulatedNsm
import logging; logging.disable(logging.WARNING)
key = RecipientKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
nsm = SimulatedNsm(state_dir=os.environ["STATE"], pcrs={0: bytes.fromhex(os.environ["PCR0"])})
kms = KmsClient(region="us-east-1", attestation=nsm, recipient_key=key,
    credentials=StaticCredentials(
        access_key_id=os.environ["AK"], secret_access_key=os.environ["SK"]),
    network=NetworkSettings(endpoint_url=os.environ["URL"]))
out = kms.decrypt(base64.b64decode(os.environ["BLOB"]), key_id=os.environ["KEY"])
sys.stdout.write(str(len(out.plaintext)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=100, help="decrypts per side per round")
    parser.add_argument("--processes", type=int, default=6, help="per-call process runs")
    args, _ = parser.parse_known_args()

    with stack() as running:
        blob, key = running.blob, running.key
        direct = running.direct_client()
        api = ApiClient(str(running.work / "api.sock"))
        body = json.dumps({"ciphertext_blob": base64.b64encode(blob).decode(), "key_id": key})

        def through_service() -> None:
            answer = api.request("POST", "/v1/decrypt", body.encode())
            assert answer.status == 200, answer.body
            assert base64.b64decode(json.loads(answer.body)["plaintext"]) == PLAINTEXT

        def direct_call() -> None:
            assert direct.decrypt(blob, key_id=key).plaintext.reveal() == PLAINTEXT

        for _ in range(10):  # warm both paths (connections, CA chain caches)
            through_service()
            direct_call()
        timings: dict[str, list[float]] = {"service": [], "direct": []}
        for number in range(args.rounds):
            order = ("service", "direct") if number % 2 else ("direct", "service")
            for side in order:
                call = through_service if side == "service" else direct_call
                for _ in range(args.calls):
                    start = time.perf_counter()
                    call()
                    timings[side].append(time.perf_counter() - start)
        api.close()
        direct.close()

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "STATE": str(running.state),
            "PCR0": PCR0.hex(),
            "AK": DEV_ACCESS_KEY_ID,
            "SK": DEV_SECRET_ACCESS_KEY,
            "URL": running.emulator_url,
            "BLOB": base64.b64encode(blob).decode(),
            "KEY": key,
        }
        per_call: list[float] = []
        for _ in range(args.processes):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", PER_CALL], env=env, capture_output=True, check=False
            )
            per_call.append(time.perf_counter() - start)
            if done.stdout != str(len(PLAINTEXT)).encode():
                raise SystemExit(f"per-call process failed: {done.stderr.decode()[-500:]}")
        bare: list[float] = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - start)

    print(f"decrypt of {len(PLAINTEXT)} bytes with Recipient, one caller, against the emulator")
    report("through attested serve (unix)", timings["service"], 34)
    report("direct KmsClient calls", timings["direct"], 34)
    report("per-call process (kmstool-like)", per_call, 34)
    print(f"  (a bare 'python -c pass' takes {statistics.median(bare) * 1e3:.0f} ms here)")
    service_p50 = statistics.median(timings["service"])
    direct_p50 = statistics.median(timings["direct"])
    print(
        f"RATIO service vs direct library calls (p50): {service_p50 / direct_p50:.3f}x "
        f"(p99 {pct(timings['service'], 0.99) / pct(timings['direct'], 0.99):.3f}x; "
        "target <= 1.3x)"
    )
    print(
        f"RATIO per-call process vs service (p50): "
        f"{statistics.median(per_call) / service_p50:.1f}x (target >= 20x)"
    )


if __name__ == "__main__":
    main()
