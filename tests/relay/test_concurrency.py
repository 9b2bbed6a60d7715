"""1,000 concurrent tunnels through both hops, all open at the same time."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from attested.relay import Allowlist, EnclaveEgress, ParentEgress
from tests.relay.support import loopback

pytestmark = pytest.mark.integration

TUNNELS = 1000
# client + enclave (2) + parent (2) + target, per tunnel, and some head room
DESCRIPTORS_NEEDED = TUNNELS * 6 + 512


@pytest.fixture
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < DESCRIPTORS_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < DESCRIPTORS_NEEDED:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {DESCRIPTORS_NEEDED}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_concurrent_tunnels_are_all_served(
    enough_descriptors, relays, make_target
) -> None:
    target = make_target("echo")
    parent, (parent_addr,) = relays(
        ParentEgress(listen=loopback(), allowlist=Allowlist.of(("127.0.0.1", target.port)))
    )
    enclave, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=parent_addr))
    request = f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode()
    all_open = asyncio.Event()
    opened = 0
    setup_times: list[float] = []

    async def tunnel(i: int) -> bytes:
        nonlocal opened
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            setup_times.append(time.perf_counter() - start)
            opened += 1
            if opened == TUNNELS:
                all_open.set()
            await all_open.wait()  # every tunnel is open before any is used
            message = f"tunnel {i}\n".encode()
            writer.write(message)
            return await reader.readexactly(len(message))
        finally:
            writer.close()
            await writer.wait_closed()

    async def run() -> list[bytes]:
        return await asyncio.wait_for(
            asyncio.gather(*(tunnel(i) for i in range(TUNNELS))), timeout=120
        )

    answers = asyncio.run(run())
    assert answers == [f"tunnel {i}\n".encode() for i in range(TUNNELS)]
    assert target.peak == TUNNELS
    assert max(setup_times) < 30  # nothing waited for another tunnel to finish
    assert enclave.stats()["enclave-egress"].connections_total == TUNNELS
    stats = parent.stats()["parent-egress"]
    assert stats.connections_total == TUNNELS
    assert sum(stats.refusals.values()) == 0
    assert sum(stats.failures.values()) == 0
