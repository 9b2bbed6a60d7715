"""Prometheus exposition and the data-key cache bounds."""

from __future__ import annotations

import threading

import pytest

from attested.service.cache import CacheLimits, DataKeyCache
from attested.service.metrics import Counter, Gauge, Histogram, Registry


def test_prometheus_text_format() -> None:
    registry = Registry()
    requests = registry.register(
        Counter("attested_requests_total", "Requests.", ["route", "status"])
    )
    latency = registry.register(
        Histogram("attested_latency_seconds", "Latency.", ["route"], buckets=(0.1, 1))
    )
    registry.register(Gauge("attested_up", "Up.", lambda: [((), 1.0)]))
    requests.inc("/v1/decrypt", "200")
    requests.inc("/v1/decrypt", "200")
    requests.inc('/v1/"odd"\n', "404")
    latency.observe(0.05, "/v1/decrypt")
    latency.observe(0.5, "/v1/decrypt")
    text = registry.render()
    assert 'attested_requests_total{route="/v1/decrypt",status="200"} 2' in text
    assert 'route="/v1/\\"odd\\"\\n"' in text
    assert 'attested_latency_seconds_bucket{route="/v1/decrypt",le="0.1"} 1' in text
    assert 'attested_latency_seconds_bucket{route="/v1/decrypt",le="1"} 2' in text
    assert 'attested_latency_seconds_bucket{route="/v1/decrypt",le="+Inf"} 2' in text
    assert 'attested_latency_seconds_count{route="/v1/decrypt"} 2' in text
    assert "attested_up 1" in text
    assert "# TYPE attested_latency_seconds histogram" in text
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Counter("attested_up", "dup"))
    with pytest.raises(ValueError, match="labels"):
        requests.inc("only-one")
    with pytest.raises(ValueError, match="only go up"):
        requests.inc("a", "b", amount=-1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(**limits: float) -> tuple[DataKeyCache[int], Clock, list[int]]:
    clock = Clock()
    made: list[int] = []
    cache: DataKeyCache[int] = DataKeyCache(CacheLimits(**limits), clock=clock)  # type: ignore[arg-type]
    return cache, clock, made


def _make(made: list[int]):
    def make() -> int:
        made.append(len(made))
        return made[-1]

    return make


def test_cache_respects_age_messages_and_bytes() -> None:
    cache, clock, made = _cache(max_age=10, max_messages=3, max_bytes=100)
    key = cache.key("alias/app", "AES_256", {"tenant": "a"})
    assert cache.get_or_make(key, _make(made), plaintext_bytes=10) == (0, False)
    assert cache.get_or_make(key, _make(made), plaintext_bytes=10) == (0, True)
    assert cache.get_or_make(key, _make(made), plaintext_bytes=10) == (0, True)
    # third use reached max_messages: the next one makes a new key
    assert cache.get_or_make(key, _make(made), plaintext_bytes=10) == (1, False)
    clock.now += 10  # max_age reached
    assert cache.get_or_make(key, _make(made)) == (2, False)
    assert cache.get_or_make(key, _make(made), plaintext_bytes=60) == (2, True)
    assert cache.get_or_make(key, _make(made), plaintext_bytes=50) == (3, False)  # 110 > 100
    # larger than any entry may cover: made fresh every time, never cached
    assert cache.get_or_make(key, _make(made), plaintext_bytes=101) == (4, False)
    assert cache.get_or_make(key, _make(made), plaintext_bytes=101) == (5, False)
    assert (cache.hits, cache.misses) == (3, 6)


def test_cache_keys_never_mix_contexts_or_keys() -> None:
    cache, _, made = _cache(max_age=60)
    a = cache.key("k1", "AES_256", {"tenant": "a"})
    b = cache.key("k1", "AES_256", {"tenant": "b"})
    c = cache.key("k2", "AES_256", {"tenant": "a"})
    d = cache.key("k1", "AES_128", {"tenant": "a"})
    values = [cache.get_or_make(k, _make(made))[0] for k in (a, b, c, d, a)]
    assert values == [0, 1, 2, 3, 0]
    assert cache.key("k", "s", {"x": "1", "y": "2"}) == cache.key("k", "s", {"y": "2", "x": "1"})


def test_cache_capacity_and_concurrency() -> None:
    cache, _, made = _cache(max_age=60, capacity=2)
    lock = threading.Lock()

    def make() -> int:
        with lock:
            made.append(len(made))
            return made[-1]

    keys = [cache.key(f"k{i}", "AES_256", None) for i in range(3)]
    for key in keys:
        cache.get_or_make(key, make)
    assert len(cache) == 2
    threads = [threading.Thread(target=lambda: cache.get_or_make(keys[2], make)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.hits == 20


def test_cache_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_age"):
        CacheLimits(max_age=0)
    with pytest.raises(ValueError, match="at least 1"):
        CacheLimits(max_age=1, max_messages=0)
