"""Configuration: TOML plus environment overrides, every problem reported at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attested.errors import ConfigError, ConfigurationError
from attested.service import ENV_VARS, OPERATIONS, ServiceConfig, load_config, open_credentials

KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

FULL = f"""
region = "eu-west-1"
[api]
unix = "/run/attested/api.sock"
unix_mode = "0660"
tcp = "127.0.0.1:8080"
vsock = "vsock:ANY:5000"
[nsm]
backend = "simulated"
simulated_state = "/tmp/sim"
simulated_pcrs = {{"0" = "{"ab" * 48}"}}
[kms]
endpoint_url = "http://127.0.0.1:4566"
proxy = "http://127.0.0.1:3128"
allowed_keys = ["{KEY}"]
operations = ["decrypt", "generate-random"]
[credentials]
source = "parent"
parent = "tcp:127.0.0.1:8001"
[cache]
enabled = true
max_age = 60
max_messages = 10
max_bytes = 4096
[limits]
max_body = 8192
max_connections = 64
idle_timeout = 5.0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(text)
    return path


def test_every_key_is_read(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, FULL), {})
    assert config.region == "eu-west-1"
    assert config.api_tcp == "tcp:127.0.0.1:8080"
    assert config.api_vsock == "vsock:ANY:5000"
    assert config.api_unix_mode == 0o660
    assert config.nsm_simulated_pcrs == {0: bytes.fromhex("ab" * 48)}
    assert config.kms_proxy == "http://127.0.0.1:3128"
    assert config.allowed_keys == (KEY,)
    assert config.operations == {"decrypt", "generate-random"}
    assert config.credentials_parent == "tcp:127.0.0.1:8001"
    assert (config.cache_enabled, config.cache_max_age, config.cache_max_messages) == (
        True,
        60.0,
        10,
    )
    assert (config.max_body, config.max_connections, config.idle_timeout) == (8192, 64, 5.0)
    assert set(config.addresses()) == {"unix", "tcp", "vsock"}


def test_defaults_and_environment_only() -> None:
    config = load_config(None, {"ATTESTED_ALLOWED_KEYS": f" {KEY} , alias-arn-two "})
    assert config.allowed_keys == (KEY, "alias-arn-two")
    assert config.api_unix == "/run/attested/api.sock"
    assert config.operations == frozenset(OPERATIONS)
    assert config.credentials_source == "parent"
    assert config.credentials_parent == "vsock:3:8001"
    assert config.cache_enabled is False
    assert config.nsm_backend == "auto"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "ATTESTED_REGION": "ap-south-1",
        "ATTESTED_ALLOWED_KEYS": "*",
        "ATTESTED_EGRESS_PROXY": "http://127.0.0.1:9999",
        "ATTESTED_KMS_ENDPOINT": "https://kms.example.test",
        "ATTESTED_CREDENTIALS": "environment",
        "ATTESTED_NSM_BACKEND": "simulated",
        "ATTESTED_API_SOCKET": "/tmp/other.sock",
        "ATTESTED_API_TCP": "[::1]:0",
    }
    assert set(env) <= set(ENV_VARS)
    config = load_config(_write(tmp_path, FULL), env)
    assert config.region == "ap-south-1"
    assert config.any_key
    assert config.kms_proxy == "http://127.0.0.1:9999"
    assert config.kms_endpoint_url == "https://kms.example.test"
    assert config.credentials_source == "environment"
    assert config.api_unix == "/tmp/other.sock"
    assert config.api_tcp == "tcp:[::1]:0"
    parent = load_config(
        None, {"ATTESTED_ALLOWED_KEYS": KEY, "ATTESTED_CREDENTIALS": "parent:vsock:3:9000"}
    )
    assert parent.credentials_parent == "vsock:3:9000"
    off = load_config(
        None,
        {
            "ATTESTED_ALLOWED_KEYS": KEY,
            "ATTESTED_API_SOCKET": "",
            "ATTESTED_API_TCP": "127.0.0.1:1",
        },
    )
    assert set(off.addresses()) == {"tcp"}


