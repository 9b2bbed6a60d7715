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
import statistics
import time

from _stack import PLAINTEXT, pct, report, stack

from tests.kit import kms_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=100, help="decrypts per side per round")
    args, _ = parser.parse_known_args()

    with stack('[kms_endpoint]\nlisten = "tcp:127.0.0.1:0"\n') as running:
        blob, key = running.blob, running.key
        endpoint = f"http://127.0.0.1:{running.port('kms_endpoint')}"
        direct = running.direct_client()
        # The endpoint does not check the caller's secret key, only the request's shape.
        stock = kms_client(endpoint, "AKIAENCLAVEAPP000001", "unused")

        def through_endpoint() -> None:
            assert stock.decrypt(CiphertextBlob=blob, KeyId=key)["Plaintext"] == PLAINTEXT

        port = running.port("kms_endpoint")
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

    print(f"decrypt of {len(PLAINTEXT)} bytes with Recipient, one caller, against the emulator")
    report("stock boto3 through the KMS endpoint", timings["endpoint"])
    report("http.client through the KMS endpoint", timings["minimal"])
    report("direct KmsClient calls", timings["direct"])
    baseline = timings["direct"]
    for side, name in (("endpoint", "stock boto3"), ("minimal", "http.client")):
        ratio = statistics.median(timings[side]) / statistics.median(baseline)
        p99 = pct(timings[side], 0.99) / pct(baseline, 0.99)
        print(
            f"RATIO {name} through the endpoint vs direct library calls (p50): {ratio:.3f}x "
            f"(p99 {p99:.3f}x; target <= 1.3x)"
        )


if __name__ == "__main__":
    main()
