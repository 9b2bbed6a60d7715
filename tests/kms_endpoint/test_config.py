"""``[kms_endpoint]`` in attested serve's configuration: inside the enclave only."""

from __future__ import annotations

from pathlib import Path

import pytest

from attested.errors import ConfigError
from attested.service import ServiceConfig, load_config


def problems(**values: object) -> list[str]:
    base: dict[str, object] = {"allowed_keys": ("*",), "api_unix": "/tmp/att-kep/api.sock"}
    try:
        ServiceConfig(**{**base, **values})  # type: ignore[arg-type]
    except ConfigError as exc:
        return list(exc.problems)
    return []


@pytest.mark.parametrize(
    "listen",
    [
        "vsock:ANY:4566",
        "vsock:3:4566",
        "tcp:0.0.0.0:4566",
        "tcp:[::]:4566",
        "tcp:10.0.0.5:4566",
        "tcp:kms.internal:4566",
    ],
)
def test_vsock_and_other_hosts_are_refused_saying_why(listen: str) -> None:
    (problem,) = problems(kms_endpoint_listen=listen)
    assert problem.startswith("kms_endpoint.listen: ")
    assert "answers with plaintexts" in problem
    assert "parent instance" in problem


@pytest.mark.parametrize(
    "listen",
    ["tcp:127.0.0.1:4566", "tcp:[::1]:4566", "tcp:localhost:0", "unix:/run/attested/kms.sock"],
)
def test_loopback_and_unix_are_taken(listen: str) -> None:
    assert problems(kms_endpoint_listen=listen) == []
    config = ServiceConfig(allowed_keys=("*",), kms_endpoint_listen=listen)
    address = config.kms_endpoint_address()
    assert address is not None
    assert str(address) == listen


def test_other_mistakes() -> None:
    assert problems(kms_endpoint_listen="unix:run/kms.sock") == [
        "kms_endpoint.listen: 'run/kms.sock' must be an absolute path"
    ]
    assert problems(kms_endpoint_listen="unix:/tmp/att-kep/api.sock") == [
        "kms_endpoint.listen: is the API's socket (api.unix); give it its own path"
    ]
    assert problems(api_tcp="tcp:127.0.0.1:4566", kms_endpoint_listen="tcp:127.0.0.1:4566") == [
        "kms_endpoint.listen: is also api.tcp; give it its own port"
    ]
    assert problems(kms_endpoint_listen="unix:/x.sock", kms_endpoint_unix_mode=0o666) == [
        "kms_endpoint.unix_mode: must be an octal mode that gives others no access (e.g. 0660)"
    ]
    (problem,) = problems(kms_endpoint_listen="unix:/x.sock", kms_endpoint_access_key_id="a b")
    assert problem.startswith("kms_endpoint.access_key_id: must be an access key id")
    assert problems(kms_endpoint_allow_reencrypt=True) == [
        "kms_endpoint: allow_reencrypt and access_key_id apply only with listen"
    ]
    assert ServiceConfig(allowed_keys=("*",)).kms_endpoint_address() is None


def test_the_section_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text(
        """
[kms]
allowed_keys = ["*"]
[kms_endpoint]
listen = "tcp:127.0.0.1:4566"
unix_mode = "0600"
allow_reencrypt = true
access_key_id = "AKIAIOSFODNN7EXAMPLE"
"""
    )
    config = load_config(path, {})
    assert config.kms_endpoint_listen == "tcp:127.0.0.1:4566"
    assert config.kms_endpoint_unix_mode == 0o600
    assert config.kms_endpoint_allow_reencrypt is True
    assert config.kms_endpoint_access_key_id == "AKIAIOSFODNN7EXAMPLE"
    path.write_text(
        '[kms]\nallowed_keys = ["*"]\n[kms_endpoint]\nlisten = "vsock:ANY:1"\nport = 1\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    found = raised.value.problems
    assert any(p.startswith("kms_endpoint.port: unknown key") for p in found), found
    assert any(p.startswith("kms_endpoint.listen: ") for p in found), found
