"""``keypolicy generate --format terraform|cloudformation``: the policy inside is the JSON one.

The Terraform output is read by a real HCL2 parser (python-hcl2), the CloudFormation YAML
by PyYAML with constructors for CloudFormation's tags written here (not our reader), and
both CloudFormation outputs pass AWS's own linter, cfn-lint, which runs offline. The
golden files are policies/generated/hello-signed.{tf,cfn.yaml,cfn.json}
(tests/keypolicy/test_policies.py regenerates them byte for byte).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

from attested.cli import main
from attested.errors import ConfigurationError
from attested.keypolicy import ENCLAVE_TAG, render_cloudformation, render_terraform
from attested.keypolicy._sources import read_policy_input
from tests.keypolicy.values import ACCOUNT, ADMIN_ROLE, ENCLAVE_ROLE, UG

GENERATED = Path(__file__).resolve().parents[2] / "policies" / "generated"
BASE = ["keypolicy", "generate", "--account", ACCOUNT, "--enclave-role", ENCLAVE_ROLE,
        "--admin-role", ADMIN_ROLE, "--deny-without-attestation"]  # fmt: skip
PCRS = [a for i in (0, 1, 2, 8) for a in ("--pcr", f"{i}={UG[i]}")]


def _generate(capsys, *extra: str) -> str:
    assert main([*BASE, *PCRS, *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return str(out)


class _CfnLoader(yaml.SafeLoader):
    """PyYAML, with CloudFormation's short-form tags turned into their long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        value: object = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def _terraform_policy(text: str, name: str = "enclave") -> tuple[str, dict[str, Any]]:
    options = SerializationOptions(
        preserve_heredocs=False, strip_string_quotes=True, with_comments=False
    )
    parsed = hcl2.load(io.StringIO(text), serialization_options=options)
    (resource,) = parsed["resource"]
    key = resource["aws_kms_key"][name]
    # python-hcl2 gives the heredoc as the body of an HCL string: undo its escapes.
    policy = json.loads('"' + key["policy"].replace("\n", "\\n") + '"')
    return policy, key


def test_terraform_embeds_the_json_policy_byte_for_byte(capsys) -> None:
    policy_json = _generate(capsys)
    text = _generate(capsys, "--format", "terraform")
    policy, key = _terraform_policy(text)
    assert policy.rstrip("\n") == policy_json.rstrip("\n")  # the heredoc's text, unchanged
    assert json.loads(policy) == json.loads(policy_json)
    assert key["tags"] == {ENCLAVE_TAG[0]: ENCLAVE_TAG[1]}
    assert key["enable_key_rotation"] is True
    assert key["deletion_window_in_days"] == 30
    assert "bypass_policy_lockout_safety_check" not in key  # KMS's lockout check stays on
    parsed = hcl2.load(io.StringIO(text))
    assert parsed["output"][0]['"enclave_key_arn"']["value"] == "${aws_kms_key.enclave.arn}"


def test_terraform_golden_file_parses() -> None:
    text = (GENERATED / "hello-signed.tf").read_text()
    policy, _ = _terraform_policy(text)
    assert json.loads(policy) == json.loads((GENERATED / "hello-signed.json").read_text())


def test_terraform_escapes_template_sequences() -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "literal ${aws:username} and %{if}",
                "Effect": "Allow",
                "Principal": {"AWS": ADMIN_ROLE},
                "Action": "kms:DescribeKey",
                "Resource": "*",
            }
        ],
    }
    text = render_terraform(policy)
    assert "$${aws:username}" in text
    assert "%%{if}" in text
    assert "${aws:username}" not in text.replace("$${", "")


