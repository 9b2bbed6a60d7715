"""Recipe docs/recipes/metrics.md: Prometheus scraping the parent, and through it the enclave.

A real ``attested serve`` (simulated NSM, KMS emulator) stands in for the enclave; its
loopback TCP listener stands in for its vsock listener. Both targets are scraped as
Prometheus does and every sample line must parse in the text format.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from attested.net import Address
from attested.parent import Parent, parse_parent_config
from tests.relay.support import tcp

# The service's fixtures (module-scoped KMS emulator, simulated NSM), for the enclave side.
from tests.service.conftest import emu, short_dir, sim_nsm, sim_state, start_service  # noqa: F401

pytestmark = [pytest.mark.recipes, pytest.mark.integration]

RECIPE = Path(__file__).parents[2] / "docs" / "recipes" / "metrics.md"
_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?|\+Inf|-Inf|NaN)$"
)


def scrape(address: Address) -> dict[str, float]:
    """GET /metrics as Prometheus does; every line a comment or a valid sample."""
    host, port = tcp(address)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert _SAMPLE.match(line), line
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


def blocks(language: str) -> list[str]:
    text = RECIPE.read_text()
    return [part.split("```", 1)[0] for part in text.split(f"```{language}\n")[1:]]


def test_the_recipes_files_say_what_the_test_runs() -> None:
    (parent_toml,) = blocks("toml parent-config")
    config = parse_parent_config(parent_toml)
    assert config.metrics is not None
    assert str(config.metrics.listen) == "tcp:127.0.0.1:9101"
    (forward,) = config.ingress
    assert (str(forward.listen), str(forward.to)) == ("tcp:127.0.0.1:9102", "vsock:16:8444")
    (prometheus,) = blocks("yaml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(prometheus)["scrape_configs"]
    }
    assert targets == {
        "attested-parent": ["127.0.0.1:9101"],
        "attested-enclave": ["127.0.0.1:9102"],
    }


def test_prometheus_scrapes_the_parent_and_through_it_the_enclave(
    run_parent: Callable[[str], Parent],
    start_service: Callable[..., object],  # noqa: F811 - the imported fixture
) -> None:
    service = start_service(api_tcp="tcp:127.0.0.1:0")
    enclave = service.listeners["tcp"]  # type: ignore[attr-defined]
    parent = run_parent(
        f"""
        [metrics]
        listen = "tcp:127.0.0.1:0"     # 127.0.0.1:9101
        [[ingress]]
        listen = "tcp:127.0.0.1:0"     # 127.0.0.1:9102
        to = "tcp:127.0.0.1:{enclave.port}"   # vsock:16:8444
        allow_parent_target = true     # loopback stands in for the enclave
        """
    )
    first = scrape(parent.listeners["ingress-0"])  # the attested-enclave job
    second = scrape(parent.listeners["ingress-0"])
    route = 'attested_service_requests_total{route="/metrics",status="200"}'
    assert second[route] == first.get(route, 0.0) + 1
    own = scrape(parent.listeners["metrics"])  # the attested-parent job
    assert own['attested_relay_connections_total{listener="ingress-0"}'] == 2
    assert own['attested_relay_bytes_down_total{listener="ingress-0"}'] > 0
