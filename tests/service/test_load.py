"""Load: 200 concurrent keep-alive clients, 10,000 requests, no errors, no descriptor growth."""

from __future__ import annotations

import os
import threading
import time

import pytest

from attested.service._service import _KMS_POOL
from tests.service.conftest import StartService
from tests.service.helpers import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 200
PER_CLIENT = 50  # 10,000 requests in all


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(target: int, timeout: float = 10.0) -> int:
    """Wait until the count is at most ``target`` or stops changing for 0.5 s; the count."""
    end = time.monotonic() + timeout
    count, since = open_fds(), time.monotonic()
    while count > target and time.monotonic() < end and time.monotonic() - since < 0.5:
        time.sleep(0.05)
        now = open_fds()
        if now != count:
            count, since = now, time.monotonic()
    return count


def run_clients(path: str, *, per_client: int) -> float:
    """``CLIENTS`` keep-alive clients, ``per_client`` requests each; the seconds taken."""
    failures: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        local: dict[int, int] = {}
        try:
            with ApiClient(path, timeout=60) as api:
                barrier.wait()
                for i in range(per_client):
                    # One request in 25 goes through KMS (the emulator); the rest are
                    # the cheap health route, so the test measures the server.
                    if i % 25 == number % 25:
                        answer = api.post("/v1/generate-random", {"number_of_bytes": 32})
                    else:
                        answer = api.get("/v1/health")
                    local[answer.status] = local.get(answer.status, 0) + 1
                    if answer.status != 200:
                        with lock:
                            failures.append(f"{answer.status} {answer.body[:200]!r}")
        except Exception as exc:
            with lock:
                failures.append(repr(exc))
        with lock:
            for status, count in local.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    assert failures == []
    assert statuses == {200: CLIENTS * per_client}
    return elapsed


@pytest.mark.timeout(120)
def test_200_clients_10000_requests(start_service: StartService) -> None:
    before_start = open_fds()
    service = start_service(max_connections=512)
    path = str(service.listeners["unix"].path)

    # Warm up at the same concurrency: the KMS client's connection pool (bounded, up to
    # 16 connections, plus the in-process emulator's side of each) fills here.
    run_clients(path, per_client=5)
    baseline = settle(0, timeout=0.5)

    elapsed = run_clients(path, per_client=PER_CLIENT)
    # The API connections are all closed; what may remain is the KMS client's pool
    # (at most _KMS_POOL connections) and the in-process emulator's side of each.
    after = settle(baseline)
    assert after <= baseline + 2 * _KMS_POOL, f"descriptors grew from {baseline} to {after}"
    print(f"{CLIENTS * PER_CLIENT} requests from {CLIENTS} clients in {elapsed:.1f} s")

    # Stopped, the service holds nothing: every API socket, worker and KMS connection
    # is gone, and the count is back to what it was before it started.
    service.stop(deadline=5.0)
    final = settle(before_start)
    assert final <= before_start, f"{final - before_start} descriptors leaked"
