"""The emulator's configuration: the identities file and the settings, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from attested.cli import main
from attested.emulator import EmulatorConfig, FaultConfig, load_identities, parse_identities
from attested.emulator._config import emulator_config
from attested.errors import ConfigError, ConfigurationError
from attested.trust import TrustRoot
from tests.emulator.conftest import Enclave

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ARN = "arn:aws:iam::111122223333:role/parent"
GOOD = {"access_key_id": "AKIDGOOD", "secret_access_key": SECRET, "arn": ARN}


def test_every_problem_of_an_identities_file(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    entries = [
        {"access_key_id": "A", "arn": "x"},
        {**GOOD, "secret_access_key": 5, "typo": 1},
        GOOD,
        {**GOOD, "access_key_id": "AKIDOTHER", "arn": "arn:aws:s3:::bucket"},
        GOOD,
        7,
    ]
    path.write_text(json.dumps({"identities": entries, "extra": []}))
    with pytest.raises(ConfigError) as caught:
        load_identities(path)
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.source == str(path)
    assert caught.value.problems == (
        "extra: unknown key or section (known: identities)",
        "identities[5]: must be a table, not an integer",
        "identities[0]: secret_access_key is required (a non-empty string)",
        "identities[1].typo: unknown key (known: access_key_id, secret_access_key, arn, "
        "session_token, principal_arn)",
        "identities[1].secret_access_key: must be a string, not an integer",
        "identities[3]: arn must be an IAM or STS ARN with a 12-digit account, such as "
        "arn:aws:iam::111122223333:role/parent",
        "identities[4].access_key_id: 'AKIDGOOD' appears twice",
    )
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "document",
    [[], {}, {"identities": []}, {"identities": "x"}, {"identities": {"a": 1}}, None],
    ids=["a list", "empty", "no entries", "a string", "a table", "null"],
)
def test_documents_without_identities(document: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_identities(document, source="ids")
    assert str(caught.value).startswith("ids: ")


def test_a_valid_file_and_a_secret_in_the_wrong_place(tmp_path: Path) -> None:
    path = tmp_path / "ids.toml"
    path.write_text(
        f'[[identities]]\naccess_key_id = "AKIDTOML"\nsecret_access_key = "{SECRET}"\n'
        f'arn = "{ARN}"\n'
    )
    (identity,) = load_identities(path).values()
    assert identity.arn == ARN
    path.write_text(f'[[identities]]\naccess_key_id = "X"\nsecret_access_key = "{SECRET}" x\n')
    with pytest.raises(ConfigError) as caught:
        load_identities(path)
    assert str(caught.value) == f"{path}: identities file is not valid TOML"


def test_fault_settings_report_every_problem_and_stay_value_errors() -> None:
    with pytest.raises(ValueError, match="must be") as caught:
        FaultConfig(throttle_rate=1.5, latency=-1, latency_jitter=31, max_faults=-1)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.problems == (
        "throttle_rate: must be between 0 and 1",
        "latency: must be between 0 and 30 seconds",
        "latency_jitter: must be between 0 and 30 seconds",
        "max_faults: must be a non-negative integer or None",
    )
    with pytest.raises(ConfigError, match=r"throttle_rate \+ error_rate \+ drop_rate"):
        FaultConfig(throttle_rate=0.6, error_rate=0.6)


def test_emulator_settings_report_every_problem(tmp_path: Path) -> None:
    root = TrustRoot.aws_nitro()
    with pytest.raises(ValueError, match="port") as caught:
        EmulatorConfig(trust_root=root, port=70000, region="mars", account_id="12")
    assert isinstance(caught.value, ConfigError)
    assert len(caught.value.problems) == 3
    with pytest.raises(TypeError):  # misuse stays a TypeError
        EmulatorConfig(trust_root=object())  # type: ignore[arg-type]
    bad = tmp_path / "ids.json"
    bad.write_text(json.dumps({"identities": [{"access_key_id": "A", "arn": "x"}]}))
    with pytest.raises(ConfigError) as all_of_them:
        emulator_config(
            faults={"drop_rate": 2.0},
            identities_file=bad,
            trust_root=root,
            region="x",
        )
    assert all_of_them.value.problems == (
        "drop_rate: must be between 0 and 1",
        f"{bad}: identities[0]: secret_access_key is required (a non-empty string)",
        "region: 'x' does not look like an AWS region",
    )
    config = emulator_config(faults={"seed": 7}, trust_root=root, region="eu-west-1")
    assert (config.faults.seed, config.region) == (7, "eu-west-1")


def test_the_cli_prints_every_problem_at_once(
    enclave: Enclave, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "sim"
    state.mkdir()
    state.joinpath("root.pem").write_bytes(
        enclave.kit.pki.root.certificate.public_bytes(Encoding.PEM)
    )
    bad = tmp_path / "ids.json"
    bad.write_text(json.dumps({"identities": [{"access_key_id": "A", "arn": "x"}]}))
    flags = ["--throttle-rate", "2", "--latency", "40", "--identities", str(bad)]
    assert main(["emulator", "kms", "--simulated-state", str(state), *flags]) == 2
    err = capsys.readouterr().err
    for problem in ("throttle_rate: must", "latency: must", "secret_access_key is required"):
        assert problem in err
