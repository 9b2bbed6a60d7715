"""Fixtures for the recipe tests: the parent's and the relays' fixtures, every recipe marked.

Each test here follows a recipe of docs/recipes/ on one machine, with TCP on 127.0.0.1
standing in for vsock, and is marked ``recipes`` (``pytest -m recipes`` runs them; the
normal run includes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from attested.relay import Relay, RelayOptions, Role
from tests.parent.conftest import aws_environment, run_parent
from tests.relay.conftest import make_target, no_leaked_threads, relay_ca, tls_server

__all__ = [
    "aws_environment",
    "enclave_relays",
    "make_target",
    "no_leaked_threads",
    "relay_ca",
    "run_parent",
    "tls_server",
]


@pytest.fixture
def enclave_relays() -> Iterator[Callable[..., Relay]]:
    """The enclave side's relays (what its entrypoint starts); stopped at the end."""
    started: list[Relay] = []

    def start(*roles: Role, options: RelayOptions | None = None) -> Relay:
        relay = Relay(roles, options=options)
        relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop(deadline=1.0)
