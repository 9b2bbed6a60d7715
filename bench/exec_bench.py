"""``attested exec``: opening 10 secrets at start-up against 10 sequential direct decrypts.

Both sides run in the same run, against the same ``attested emulator kms`` process (with
``--latency`` standing in for the round trip to KMS through the relays), with the same
simulated NSM and a fresh attestation document per call:

* baseline: 10 ``KmsClient.decrypt`` calls one after the other, as an app that opens its
  secrets itself at start would;
* exec: the start-up step that opens the 10 ``[[secrets]]`` (``open_secrets``, the code
  ``attested exec`` runs, with its fetch and its parallel opening).

Rounds alternate the order; the median ratio exec / baseline is reported (target: at
most 0.5x, thanks to parallel opening). For scale, the whole ``attested exec`` process,
from its start to the app's first line, is timed too (Python's own start-up included).

Usage: python bench/exec_bench.py [--rounds N] [--latency SECONDS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from attested.enclave import open_provider
from attested.exec import ExecSettings, SecretSpec
from attested.exec._config import InlineCiphertext
from attested.exec._open import open_secrets
from attested.exec._stores import Stores
from attested.kms import KmsClient, NetworkSettings
from attested.kms.credentials import StaticCredentials
from attested.simulator import SimulatedNsm
from tests.exec.support import (
    PCR0,
    EnclaveToml,
    b64,
    clean_env,
    exec_command,
    start_emulator,
    stop_process,
)

SECRETS = 10


def _client(url: str, state: Path, provider: object) -> KmsClient:
    return KmsClient(
        region="us-east-1",
        attestation=provider,  # type: ignore[arg-type]
        credentials=StaticCredentials(
            access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
        ),
        network=NetworkSettings(endpoint_url=url, max_pool_connections=SECRETS),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--latency", type=float, default=0.03, help="KMS round trip to stand in for (seconds)"
    )
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="att-exec-bench-", dir="/tmp"))
    SimulatedNsm(state_dir=state, pcrs={0: PCR0}).close()
    emulator = start_emulator(state, state / "emulator.log", "--latency", str(args.latency))
    try:
        blobs = [
            emulator.encrypt(emulator.good, f"secret-{i}".encode(), {"n": str(i)})
            for i in range(SECRETS)
        ]
        specs = [
            SecretSpec(
                name=f"s{i}",
                source=InlineCiphertext(blob=blob),
                key_id=emulator.good,
                encryption_context={"n": str(i)},
                env=f"S{i}",
            )
            for i, blob in enumerate(blobs)
        ]
        provider = open_provider("simulated", state_dir=state, pcrs={0: PCR0})
        kms = _client(emulator.url, state, provider)
        stores = Stores(
            region="us-east-1",
            credentials=StaticCredentials(
                access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
            ),
            network=NetworkSettings(),
            settings=ExecSettings(),
        )
        kms.decrypt(blobs[0], key_id=emulator.good, encryption_context={"n": "0"})  # warm-up
        sequential, parallel = [], []
        for round_number in range(args.rounds):
            order = ("seq", "par") if round_number % 2 else ("par", "seq")
            for side in order:
                start = time.perf_counter()
                if side == "seq":
                    for i, blob in enumerate(blobs):
                        kms.decrypt(blob, key_id=emulator.good, encryption_context={"n": str(i)})
                    sequential.append(time.perf_counter() - start)
                else:
                    opened, failures = open_secrets(specs, kms=kms, stores=stores, parallel=16)
                    parallel.append(time.perf_counter() - start)
                    assert not failures, failures
                    assert len(opened) == SECRETS
                    opened.clear()
        kms.close()
        provider.close()
        ratios = [p / s for p, s in zip(parallel, sequential, strict=True)]
        print(
            f"{SECRETS} secrets, KMS latency {args.latency * 1000:.0f} ms, {args.rounds} rounds: "
            f"sequential direct decrypts median {statistics.median(sequential) * 1000:.0f} ms, "
            f"exec's parallel opening median {statistics.median(parallel) * 1000:.0f} ms"
        )
        print(
            f"RATIO exec start-up opening vs sequential decrypts (median): "
            f"{statistics.median(ratios):.2f}x (target at most 0.5x)"
        )
        whole = _whole_process(emulator.url, emulator.good, blobs, state)
        print(f"whole attested exec process to the app's first line: {whole:.2f} s (for scale)")
    finally:
        stop_process(emulator.process)
        shutil.rmtree(state, ignore_errors=True)


def _whole_process(url: str, key: str, blobs: list[bytes], state: Path) -> float:
    directory = Path(tempfile.mkdtemp(prefix="att-exec-bench-run-", dir="/tmp"))
    try:
        toml = EnclaveToml(directory=directory, state=state, emulator_url=url, allowed_keys=[key])
        for i, blob in enumerate(blobs):
            toml.secrets.append(
                {"name": f"s{i}", "ciphertext": b64(blob), "key_id": key,
                 "encryption_context": {"n": str(i)}, "env": f"S{i}"}
            )  # fmt: skip
        command = exec_command(toml.write(), ["sh", "-c", "echo started"])
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, env=clean_env(), check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0 or b"started" not in done.stdout:
            raise SystemExit(f"attested exec failed: {done.stderr.decode()}")
        return elapsed
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("HTTPS_PROXY", None)
    main()
