"""Fixtures for the relay tests; every server and relay started is stopped at teardown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from attested.net import Address
from attested.relay import Relay, RelayOptions, Resolver, Role
from tests.relay.support import RelayCa, Target, TlsServer


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every thread a relay test starts is stopped by the end of the test."""
    before = set(threading.enumerate())
    yield
    end = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > end:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def make_target() -> Iterator[Callable[..., Target]]:
    targets: list[Target] = []

    def make(mode: str = "echo", **kwargs: int) -> Target:
        target = Target(mode, **kwargs)
        targets.append(target)
        return target

    yield make
    for target in targets:
        target.stop()


@pytest.fixture
def relays() -> Iterator[Callable[..., tuple[Relay, tuple[Address, ...]]]]:
    """Start relays; every one is stopped at the end of the test."""
    started: list[Relay] = []

    def start(
        *roles: Role, options: RelayOptions | None = None, resolver: Resolver | None = None
    ) -> tuple[Relay, tuple[Address, ...]]:
        relay = Relay(roles, options=options, resolver=resolver)
        bound = relay.start()
        started.append(relay)
        return relay, bound

    yield start
    for relay in started:
        relay.stop(deadline=1.0)


@pytest.fixture(scope="session")
def relay_ca(tmp_path_factory: pytest.TempPathFactory) -> RelayCa:
    return RelayCa(tmp_path_factory.mktemp("relay-ca"))


@pytest.fixture
def tls_server(relay_ca: RelayCa) -> Iterator[TlsServer]:
    server = TlsServer(relay_ca)
    yield server
    server.stop()
