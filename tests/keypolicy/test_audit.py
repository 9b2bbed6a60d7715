"""``attested keypolicy audit`` against ``attested emulator kms``, a real KMS server on loopback.

The account holds enclave keys that are clean, enclave keys whose attestation is voided
(by an account-root statement, by KMS's default policy under an enclave tag, by an
``...IfExists`` condition, by an unconditional statement on a key an alias marks), and
keys that are not enclave keys at all. The audit must flag exactly the voided ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from attested.emulator import (
    DEV_ACCESS_KEY_ID,
    DEV_ARN,
    DEV_SECRET_ACCESS_KEY,
    EmulatorConfig,
    FaultConfig,
    KmsEmulator,
)
from attested.errors import UnavailableError
from attested.keypolicy import MeasurementSet, audit_keys, generate_policy, render_policy
from tests.kit import make_kit

pytestmark = pytest.mark.integration

ACCOUNT = "111122223333"
REGION = "us-east-1"
PARENT = f"arn:aws:iam::{ACCOUNT}:role/enclave-parent"
PCRS = {0: bytes.fromhex("a1" * 48), 1: bytes.fromhex("b2" * 48), 2: bytes.fromhex("c3" * 48)}
ROOT_STATEMENT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
ADMIN_STATEMENT = {
    "Sid": "Admin",
    "Effect": "Allow",
    "Principal": {"AWS": DEV_ARN},
    "Action": [
        "kms:CreateAlias",
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:ListResourceTags",
        "kms:PutKeyPolicy",
        "kms:TagResource",
    ],
    "Resource": "*",
}
ENCLAVE_TAG = [{"TagKey": "attested:enclave", "TagValue": "true"}]


def _good_policy() -> dict[str, Any]:
    # The developer identity administers the key, so it may read the policy.
    policy: dict[str, Any] = generate_policy(
        account=ACCOUNT,
        enclave_role=PARENT,
        admin_role=DEV_ARN,
        measurements=[MeasurementSet(pcrs=PCRS, source="test")],
        deny_without_attestation=True,
    )
    return policy


def _policy(*statements: Mapping[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass
class Account:
    endpoint: str
    keys: dict[str, str]  # name -> key id
    emulator: KmsEmulator

    def names(self, key_ids: object) -> set[str]:
        by_id = {v: k for k, v in self.keys.items()}
        return {by_id[k] for k in key_ids}  # type: ignore[attr-defined]


def _client(endpoint: str, attempts: int = 1) -> Any:
    return boto3.session.Session().client(
        "kms",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=DEV_ACCESS_KEY_ID,
        aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


def _populate(kms: Any) -> dict[str, str]:
    def create(
        policy: str | None = None, tags: list[dict[str, str]] | None = None, **kw: Any
    ) -> str:
        args: dict[str, Any] = {"Description": "audit test", **kw}
        if policy is not None:
            args["Policy"] = policy
        if tags:
            args["Tags"] = tags
        return str(kms.create_key(**args)["KeyMetadata"]["KeyId"])

    good = _good_policy()
    if_exists = _policy(
        ADMIN_STATEMENT,
        {
            "Sid": "EnclaveLooksGated",
            "Effect": "Allow",
            "Principal": {"AWS": PARENT},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringEqualsIgnoreCaseIfExists": {
                    "kms:RecipientAttestation:ImageSha384": PCRS[0].hex()
                }
            },
        },
    )
    unconditional = _policy(
        ADMIN_STATEMENT,
        {"Sid": "Parent", "Effect": "Allow", "Principal": {"AWS": PARENT},
         "Action": "kms:Decrypt", "Resource": "*"},
    )  # fmt: skip
    keys = {
        "good": create(render_policy(good)),
        "good-tagged": create(render_policy(good), ENCLAVE_TAG),
        "voided-root": create(
            render_policy(good | {"Statement": [ROOT_STATEMENT, *good["Statement"]]})
        ),
        "voided-default-tagged": create(None, ENCLAVE_TAG),
        "voided-if-exists": create(if_exists),
        "voided-alias": create(unconditional),
        "plain": create(None),
        "plain-tagged": create(None, [{"TagKey": "team", "TagValue": "payments"}]),
    }
    kms.create_alias(AliasName="alias/enclave/legacy", TargetKeyId=keys["voided-alias"])
    kms.create_alias(AliasName="alias/payments", TargetKeyId=keys["good"])
    kms.create_alias(AliasName="alias/logs", TargetKeyId=keys["plain"])
    return keys


VOIDED = {"voided-root", "voided-default-tagged", "voided-if-exists", "voided-alias"}
CLEAN = {"good", "good-tagged"}
PLAIN = {"plain", "plain-tagged"}


def _start(**faults: Any) -> KmsEmulator:
    config = EmulatorConfig(trust_root=make_kit().root, region=REGION, faults=FaultConfig(**faults))
    return KmsEmulator(config).start()


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    emulator = _start()
    try:
        yield Account(emulator.endpoint_url, _populate(_client(emulator.endpoint_url)), emulator)
    finally:
        emulator.stop()


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Credentials from the environment, as botocore's chain finds them; nothing else."""
    closed = _closed_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_ACCESS_KEY,
        # Ambient endpoints must not redirect the audit: these would fail it.
        "AWS_ENDPOINT_URL": closed,
        "AWS_ENDPOINT_URL_KMS": closed,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def _audit(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attested", "keypolicy", "audit", "--region", REGION, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else _environment(tmp_path),
        check=False,
    )


