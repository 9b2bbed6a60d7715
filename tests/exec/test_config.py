"""``attested exec``'s configuration: serve's loader reads exec's sections, every problem once."""

from __future__ import annotations

from pathlib import Path

import pytest

from attested.cli import main
from attested.errors import ConfigError
from attested.exec import load_exec_config, parse_s3_url
from attested.exec._config import (
    CiphertextFile,
    InlineCiphertext,
    S3Object,
    SecretsManagerItem,
    SsmParameter,
)
from attested.service import load_config

KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "enclave" / "enclave.toml"
BLOB = "AQICAHhJb2pnZW5lcmF0ZWRmb3J0ZXN0c29ubHkAAAAA"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "enclave.toml"
    path.write_text(f'[kms]\nallowed_keys = ["{KEY}"]\n' + text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_exec_config(write(tmp_path, text), env or {})
    return list(caught.value.problems)


def test_the_example_enclave_toml_loads() -> None:
    config = load_exec_config(EXAMPLE, {})
    assert config.service.egress_listen == "tcp:127.0.0.1:3128"
    names = [secret.name for secret in config.secrets]
    assert names == ["db-password", "api-token", "tls-key", "signing-seed"]
    db = config.secrets[0]
    assert isinstance(db.source, InlineCiphertext)
    assert (db.env, db.file, db.file_mode) == ("DB_PASSWORD", "/run/secrets/db-password", 0o400)
    assert dict(db.encryption_context) == {"app": "billing", "secret": "db-password"}
    assert isinstance(config.secrets[1].source, SecretsManagerItem)
    assert config.secrets[1].source.region == "us-east-1"
    assert isinstance(config.secrets[2].source, SsmParameter)
    assert isinstance(config.secrets[3].source, S3Object)
    assert config.secrets[3].optional
    assert [(h.name, h.address, h.ports) for h in config.hosts] == [
        ("dynamodb.us-east-1.amazonaws.com", "127.0.0.10", (443,))
    ]
    assert str(config.ingress[0].listen) == "vsock:ANY:8443"
    assert config.settings.app_name == "billing"


def test_the_issues_example_keys_work(tmp_path: Path) -> None:
    config = load_exec_config(
        write(
            tmp_path,
            f"""
[[secrets]]
name = "db-password"
ciphertext = "{BLOB}"
key_id = "{KEY}"
encryption_context = {{ app = "billing" }}
env = "DB_PASSWORD"
file = "/run/secrets/db-password"
optional = false

[[hosts]]
name = "dynamodb.us-west-2.amazonaws.com"
address = "127.0.0.10"
""",
        ),
        {},
    )
    (secret,) = config.secrets
    assert secret.key_id == KEY
    assert config.hosts[0].ports == (443,)


def test_every_problem_of_serve_and_exec_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"""
[api]
unix_mode = "0666"
[[secrets]]
name = "db-password"
ciphertext = "{BLOB}"
ssm = "/app/db"
key_id = "arn:aws:kms:us-east-1:111122223333:key/not-listed"
env = "1BAD"
[[secrets]]
name = "token"
s3 = "http://bucket/key"
key_id = "{KEY}"
[[secrets]]
name = "sm"
secretsmanager = "arn:aws:secretsmanager:us-east-1:12:secret:x"
key_id = "{KEY}"
env = "SAME"
flie = "/run/secrets/x"
[[secrets]]
name = "sm2"
secretsmanager = "app/db"
key_id = "{KEY}"
env = "SAME"
[[hosts]]
name = "db.example.com"
address = "10.0.0.5"
[[ingress]]
listen = "vsock:ANY:8443"
to = "tcp:10.0.0.1:8443"
[exec]
tmpfs = "never"
hosts_fle = "/etc/hosts"
""",
    )
    expected = [
        "api.unix_mode:",
        "secrets.db-password: give exactly one of",
        "secrets.db-password.key_id: is not in kms.allowed_keys",
        "secrets.db-password.env: must be an environment variable name",
        "secrets.token.s3: must be s3://BUCKET/KEY",
        "secrets.token: goes nowhere",
        "secrets.sm.secretsmanager: is not a Secrets Manager ARN",
        "secrets.sm.flie: unknown key",
        "secrets.sm2.env: 'SAME' is used by another secret",
        "hosts[0].address: must be an IPv4 address in 127.0.0.0/8",
        "ingress[0].to: must be the app inside the enclave",
        "exec.tmpfs: must be 'require' or 'warn'",
        "exec.hosts_fle: unknown key (did you mean 'hosts_file'?)",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in found), (start, found)
    assert not any(BLOB in problem for problem in found)  # never the ciphertext


def test_a_relative_ciphertext_file_is_taken_from_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f'[[secrets]]\nname = "a"\nkey_id = "{KEY}"\nenv = "A"\n'
    path = write(tmp_path, secret + 'ciphertext_file = "blobs/a.b64"\n')
    monkeypatch.chdir("/")  # not where the file is: the file's directory counts
    relative = load_exec_config(path, {}).secrets[0].source
    absolute = (
        load_exec_config(write(tmp_path, secret + 'ciphertext_file = "/etc/app/a.b64"\n'), {})
        .secrets[0]
        .source
    )
    assert relative == CiphertextFile(path=str(tmp_path.resolve() / "blobs" / "a.b64"))
    assert absolute == CiphertextFile(path="/etc/app/a.b64")


