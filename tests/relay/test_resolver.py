"""Name resolution: per connection by default, coalesced, optionally cached (injected clock)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from attested.relay import StaticResolver, SystemResolver


class CountingLoop:
    """Counts getaddrinfo calls on the running loop and answers from a table."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.calls = 0
        self.answers = answers
        self.release = asyncio.Event()

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        self.calls += 1
        await self.release.wait()
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port))
            for a in self.answers[host]
        ]


def run_with(fake: CountingLoop, coroutine_factory):
    async def main() -> object:
        loop = asyncio.get_running_loop()
        loop.getaddrinfo = fake.getaddrinfo  # type: ignore[method-assign]
        return await coroutine_factory()

    return asyncio.run(main())


def test_concurrent_lookups_of_one_name_are_coalesced() -> None:
    fake = CountingLoop({"kms.test": ["10.0.0.1", "10.0.0.2", "10.0.0.1"]})
    resolver = SystemResolver()

    async def many():
        tasks = [asyncio.create_task(resolver.resolve("kms.test", 443)) for _ in range(20)]
        await asyncio.sleep(0)
        fake.release.set()
        return await asyncio.gather(*tasks)

    answers = run_with(fake, many)
    assert fake.calls == 1
    expected = (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2"))
    assert all(tuple(a) == expected for a in answers)


def test_without_a_cache_every_connection_resolves_again() -> None:
    fake = CountingLoop({"kms.test": ["10.0.0.1"]})
    fake.release.set()
    resolver = SystemResolver()

    async def twice():
        await resolver.resolve("kms.test", 443)
        await resolver.resolve("kms.test", 443)

    run_with(fake, twice)
    assert fake.calls == 2


def test_the_optional_cache_expires_on_the_injected_clock() -> None:
    now = [100.0]
    fake = CountingLoop({"kms.test": ["10.0.0.1"]})
    fake.release.set()
    resolver = SystemResolver(cache_seconds=5, clock=lambda: now[0])

    async def sequence():
        await resolver.resolve("kms.test", 443)
        now[0] += 4.9
        await resolver.resolve("kms.test", 443)
        assert fake.calls == 1
        now[0] += 0.2
        await resolver.resolve("kms.test", 443)

    run_with(fake, sequence)
    assert fake.calls == 2


def test_failures_reach_every_waiter_and_are_not_cached() -> None:
    fake = CountingLoop({})
    resolver = SystemResolver(cache_seconds=5)

    async def failing():
        tasks = [asyncio.create_task(resolver.resolve("nx.test", 443)) for _ in range(3)]
        await asyncio.sleep(0)
        fake.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, socket.gaierror) for r in results)
        with pytest.raises(socket.gaierror):
            await resolver.resolve("nx.test", 443)

    run_with(fake, failing)
    assert fake.calls == 2


def test_family_filter_and_bounds() -> None:
    with pytest.raises(ValueError, match="cache_seconds"):
        SystemResolver(cache_seconds=61)
    with pytest.raises(ValueError, match="family"):
        SystemResolver(family=5)  # type: ignore[arg-type]
    answers = asyncio.run(SystemResolver(family=4).resolve("localhost", 80))
    assert answers
    assert all(a.version == 4 for a in answers)


def test_static_resolver() -> None:
    resolver = StaticResolver({"KMS.Test.": ["127.0.0.1", "::1"]})
    answers = asyncio.run(resolver.resolve("kms.test", 443))
    assert [str(a) for a in answers] == ["127.0.0.1", "::1"]
    with pytest.raises(socket.gaierror):
        asyncio.run(resolver.resolve("other.test", 443))


def test_static_resolver_falls_back_for_names_it_does_not_hold() -> None:
    fallback = StaticResolver({"other.test": ["192.0.2.7"]})
    resolver = StaticResolver({"kms.test": ["127.0.0.1"]}, fallback=fallback)

    async def run() -> tuple[object, object]:
        return await resolver.resolve("kms.test", 443), await resolver.resolve("other.test", 443)

    fixed, fallen_back = asyncio.run(run())
    assert fixed == (ipaddress.ip_address("127.0.0.1"),)
    assert fallen_back == (ipaddress.ip_address("192.0.2.7"),)
    with pytest.raises(socket.gaierror):
        asyncio.run(resolver.resolve("unknown.test", 443))
