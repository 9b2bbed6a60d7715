"""The parent configuration file: valid files, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from attested.errors import ConfigError, ConfigurationError
from attested.net import parse_address
from attested.parent import load_parent_config, parse_parent_config
from attested.relay import AllowEntry

FULL = """
[egress]
listen = "vsock:ANY:8000"
allowlist = "vsock-proxy.yaml"
allow = [{address = "KMS.us-east-1.amazonaws.com.", port = 443}]
hosts = {"kms.us-east-1.amazonaws.com" = ["127.0.0.1", "::1"]}
dns_cache = 5
ip_version = 4
max_connections = 100
connect_timeout = 2.5
idle_timeout = 0

[credentials]
listen = "vsock:ANY:8001"
source = "imds"
allowed_peers = [16, 17]

[[ingress]]
listen = "tcp:0.0.0.0:8443"
to = "vsock:16:8443"

[[ingress]]
listen = "tcp:0.0.0.0:8080"
to = "vsock:16:8080"

[logs]
listen = "vsock:ANY:8090"
out = "logs/enclave.log"
max_line = 4096
"""


def problems_of(text: str, base: Path | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse_parent_config(text, base=base)
    return caught.value.problems


def test_a_full_file(tmp_path: Path) -> None:
    (tmp_path / "vsock-proxy.yaml").write_text(
        "allowlist:\n- {address: secretsmanager.us-east-1.amazonaws.com, port: 443}\n"
    )
    path = tmp_path / "parent.toml"
    path.write_text(FULL)
    config = load_parent_config(path)
    assert config.source == path
    assert config.listener_names() == ("egress", "credentials", "ingress-0", "ingress-1", "logs")
    egress = config.egress
    assert egress is not None
    assert egress.listen == parse_address("vsock:ANY:8000")
    assert egress.allowlist_file == tmp_path / "vsock-proxy.yaml"
    assert egress.allowlist.entries == {
        AllowEntry.of("kms.us-east-1.amazonaws.com", 443),
        AllowEntry.of("secretsmanager.us-east-1.amazonaws.com", 443),
    }
    assert dict(egress.hosts) == {"kms.us-east-1.amazonaws.com": ("127.0.0.1", "::1")}
    assert (egress.dns_cache, egress.ip_version) == (5.0, 4)
    assert egress.options.max_connections == 100
    assert egress.options.connect_timeout == 2.5
    assert egress.options.idle_timeout is None
    assert config.credentials is not None
    assert config.credentials.allowed_peers == (16, 17)
    assert config.credentials.source == "imds"
    assert [f.to for f in config.ingress] == [
        parse_address("vsock:16:8443"),
        parse_address("vsock:16:8080"),
    ]
    assert config.ingress[0].options.idle_timeout == 600.0
    assert config.logs is not None
    assert config.logs.out == tmp_path / "logs" / "enclave.log"
    assert config.logs.max_line == 4096


def test_minimal_sections_and_defaults() -> None:
    config = parse_parent_config('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\n')
    assert config.listener_names() == ("logs",)
    assert config.logs is not None
    assert config.logs.out is None
    tcp = parse_parent_config('[credentials]\nlisten = "tcp:127.0.0.1:0"\n')
    assert tcp.credentials is not None
    assert tcp.credentials.allowed_peers == ()  # loopback only
    assert tcp.credentials.source == "imds"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        """
        region = "us-east-1"
        [egres]
        [egress]
        lisen = "vsock:ANY:8000"
        allowlist = "missing.yaml"
        allow = [{address = "*.amazonaws.com", port = 443}, {address = "a.test", port = 0}]
        hosts = {"10.0.0.1" = "10.0.0.2", "b.test" = ["nope"]}
        dns_cache = 120
        ip_version = 5
        max_connections = 0
        connect_timeout = 0
        idle_timeout = "never"
        [credentials]
        listen = "unix:/run/credentials.sock"
        source = "env"
        [[ingress]]
        listen = "tcp:0.0.0.0:8080"
        to = "vsock:ANY:8080"
        [[ingress]]
        listen = "bogus:1"
        [logs]
        listen = "tcp:0.0.0.0:8080"
        max_line = 10
        """,
        tmp_path,
    )
    expected = [
        "region: unknown key or section",
        "egres: unknown key or section (did you mean 'egress'?)",
        "egress.lisen: unknown key (did you mean 'listen'?)",
        "egress.listen: required",
        "egress.allowlist: cannot read allowlist",
        "egress.allow: allowlist entry 1: wildcards are not supported",
        "egress.allow: allowlist entry 2: port 0",
        "egress.hosts: '10.0.0.1' is an IP address, not a name",
        "egress.hosts.b.test: 'nope' is not an IP address",
        "egress.dns_cache: must be at least 0 and at most 60",
        "egress.ip_version: must be 4 or 6",
        "egress.max_connections: must be at least 1",
        "egress.connect_timeout: must be more than 0",
        "egress.idle_timeout: must be a number",
        "credentials.listen: must be vsock or tcp, not unix",
        "credentials.source: must be 'imds' or 'environment'",
        "ingress[0].to: a destination needs the enclave CID, not ANY",
        "ingress[1].listen: 'bogus:1': unknown address kind",
        "ingress[1].to: required",
        "logs.out: required",
        "logs.max_line: must be at least 128",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected), problems


def test_the_error_message_and_type() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_parent_config("[logs]\n", source=Path("parent.toml"))
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.source == "parent.toml"
    assert str(error).startswith("parent.toml: logs.listen: required")
    assert len(error.problems) == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "nothing to run"),
        ("[egress", "not valid TOML"),
        ("ingress = 3", "ingress: must be [[ingress]] tables"),
        ("[ingress]\nlisten = 'tcp:127.0.0.1:1'", "write [[ingress]], not [ingress]"),
        ("egress = 1", "egress: must be a table"),
        ("[egress]\nlisten = 'tcp:127.0.0.1:0'", "egress: give allowlist"),
        ("[egress]\nlisten = 'tcp:127.0.0.1:0'\nallow = []", "the allowlist is empty"),
        ("[egress]\nlisten = 8000\nallow = [{address='a.test', port=1}]", "must be a string"),
        ("[egress]\nlisten = 'tcp:127.0.0.1:0'\nallow = 'a.test'", "must be a list"),
        (
            "[egress]\nlisten = 'tcp:127.0.0.1:0'\nallow = [{address='a.test', port=1, x=1}]",
            "exactly the keys 'address' and 'port'",
        ),
        ("[credentials]\nlisten = 'vsock:ANY:8001'", "required for a vsock listener"),
        ("[credentials]\nlisten = 'vsock:ANY:8001'\nallowed_peers = []", "non-empty list"),
        (
            "[credentials]\nlisten = 'vsock:ANY:8001'\nallowed_peers = ['16']",
            "allowed_peers[0]: allowed vsock peer '16' must be a CID",
        ),
        (
            "[credentials]\nlisten = 'tcp:127.0.0.1:0'\nallowed_peers = ['localhost']",
            "must be an IP address",
        ),
        (
            "[credentials]\nlisten = 'tcp:127.0.0.1:0'\nsource = 'environment'\n"
            "imds_url = 'http://127.0.0.1:1/'",
            "only applies to source = 'imds'",
        ),
        (
            "[credentials]\nlisten = 'tcp:127.0.0.1:0'\nimds_url = 'https://x/'",
            "must be an http:// URL",
        ),
        ("[[ingress]]\nlisten = 'tcp:127.0.0.1:0'\nto = 'tcp:127.0.0.1:0'", "port other than 0"),
        ("[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = 5", "must be a file path"),
        ("[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '.'", "is a directory"),
        ("[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '-'\nmax_line = true", "must be an integer"),
        (
            "[logs]\nlisten = 'vsock:ANY:8090'\nout = '-'\n"
            "[credentials]\nlisten = 'vsock:ANY:8090'\nallowed_peers = [16]",
            "logs.listen: vsock:ANY:8090 is also credentials.listen",
        ),
    ],
)
def test_single_problems(text: str, problem: str, tmp_path: Path) -> None:
    problems = problems_of(text, tmp_path)
    assert any(problem in p for p in problems), problems


def test_allowlist_file_problems_carry_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("whitelist: []\n")
    (problem,) = problems_of(f"[egress]\nlisten = 'vsock:ANY:8000'\nallowlist = '{bad}'\n")
    assert problem.startswith(f"egress.allowlist: {bad}: allowlist file has no 'allowlist' key")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file") as caught:
        load_parent_config(tmp_path / "missing.toml")
    assert isinstance(caught.value.__cause__, OSError)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_parent_config(binary)
    large = tmp_path / "large.toml"
    large.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_parent_config(large)


def test_config_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConfigError([])


# -- ingress goes into the enclave, never to the parent's own ports (ADR 0069) -------------


@pytest.mark.parametrize(
    "to",
    [
        "tcp:127.0.0.1:6379",  # a parent-side service
        "tcp:169.254.169.254:80",  # instance metadata
        "unix:/var/run/docker.sock",
        "vsock:3:8000",  # the parent's own CID, e.g. its egress relay
        "vsock:2:8000",
        "vsock:1:8000",
    ],
)
def test_an_ingress_to_the_parent_side_is_refused(to: str) -> None:
    problems = problems_of(f"[[ingress]]\nlisten = 'vsock:ANY:9000'\nto = '{to}'\n")
    (problem,) = problems
    assert problem.startswith(f"ingress[0].to: {parse_address(to)} is not an enclave")
    assert "allow_parent_target = true" in problem


def test_the_opt_in_never_lets_the_enclave_reach_the_parent() -> None:
    """A vsock listen means the enclave is the client: that is egress without its allowlist."""
    problems = problems_of(
        "[[ingress]]\nlisten = 'vsock:ANY:9000'\nto = 'tcp:127.0.0.1:6379'\n"
        "allow_parent_target = true\n"
    )
    (problem,) = problems
    assert problem.startswith("ingress[0].allow_parent_target: not with a vsock listen")
    assert "[egress]" in problem


def test_the_opt_in_allows_loopback_tcp_for_testing() -> None:
    config = parse_parent_config(
        "[[ingress]]\nlisten = 'tcp:127.0.0.1:0'\nto = 'tcp:127.0.0.1:8443'\n"
        "allow_parent_target = true\n"
    )
    (forward,) = config.ingress
    assert forward.to == parse_address("tcp:127.0.0.1:8443")
    assert forward.allow_parent_target is True
    problems = problems_of(
        "[[ingress]]\nlisten = 'tcp:127.0.0.1:0'\nto = 'tcp:127.0.0.1:1'\n"
        "allow_parent_target = 'yes'\n"
    )
    assert "ingress[0].allow_parent_target: must be true or false" in problems


def test_an_enclave_destination_needs_no_opt_in() -> None:
    for listen in ("tcp:0.0.0.0:8443", "vsock:ANY:8443", "unix:/run/in.sock"):
        config = parse_parent_config(f"[[ingress]]\nlisten = '{listen}'\nto = 'vsock:16:8443'\n")
        assert config.ingress[0].allow_parent_target is False


def test_ingress_config_made_in_code_is_checked_too() -> None:
    from attested.parent import IngressConfig

    with pytest.raises(ConfigError, match=r"ingress\.to: tcp:127\.0\.0\.1:6379 is not an enclave"):
        IngressConfig(listen=parse_address("tcp:0.0.0.0:1"), to=parse_address("tcp:127.0.0.1:6379"))
    with pytest.raises(ConfigError, match=r"ingress\.allow_parent_target: not with a vsock listen"):
        IngressConfig(
            listen=parse_address("vsock:ANY:1"),
            to=parse_address("tcp:127.0.0.1:6379"),
            allow_parent_target=True,
        )


def test_check_refuses_an_ingress_to_the_parent(tmp_path: Path, capsys) -> None:
    from attested.cli import main

    path = tmp_path / "parent.toml"
    path.write_text("[[ingress]]\nlisten = 'vsock:ANY:9000'\nto = 'tcp:127.0.0.1:22'\n")
    assert main(["parent", "--config", str(path), "--check"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"attested parent: {path}: ingress[0].to: tcp:127.0.0.1:22 is not")
    assert "allow_parent_target" in line


def test_text_with_a_lone_surrogate_is_a_problem() -> None:
    """``parse_parent_config`` takes text; a surrogate would crash when used as a path."""
    problems = problems_of("[egress]\nlisten = 'vsock:ANY:8000'\nallowlist = '\ud800.yaml'\n")
    assert problems == (
        "the configuration file is not UTF-8 text (a lone surrogate at character 48)",
    )


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("vsock:ANY:\u00b2", "port '\u00b2' is not a number"),  # isdigit(), but int() fails
        ("tcp:127.0.0.1:\u0668\u0660", "port '\u0668\u0660' is not a number"),  # int() says 80
        ("vsock:\u0661\u0666:8000", "CID must be a number or ANY"),  # int() says 16
    ],
)
def test_addresses_take_ascii_digits_only(address: str, problem: str) -> None:
    (found,) = problems_of(f"[logs]\nlisten = '{address}'\nout = '-'\n")
    assert found.startswith("logs.listen: ")
    assert problem in found


def test_a_file_name_too_long_for_the_system_is_no_crash(tmp_path: Path) -> None:
    """``Path.is_dir()`` raised ``OSError`` (ENAMETOOLONG) for ``out``: a traceback, not a list."""
    name = "a" * 5000
    config = parse_parent_config(
        f"[logs]\nlisten = 'tcp:127.0.0.1:0'\nout = '{name}'\n", base=tmp_path
    )
    assert config.logs is not None
    assert config.logs.out == tmp_path / name