def test_instance_role_credentials_from_imds(tmp_path: Path) -> None:
    """On an EC2 instance itself (NitroTPM), credentials come from IMDSv2."""
    keys = f'[kms]\nallowed_keys = ["{KEY}"]\n'
    url = "http://127.0.0.1:8999/"
    config = load_config(
        _write(tmp_path, f'{keys}[credentials]\nsource = "imds"\nimds_url = "{url}"\n'), {}
    )
    assert (config.credentials_source, config.credentials_imds_url) == ("imds", url)
    assert repr(open_credentials(config)) == f"ImdsCredentials(base_url={url!r})"
    from_env = load_config(None, {"ATTESTED_ALLOWED_KEYS": KEY, "ATTESTED_CREDENTIALS": "imds"})
    assert from_env.credentials_source == "imds"
    assert repr(open_credentials(from_env)) == "ImdsCredentials()"
    with pytest.raises(ConfigError, match=r'credentials.imds_url: applies only with .*"imds"'):
        load_config(_write(tmp_path, f'{keys}[credentials]\nimds_url = "{url}"\n'), {})
    with pytest.raises(ConfigError, match=r"credentials\.imds_url: must be an http:// URL"):
        load_config(
            _write(tmp_path, f'{keys}[credentials]\nsource = "imds"\nimds_url = "ftp://x/"\n'),
            {},
        )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
region = "mars-1"
typo_top = 1
[api]
unix = "relative.sock"
unix_mode = "0666"
tcp = "0.0.0.0:8080"
[nsm]
backend = "fpga"
[kms]
allowed_key = ["x"]
proxy = "socks5://127.0.0.1:1080"
operations = ["decrypt", "encrypt"]
[credentials]
source = "instance-profile"
[cache]
max_age = -1
max_messages = "ten"
[limits]
max_body = 10
idle_timeout = 0
[extra]
"""
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), {"ATTESTED_CREDENTIALS": "instance-profile"})
    problems = caught.value.problems
    expected = [
        "region:",
        "typo_top: unknown key",
        "api.unix:",
        "api.unix_mode:",
        "api.tcp:",
        "nsm.backend:",
        "kms.allowed_key: unknown key",
        "kms.allowed_keys: required",
        "kms.proxy:",
        "kms.operations: unknown encrypt",
        "credentials.source:",
        "cache.max_age:",
        "cache.max_messages: must be an integer",
        "limits.max_body:",
        "limits.idle_timeout:",
        "extra: unknown key or section",
        "ATTESTED_CREDENTIALS:",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert isinstance(caught.value, ConfigurationError)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", {"ATTESTED_ALLOWED_KEYS": KEY})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "region = "), {"ATTESTED_ALLOWED_KEYS": KEY})


def test_simulated_measurements_give_pcr0_to_2(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(
        json.dumps(
            {
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    "PCR0": "01" * 48,
                    "PCR1": "02" * 48,
                    "PCR2": "03" * 48,
                }
            }
        )
    )
    text = f"""