def test_cloudformation_yaml_embeds_the_json_policy(capsys) -> None:
    policy_json = json.loads(_generate(capsys))
    text = _generate(capsys, "--format", "cloudformation")
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    key = template["Resources"]["EnclaveKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["KeyPolicy"] == policy_json
    assert key["Properties"]["Tags"] == [{"Key": "attested:enclave", "Value": "true"}]
    assert template["Outputs"]["EnclaveKeyArn"]["Value"] == {"Fn::GetAtt": ["EnclaveKey", "Arn"]}
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"  # a string, not a date


def test_cloudformation_json_embeds_the_json_policy(capsys) -> None:
    policy_json = json.loads(_generate(capsys))
    template = json.loads(_generate(capsys, "--format", "cloudformation-json"))
    assert template["Resources"]["EnclaveKey"]["Properties"]["KeyPolicy"] == policy_json
    assert template["Outputs"]["EnclaveKeyArn"]["Value"] == {"Fn::GetAtt": ["EnclaveKey", "Arn"]}
    yaml_text = _generate(capsys, "--format", "cloudformation")
    assert yaml.load(yaml_text, Loader=_CfnLoader) == template  # noqa: S506


def test_yaml_keys_a_yaml_1_1_reader_would_change_are_quoted() -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"Null": {"kms:RecipientAttestation:ImageSha384": "true"}},
            }
        ],
    }
    text = render_cloudformation(policy)
    assert '"Null":' in text
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506
    assert template["Resources"]["EnclaveKey"]["Properties"]["KeyPolicy"] == policy


def test_our_reader_finds_the_same_policy_in_every_output(capsys) -> None:
    policy_json = _generate(capsys)
    for fmt in ("cloudformation", "cloudformation-json"):
        found = read_policy_input(_generate(capsys, "--format", fmt).encode())
        (source,) = found.sources
        assert source.resource == "Resources.EnclaveKey"
        assert source.marker == "its policy names kms:RecipientAttestation"
        assert source.policy is not None
        assert source.assumptions == ()
        assert found.kind == "cloudformation template"
    assert main(["keypolicy", "lint", str(GENERATED / "hello-signed.cfn.yaml")]) == 0
    assert main(["keypolicy", "lint", str(GENERATED / "hello-signed.cfn.json")]) == 0
    out, _ = capsys.readouterr()
    assert "Resources.EnclaveKey: enclave key" in out
    assert policy_json


# The project environment's cfn-lint (the test extra), not another one on PATH.
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))


@pytest.mark.parametrize("name", ["hello-signed.cfn.yaml", "hello-signed.cfn.json"])
def test_cloudformation_output_passes_cfn_lint(name: str) -> None:
    # cfn-lint carries AWS's resource specifications in its package: no network.
    result = subprocess.run(
        [CFN_LINT, "--", str(GENERATED / name)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    text = (GENERATED / "hello-signed.cfn.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("PendingWindowInDays: 30", "PendingWindowInDays: 3"))
    result = subprocess.run(
        [CFN_LINT, "--", str(broken)], capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode != 0
    assert "E3034 3 is less than the minimum of 7" in result.stdout


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--format", "terraform", "--resource-name", "1bad"], "not a Terraform resource name"),
        (["--format", "cloudformation", "--resource-name", "Enclave_Key"], "logical id"),
        (["--resource-name", "x"], "--resource-name applies to"),
        (["--format", "yaml"], "invalid choice"),
        (["--format", "terraform", "--operations", "DeriveSharedSecret"], "key-agreement"),
    ],
)
def test_format_errors(capsys, extra, needle) -> None:
    assert main([*BASE, *PCRS, *extra]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert needle in err


def test_resource_names(capsys) -> None:
    text = _generate(capsys, "--format", "terraform", "--resource-name", "payments-key")
    _, key = _terraform_policy(text, "payments-key")
    assert key["description"]
    assert 'output "payments_key_key_arn"' in text
    template = json.loads(
        _generate(capsys, "--format", "cloudformation-json", "--resource-name", "PaymentsKey")
    )
    assert set(template["Resources"]) == {"PaymentsKey"}


def test_renderers_refuse_bad_names() -> None:
    with pytest.raises(ConfigurationError):
        render_terraform({"Statement": []}, name="a b")