def test_the_audit_flags_exactly_the_voided_keys(account: Account, tmp_path: Path) -> None:
    result = _audit(tmp_path, "--endpoint-url", account.endpoint, "--json")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    statuses = {k["key_id"]: k["status"] for k in report["keys"]}
    assert set(statuses) == set(account.keys.values())
    by_status: dict[str, set[str]] = {}
    for key_id, status in statuses.items():
        by_status.setdefault(status, set()).add(key_id)
    assert account.names(by_status["error"]) == VOIDED
    assert account.names(by_status["ok"]) == CLEAN
    assert account.names(by_status["not-enclave"]) == PLAIN
    assert report["failed"] == len(VOIDED)
    keys = {k["key_id"]: k for k in report["keys"]}
    assert keys[account.keys["voided-alias"]]["marker"] == "alias alias/enclave/legacy"
    assert keys[account.keys["voided-default-tagged"]]["marker"] == "tag attested:enclave=true"
    assert keys[account.keys["good"]]["aliases"] == ["alias/payments"]
    rules = {r["rule"] for r in keys[account.keys["voided-root"]]["findings"]}
    assert "unconditional-attested-allow" in rules
    assert DEV_SECRET_ACCESS_KEY not in result.stdout


def test_one_line_per_key(account: Account, tmp_path: Path) -> None:
    result = _audit(tmp_path, "--endpoint-url", account.endpoint)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(account.keys) + 1
    line = next(x for x in lines if account.keys["voided-root"] in x)
    assert line.startswith(f"ERROR  {account.keys['voided-root']} -: enclave key (its policy")
    assert "unconditional-attested-allow (Sid 'Enable IAM User Permissions')" in line
    line = next(x for x in lines if account.keys["good"] in x)
    assert line.startswith(f"ok     {account.keys['good']} alias/payments: enclave key")
    assert lines[-1] == f"{len(account.keys)} key(s) in {REGION}: 6 judged, 4 failed, 2 skipped"
    assert DEV_SECRET_ACCESS_KEY not in result.stdout + result.stderr


def test_all_lints_every_customer_managed_key(account: Account, tmp_path: Path) -> None:
    result = _audit(tmp_path, "--endpoint-url", account.endpoint, "--all", "--json")
    report = json.loads(result.stdout)
    failed = {k["key_id"] for k in report["keys"] if k["status"] == "error"}
    assert account.names(failed) == VOIDED | PLAIN  # KMS's default policy voids attestation


def test_pagination_against_the_server(account: Account) -> None:
    results = list(audit_keys(_client(account.endpoint), page_size=2))
    assert {r.key_id for r in results} == set(account.keys.values())
    assert account.names({r.key_id for r in results if r.failed}) == VOIDED


def test_throttling_is_retried(tmp_path: Path) -> None:
    # KMS throttles per account and operation; botocore's standard retry mode backs off.
    reads = frozenset({"ListAliases", "ListKeys", "DescribeKey", "GetKeyPolicy"})
    emulator = _start(throttle_rate=0.5, max_faults=4, seed=7, operations=reads)
    try:
        keys = _populate(_client(emulator.endpoint_url))
        result = _audit(tmp_path, "--endpoint-url", emulator.endpoint_url, "--json")
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        by_id = {v: k for k, v in keys.items()}
        failed = {by_id[k["key_id"]] for k in report["keys"] if k["status"] == "error"}
        assert failed == VOIDED
        assert not [k for k in report["keys"] if k["status"] == "unreadable"]
        assert emulator.stats().faults["throttle"] == 4
    finally:
        emulator.stop()


