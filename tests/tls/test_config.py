"""``[[ingress]]`` with ``tls = "attested"`` in exec's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from attested.errors import ConfigError
from attested.exec import load_exec_config
from attested.exec._parts import relay_roles

BASE = """
[api]
unix = "/tmp/att-tls-config.sock"
[kms]
allowed_keys = ["*"]
[nsm]
backend = "simulated"
"""


def _load(tmp_path: Path, ingress: str) -> object:
    path = tmp_path / "enclave.toml"
    path.write_text(BASE + "[[ingress]]\n" + ingress)
    return load_exec_config(path, {})


def test_an_attested_ingress_is_read_and_left_out_of_the_raw_relay(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'listen = "tcp:127.0.0.1:8443"\nto = "tcp:127.0.0.1:8080"\ntls = "attested"\n'
        'server_name = ["API.example.com", "b.example.com"]\n',
    )
    (ingress,) = config.ingress  # type: ignore[attr-defined]
    assert ingress.tls == "attested"
    assert ingress.server_names == ("api.example.com", "b.example.com")
    assert relay_roles(config) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ingress", "problem"),
    [
        ('tls = "yes"\n', "ingress[0].tls"),
        ('server_name = "api.example.com"\n', 'applies to tls = "attested" only'),
        ('tls = "attested"\nserver_name = ["10.0.0.1"]\n', "is an IP address"),
        ('tls = "attested"\nserver_name = 3\n', "a DNS name or a list"),
    ],
)
def test_bad_attested_ingress_settings_are_named(
    tmp_path: Path, ingress: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, 'listen = "tcp:127.0.0.1:8443"\nto = "tcp:127.0.0.1:8080"\n' + ingress)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