def test_allowed_keys_from_the_environment_count_for_key_id(tmp_path: Path) -> None:
    other = KEY.replace("1234abcd", "99999999")
    text = f'[[secrets]]\nname = "a"\nciphertext = "{BLOB}"\nkey_id = "{other}"\nenv = "A"\n'
    assert any("kms.allowed_keys" in p for p in problems(tmp_path, text))
    config = load_exec_config(write(tmp_path, text), {"ATTESTED_ALLOWED_KEYS": other})
    assert config.secrets[0].key_id == other


def test_serve_still_refuses_execs_sections(tmp_path: Path) -> None:
    path = write(tmp_path, '[exec]\napp_name = "x"\n')
    with pytest.raises(ConfigError, match="unknown key or section"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('ciphertext = "AQID"\nkey_id = "K"', "goes nowhere"),
        ('ciphertext = "not base64!"\nkey_id = "K"\nenv = "E"', "not standard padded base64"),
        ('ciphertext = "' + "A" * 20000 + '"\nkey_id = "K"\nenv = "E"', "longer than"),
        ('ciphertext = "AQID"\nenv = "E"', "key_id: required"),
        ('ciphertext = "AQID"\nkey_id = "K"\nfile = "relative/path"', "absolute path"),
        ('ciphertext = "AQID"\nkey_id = "K"\nfile = "/run/x/"', "not a directory"),
        ('ciphertext = "AQID"\nkey_id = "K"\nfile = "/run/x"\nmode = "0644"', '"0400" or "0440"'),
        ('ciphertext = "AQID"\nkey_id = "K"\nenv = "E"\nowner = "0"', "owner: applies only"),
        ('ciphertext = "AQID"\nkey_id = "K"\nfile = "/r/x"\nowner = "nosuchuser9"', "owner:"),
        ('ssm = "/a b"\nkey_id = "K"\nenv = "E"', "not an SSM parameter name"),
        ('s3 = "s3://AB/key"\nkey_id = "K"\nenv = "E"', "no valid bucket"),
        ('s3 = "s3://bucket"\nkey_id = "K"\nenv = "E"', "no valid object key"),
        ('ciphertext = "AQID"\nkey_id = "K"\nenv = "E"\nencryption_context = 3', "table of"),
        ('ciphertext = "AQID"\nkey_id = "K"\nenv = "E"\nencryption_context = {a = 1}', "strings"),
    ],
)
def test_a_secret_problem_is_named(tmp_path: Path, text: str, problem: str) -> None:
    found = problems(
        tmp_path, f'[kms.x]\n[[secrets]]\nname = "s"\n{text}\n'.replace("[kms.x]\n", "")
    )
    assert any(p.startswith("secrets.s") and problem in p for p in found), found


def test_list_caps(tmp_path: Path) -> None:
    many = "".join(
        f'[[secrets]]\nname = "s{i}"\nciphertext = "AQID"\nkey_id = "{KEY}"\nenv = "E{i}"\n'
        for i in range(65)
    )
    assert any("at most 64 tables" in p for p in problems(tmp_path, many))
    ports = ", ".join(str(p) for p in range(1000, 1017))
    text = f'[[hosts]]\nname = "a.example"\naddress = "127.0.0.10"\nports = [{ports}]\n'
    assert any("1 to 16 ports" in p for p in problems(tmp_path, text))


def test_hosts_rules(tmp_path: Path) -> None:
    text = """
[[hosts]]
name = "a.example"
address = "127.0.0.10"
[[hosts]]
name = "A.example."
address = "127.0.0.11"
[[hosts]]
name = "b.example"
address = "127.0.0.10"
[[hosts]]
name = "10.1.1.1"
address = "127.0.0.12"
"""
    found = problems(tmp_path, text)
    assert any(p.startswith("hosts[1].name: is listed twice") for p in found), found
    assert any("127.0.0.10:443 is used by another entry" in p for p in found), found
    assert any(p.startswith("hosts[3].name: required: a DNS name") for p in found), found


def test_s3_urls() -> None:
    assert parse_s3_url("s3://my-bucket.example/a/b c.bin") == ("my-bucket.example", "a/b c.bin")
    for bad in ("s3://bucket/", "s3://1.2.3.4/key", "s3://a..b/key", "s3:/bucket/key", "s3://b/k"):
        with pytest.raises(ValueError, match="s3://"):
            parse_s3_url(bad)


def test_check_and_usage_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, f'[[secrets]]\nname = "a"\nciphertext = "{BLOB}"\nkey_id = "{KEY}"\n'
                           'env = "A"\n')  # fmt: skip
    assert main(["exec", "--config", str(good), "--check"]) == 0
    assert "valid (1 secret(s), 0 host(s), 0 ingress forward(s))" in capsys.readouterr().out
    assert main(["exec", "--config", str(good)]) == 2
    assert "give the app's command after --" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[exec]\nparallel = 0\n")
    assert main(["exec", "--config", str(bad), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "attested exec: configuration: exec.parallel: must be at least 1" in err
    assert "kms.allowed_keys: required" in err
    assert "the app was not started" in err