[nsm]
backend = "simulated"
simulated_measurements = "{measurements}"
simulated_pcrs = {{"2" = "{"04" * 48}"}}
[kms]
allowed_keys = ["*"]
"""
    config = load_config(_write(tmp_path, text), {})
    assert config.nsm_simulated_pcrs == {
        0: bytes.fromhex("01" * 48),
        1: bytes.fromhex("02" * 48),
        2: bytes.fromhex("04" * 48),
    }
    wrong = text.replace('backend = "simulated"', 'backend = "ioctl"')
    with pytest.raises(ConfigError, match="simulated"):
        load_config(_write(tmp_path, wrong), {})


def test_relative_paths_in_the_file_are_taken_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in `attested parent`'s file: the configuration works whatever the current
    # directory (docs/service.md's walk-through keeps measurements.json beside it).
    here = tmp_path / "config"
    here.mkdir()
    (here / "measurements.json").write_text(
        json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "07" * 48}})
    )
    (here / "ca.pem").write_text("not read until KMS is called")
    path = _write(
        here,
        '[nsm]\nbackend = "simulated"\nsimulated_state = "sim"\n'
        'simulated_measurements = "measurements.json"\n'
        '[kms]\nallowed_keys = ["*"]\nca_bundle = "ca.pem"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path, {})
    assert config.nsm_simulated_pcrs[0] == bytes.fromhex("07" * 48)
    assert config.nsm_simulated_state == str(here / "sim")
    assert config.kms_ca_bundle == str(here / "ca.pem")
    # A path given in the environment is the caller's: taken from the current directory.
    (elsewhere / "env.pem").write_text("x")
    overridden = load_config(path, {"ATTESTED_CA_BUNDLE": "env.pem"})
    assert overridden.kms_ca_bundle == "env.pem"


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError) as caught:
        ServiceConfig(allowed_keys=("*", KEY), api_unix="", region="x")
    assert len(caught.value.problems) == 3
    with pytest.raises(ValueError, match="at least one problem"):
        ConfigError([])


def test_cli_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, '[api]\ntcp = "10.0.0.1:80"\n[kms]\nallowed_keys = []\n')
    result = subprocess.run(
        [sys.executable, "-m", "attested", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("attested serve: configuration: api.tcp:") for line in lines)
    assert any("kms.allowed_keys" in line for line in lines)
    assert lines[-1] == "attested serve: 2 configuration problems; not started"


def test_the_guide_lists_every_key_variable_and_error_code() -> None:
    from attested.service import ERROR_CODES
    from attested.service._config import _SCHEMA

    guide = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    for section, keys in _SCHEMA.items():
        for key in keys:
            name = f"{section}.{key}" if section else key
            assert f"| `{name}` |" in guide, name
    for variable in ENV_VARS:
        assert f"| `{variable}` |" in guide, variable
    for code, (status, _) in ERROR_CODES.items():
        assert f"| {status} | `{code}` |" in guide, code


# -- inputs that used to crash the loader with a traceback (exit 1) ------------------------

_CRASHERS = {
    "nested 2,000 levels": (
        "a = " + "[" * 2000 + "]" * 2000 + "\n",
        "not valid TOML: tables and arrays are nested more than 16 deep",
    ),
    "dotted tables 2,000 deep": (
        "[" + ".".join(["a"] * 2000) + "]\n",
        "not valid TOML: tables and arrays are nested more than 16 deep",
    ),
    "endpoint with an open bracket": (
        '[kms]\nallowed_keys = ["*"]\nendpoint_url = "http://[::1"\n',
        "kms.endpoint_url: endpoint_url 'http://[::1' must be an http:// or https:// URL",
    ),
    "proxy with a bad IPv6 host": (
        '[kms]\nallowed_keys = ["*"]\nproxy = "http://[x]:80"\n',
        "kms.proxy: proxy 'http://[x]:80' must be http://HOST:PORT",
    ),
    "proxy with a bad port": (
        '[kms]\nallowed_keys = ["*"]\nproxy = "http://127.0.0.1:99999"\n',
        "kms.proxy: proxy 'http://127.0.0.1:99999' must be http://HOST:PORT",
    ),
    "superscript PCR index": (
        '[nsm]\nbackend = "simulated"\nsimulated_pcrs = {"\u00b2" = "' + "ab" * 48 + '"}\n'
        '[kms]\nallowed_keys = ["*"]\n',
        "nsm.simulated_pcrs: key '\u00b2' is not a PCR index 0-31",
    ),
    "Arabic-Indic PCR index": (
        '[nsm]\nbackend = "simulated"\nsimulated_pcrs = {"\u0661" = "' + "ab" * 48 + '"}\n'
        '[kms]\nallowed_keys = ["*"]\n',
        "nsm.simulated_pcrs: key '\u0661' is not a PCR index 0-31",
    ),
    "a 5,000-digit integer": (
        "[limits]\nmax_body = " + "9" * 5000 + "\n",
        "not valid TOML: a value that cannot be converted",
    ),
    "an integer beyond 64 bits": (
        "[cache]\nmax_age = 0x" + "f" * 300 + "\n",
        "not valid TOML: an integer is outside the 64-bit range TOML allows",
    ),
    "measurements from /dev/zero": (
        '[nsm]\nbackend = "simulated"\nsimulated_measurements = "/dev/zero"\n'
        '[kms]\nallowed_keys = ["*"]\n',
        "nsm.simulated_measurements: /dev/zero is 1048577 bytes, more than the limit",
    ),
    "measurements path with a NUL": (
        '[nsm]\nbackend = "simulated"\nsimulated_measurements = "a\\u0000b"\n'
        '[kms]\nallowed_keys = ["*"]\n',
        "nsm.simulated_measurements: 'a\\x00b' is not a file path",
    ),
    "an Arabic-Indic socket mode": (
        '[api]\nunix_mode = "\u0660\u0666\u0666\u0660"\n',  # int(..., 8) accepts it
        'api.unix_mode: must be an octal mode in a string, e.g. "0660"',
    ),
}


@pytest.mark.parametrize(("text", "problem"), list(_CRASHERS.values()), ids=list(_CRASHERS))
def test_hostile_files_are_problems_not_crashes(
    tmp_path: Path, capsys, text: str, problem: str
) -> None:
    from attested.cli import main

    path = _write(tmp_path, text)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert problem in err
    lines = err.strip().splitlines()
    assert lines[-1].endswith("; not started")
    if len(lines) == 1:  # one problem: one line
        assert lines[0].startswith("attested serve: configuration: ")
    else:
        assert lines[-1].endswith(f"{len(lines) - 1} configuration problems; not started")
        assert all(line.startswith("attested serve: configuration: ") for line in lines[:-1])


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ATTESTED_KMS_ENDPOINT", "http://[::1", "kms.endpoint_url: endpoint_url 'http://[::1'"),
        ("ATTESTED_EGRESS_PROXY", "http://[x]:80", "kms.proxy: proxy 'http://[x]:80'"),
        ("ATTESTED_EGRESS_PROXY", "http://user:secret@[::1", "kms.proxy: proxy 'http://***@"),
        ("ATTESTED_EGRESS_PROXY", "https://user:secret@proxy:1", "kms.proxy: proxy must not"),
    ],
)
def test_hostile_environment_is_a_problem_not_a_crash(
    monkeypatch, capsys, variable: str, value: str, problem: str
) -> None:
    from attested.cli import main

    monkeypatch.setenv("ATTESTED_ALLOWED_KEYS", "*")
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert f"attested serve: configuration: {problem}" in err
    assert "secret" not in err  # a proxy's password never appears
    assert "Traceback" not in err


def test_a_key_cannot_forge_an_output_line(tmp_path: Path, capsys) -> None:
    """Keys are quoted in problems: a line break in one cannot start a line of its own."""
    from attested.cli import main

    forged = "attested serve: configuration: kms.allowed_keys: forged"
    text = f'"x\\n{forged}" = 1\n[kms]\n"a\\nb" = 2\nallowed_keys = ["*"]\n'
    assert main(["serve", "--config", str(_write(tmp_path, text))]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "attested serve: 2 configuration problems; not started"
    assert lines[:-1] == [
        f"attested serve: configuration: 'x\\n{forged}': unknown key or section (known: "
        "region, api, nsm, kms, egress, logs, credentials, cache, limits, kms_endpoint)",
        "attested serve: configuration: kms.'a\\nb': unknown key (known: endpoint_url, proxy, "
        "ca_bundle, allowed_keys, operations)",
    ]


def test_deep_nesting_in_a_real_process(tmp_path: Path) -> None:
    """The way a user meets it: a fresh interpreter at the default recursion limit."""
    path = _write(tmp_path, "a = " + "[" * 2000 + "]" * 2000 + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "attested", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"attested serve: configuration: {path} is not valid TOML: " in result.stderr
