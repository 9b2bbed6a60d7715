"""Decrypts through the service's KMS endpoint against direct KmsClient calls, same run.

Setup: the KMS emulator runs as its own process (``attested emulator kms``) trusting a
simulated NSM root; ``attested serve`` runs as its own process with ``[kms_endpoint]``
(simulated NSM on the same root, environment credentials); a key's policy pins PCR0, so
every decrypt carries a fresh attestation document. One caller, one request at a time,
keep-alive everywhere:

* endpoint: a stock boto3 KMS client (dummy credentials) calling ``Decrypt`` on the
  endpoint, which makes the attested call with its KmsClient and answers ``Plaintext``;
  what an unmodified application inside the enclave pays;
* endpoint, minimal client: the same request from ``http.client`` on one keep-alive
  connection (a well-formed SigV4 header: the endpoint checks its shape only), to tell
  the endpoint's own cost from the SDK's;
* direct: :meth:`attested.kms.KmsClient.decrypt` in this process (the same library the
  service uses, the same simulated NSM root, the same emulator).

The three alternate in rounds (drift on a shared machine hits all); the ratios use every
call's time. Target: through the endpoint, p50 at most 1.3x direct. The stock SDK pays
its own client cost (signing, serialising, parsing: about what ``KmsClient`` pays for
the same call) on top of the service's; the minimal client shows what the endpoint
itself adds.

Usage: python bench/kms_endpoint_bench.py [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY  # noqa: E402
from attested.kms import KmsClient, NetworkSettings, RecipientKey  # noqa: E402
from attested.kms.credentials import StaticCredentials  # noqa: E402
from attested.simulator import SimulatedNsm  # noqa: E402
from tests.kit import PCR0  # noqa: E402
from tests.kms_endpoint.stack import key_policy  # noqa: E402

PLAINTEXT = b"a 32-byte database password here"


def _wait(path: Path, process: subprocess.Popen[bytes], what: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{what} did not start")
        time.sleep(0.02)
    time.sleep(0.05)  # the ready file is written atomically; this only spares a retry
    return dict(json.loads(path.read_text()))


def _port(info: dict[str, object], name: str) -> int:
    listeners = info["listeners"]
    assert isinstance(listeners, dict)
    return int(str(listeners[name]).rsplit(":", 1)[1])


def _start_emulator(work: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = work / "emulator.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "emulator", "kms", "--simulated-state", str(state),
         "--ready-file", str(ready), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{_port(_wait(ready, process, 'the emulator'), 'kms')}"


def _start_service(
    work: Path, state: Path, url: str, key: str
) -> tuple[subprocess.Popen[bytes], str]:
    config = work / "service.toml"
    config.write_text(
        f"""
[api]
unix = "{work / "api.sock"}"
[nsm]
backend = "simulated"
simulated_state = "{state}"
simulated_pcrs = {{"0" = "{PCR0.hex()}"}}
[kms]
endpoint_url = "{url}"
allowed_keys = ["{key}"]
[credentials]
source = "environment"
[kms_endpoint]
listen = "tcp:127.0.0.1:0"
"""
    )
    ready = work / "ready.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_ACCESS_KEY,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", "serve", "--config", str(config),
         "--ready-file", str(ready), "--log-level", "WARNING"],
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    port = _port(_wait(ready, process, "the service"), "kms_endpoint")
    return process, f"http://127.0.0.1:{port}"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name: str, seconds: list[float]) -> None:
    print(
        f"{name:<38} {len(seconds) / sum(seconds):8.1f} decrypts/s"
        f"   p50 {_pct(seconds, 0.5) * 1e3:7.2f} ms"
        f"   p99 {_pct(seconds, 0.99) * 1e3:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=100, help="decrypts per side per round")
    args, _ = parser.parse_known_args()

    with tempfile.TemporaryDirectory(prefix="att-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        state = work / "sim"
        nsm = SimulatedNsm(state_dir=state, pcrs={0: PCR0})
        emulator, url = _start_emulator(work, state)
        service: subprocess.Popen[bytes] | None = None
        try:
            admin = boto3.client(
                "kms",
                region_name="us-east-1",
                endpoint_url=url,
                aws_access_key_id=DEV_ACCESS_KEY_ID,
                aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
                config=Config(retries={"total_max_attempts": 1}),
            )
            key = admin.create_key(Policy=key_policy(PCR0))["KeyMetadata"]["Arn"]
            blob = admin.encrypt(KeyId=key, Plaintext=PLAINTEXT)["CiphertextBlob"]
            service, endpoint = _start_service(work, state, url, key)

            direct = KmsClient(
                region="us-east-1",
                attestation=nsm,
                credentials=StaticCredentials(
                    access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
                ),
                recipient_key=RecipientKey.process_default(),
                network=NetworkSettings(endpoint_url=url),
            )
            stock = boto3.client(
                "kms",
                region_name="us-east-1",
                endpoint_url=endpoint,
                aws_access_key_id="AKIAENCLAVEAPP000001",
                aws_secret_access_key="unused",  # noqa: S106 - not checked by the endpoint
                config=Config(retries={"total_max_attempts": 1}),
            )

            def through_endpoint() -> None:
                assert stock.decrypt(CiphertextBlob=blob, KeyId=key)["Plaintext"] == PLAINTEXT

            port = int(endpoint.rsplit(":", 1)[1])
            raw = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body = json.dumps(
                {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": key}
            ).encode()
            headers = {
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "TrentService.Decrypt",
                "X-Amz-Date": "20260301T120000Z",
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAENCLAVEAPP000001/20260301/"
                "us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, "
                "Signature=" + "0" * 64,
            }
            plaintext_b64 = base64.b64encode(PLAINTEXT).decode()

            def minimal_client() -> None:
                raw.request("POST", "/", body=body, headers=headers)
                answer = raw.getresponse()
                assert json.loads(answer.read())["Plaintext"] == plaintext_b64

            def direct_call() -> None:
                assert direct.decrypt(blob, key_id=key).plaintext.reveal() == PLAINTEXT

            calls = {"endpoint": through_endpoint, "minimal": minimal_client, "direct": direct_call}
            for _ in range(10):  # warm every path (connections, CA chain caches)
                for call in calls.values():
                    call()
            timings: dict[str, list[float]] = {side: [] for side in calls}
            for number in range(args.rounds):
                order = list(calls)[number % 3 :] + list(calls)[: number % 3]
                for side in order:
                    call = calls[side]
                    for _ in range(args.calls):
                        start = time.perf_counter()
                        call()
                        timings[side].append(time.perf_counter() - start)
            stock.close()
            raw.close()
            direct.close()
        finally:
            for process in (service, emulator):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            nsm.close()

    print(f"decrypt of {len(PLAINTEXT)} bytes with Recipient, one caller, against the emulator")
    _report("stock boto3 through the KMS endpoint", timings["endpoint"])
    _report("http.client through the KMS endpoint", timings["minimal"])
    _report("direct KmsClient calls", timings["direct"])
    baseline = timings["direct"]
    for side, name in (("endpoint", "stock boto3"), ("minimal", "http.client")):
        ratio = statistics.median(timings[side]) / statistics.median(baseline)
        p99 = _pct(timings[side], 0.99) / _pct(baseline, 0.99)
        print(
            f"RATIO {name} through the endpoint vs direct library calls (p50): {ratio:.3f}x "
            f"(p99 {p99:.3f}x; target <= 1.3x)"
        )


if __name__ == "__main__":
    main()