def test_a_key_whose_policy_cannot_be_read_fails_the_audit(tmp_path: Path) -> None:
    emulator = _start()
    try:
        kms = _client(emulator.endpoint_url)
        describe_only = _policy(
            {"Sid": "Describe", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
             "Action": "kms:DescribeKey", "Resource": "*"},
        )  # fmt: skip
        key_id = kms.create_key(Policy=describe_only, BypassPolicyLockoutSafetyCheck=True)[
            "KeyMetadata"
        ]["KeyId"]
        result = _audit(tmp_path, "--endpoint-url", emulator.endpoint_url)
        assert result.returncode == 1
        assert result.stdout.startswith(
            f"ERROR  {key_id} -: not judged, a read failed: GetKeyPolicy: AccessDeniedException"
        )
    finally:
        emulator.stop()


def test_when_the_keys_cannot_be_listed(account: Account, tmp_path: Path) -> None:
    wrong = _environment(tmp_path, AWS_SECRET_ACCESS_KEY="not-the-secret-at-all")
    result = _audit(tmp_path, "--endpoint-url", account.endpoint, env=wrong)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith(
        "attested keypolicy audit: cannot list the account's keys: ListAliases:"
    )
    assert "InvalidSignatureException" in result.stderr
    assert "not-the-secret-at-all" not in result.stderr
    assert "Traceback" not in result.stderr
    closed = _audit(tmp_path, "--endpoint-url", _closed_port(), "--max-attempts", "1")
    assert closed.returncode == 3
    assert "cannot list the account's keys" in closed.stderr
    none = _environment(tmp_path, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    result = _audit(tmp_path, "--endpoint-url", account.endpoint, env=none)
    assert result.returncode == 3
    assert "no AWS credentials" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--region", "moon-1"], "is not a region name"),
        (["--endpoint-url", "http://user:pw@127.0.0.1:1"], "without user info"),
        (["--endpoint-url", "ftp://127.0.0.1"], "http:// or https://"),
        (["--max-attempts", "0"], "1..20"),
        (["--profile", "nope"], "nope"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _audit(tmp_path, *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1


class _RecordedAccount:
    """Answers in the shapes AWS KMS sends, for what the emulator cannot have: AWS-managed
    keys, an alias without a target, a page marker that comes back."""

    def __init__(self, *, loop: bool = False) -> None:
        self.loop = loop

    def list_aliases(self, **kwargs: Any) -> Mapping[str, Any]:
        return {
            "Aliases": [
                {
                    "AliasName": "alias/aws/s3",
                    "TargetKeyId": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                },
                {"AliasName": "alias/aws/ebs"},  # an AWS-managed alias not yet used: no key
            ],
            "Truncated": False,
        }

    def list_keys(self, **kwargs: Any) -> Mapping[str, Any]:
        if self.loop:
            return {"Keys": [], "Truncated": True, "NextMarker": "same"}
        return {"Keys": [{"KeyId": "0" * 8 + "-0000-0000-0000-" + "0" * 12}], "Truncated": False}

    def describe_key(self, **kwargs: Any) -> Mapping[str, Any]:
        return {
            "KeyMetadata": {"KeyId": kwargs["KeyId"], "KeyManager": "AWS", "KeyState": "Enabled"}
        }

    def get_key_policy(self, **kwargs: Any) -> Mapping[str, Any]:  # pragma: no cover
        raise AssertionError("an AWS-managed key's policy is not read")

    def list_resource_tags(self, **kwargs: Any) -> Mapping[str, Any]:  # pragma: no cover
        raise AssertionError("an AWS-managed key's tags are not read")


def test_aws_managed_keys_are_skipped() -> None:
    (result,) = audit_keys(_RecordedAccount())
    assert (result.status, result.aliases, result.failed) == (
        "aws-managed",
        ("alias/aws/s3",),
        False,
    )


def test_a_page_marker_that_comes_back_stops_the_audit() -> None:
    with pytest.raises(UnavailableError, match="the same page marker came back twice"):
        list(audit_keys(_RecordedAccount(loop=True)))
