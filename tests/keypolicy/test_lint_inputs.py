"""``keypolicy lint`` on Terraform plans and states, CloudFormation templates and the rest.

The plans in tests/vectors/iac/ are written by hand in the format ``terraform show -json``
documents (format_version 1.2): ``voided-plan.json`` is the case of
aws-nitro-enclaves-sdk-c#157, a key policy rendered by ``data.aws_iam_policy_document``
whose account-root ``kms:*`` statement voids the attestation condition beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attested.cli import main
from attested.errors import MalformedError
from attested.keypolicy._cloudformation import load_yaml_template
from attested.keypolicy._sources import read_policy_input
from tests.kit import VECTORS

IAC = VECTORS / "iac"
GENERATED = Path(__file__).resolve().parents[2] / "policies" / "generated"


def _lint(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["keypolicy", "lint", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _report(capsys, *argv: str) -> tuple[int, dict[str, Any]]:
    status, out, err = _lint(capsys, *argv, "--json")
    assert err == ""
    return status, json.loads(out)


def test_a_plan_whose_root_statement_voids_attestation_exits_1_naming_it(capsys) -> None:
    status, out, err = _lint(capsys, str(IAC / "voided-plan.json"))
    assert status == 1
    assert err == ""
    assert out.splitlines()[0].startswith(
        "error    unconditional-attested-allow: aws_kms_key.enclave: "
        "Sid 'EnableIAMUserPermissions': lets any identity of account 111122223333"
    )
    assert out.splitlines()[-1] == (
        "terraform plan, 1 KMS key policy, 1 judged: 1 error(s), 0 warning(s)"
    )
    status, report = _report(capsys, str(IAC / "voided-plan.json"))
    assert report["input"] == "terraform plan"
    assert [(f["resource"], f["rule"]) for f in report["findings"]] == [
        ("aws_kms_key.enclave", "unconditional-attested-allow")
    ]
    assert report["resources"][0]["marker"] == "its policy names kms:RecipientAttestation"


def test_the_same_plan_fixed_is_clean(tmp_path: Path, capsys) -> None:
    plan = json.loads((IAC / "voided-plan.json").read_text())
    generated = (GENERATED / "hello-signed.json").read_text()
    plan["resource_changes"][0]["change"]["after"]["policy"] = generated
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    status, out, _ = _lint(capsys, str(path))
    assert status == 0
    assert "judged   aws_kms_key.enclave: enclave key" in out


def test_every_kind_of_key_in_a_plan(capsys) -> None:
    status, report = _report(capsys, str(IAC / "mixed-plan.json"))
    assert status == 1
    rows = {r["resource"]: r for r in report["resources"]}
    assert {k: r["status"] for k, r in rows.items()} == {
        'module.payments.aws_kms_key.this["primary"]': "linted",  # clean, tagged
        "aws_kms_key.logs": "skipped",  # no marker
        "aws_kms_key.tenant": "not-judged",  # tagged, policy known only after apply
        "aws_kms_key_policy.tenant": "linted",  # voided
    }  # aws_kms_key.retired is being destroyed: not there
    assert rows["aws_kms_key.tenant"]["marker"] == "tag attested:enclave=true"
    assert [(f["resource"], f["rule"]) for f in report["findings"]] == [
        ("aws_kms_key.tenant", "not-judged"),
        ("aws_kms_key_policy.tenant", "unconditional-attested-allow"),
    ]
    status, report = _report(capsys, str(IAC / "mixed-plan.json"), "--all")
    rows = {r["resource"]: r for r in report["resources"]}
    assert rows["aws_kms_key.logs"]["status"] == "not-judged"


def test_planned_values_and_state_without_resource_changes(tmp_path: Path, capsys) -> None:
    plan = json.loads((IAC / "mixed-plan.json").read_text())
    del plan["resource_changes"]
    path = tmp_path / "planned.json"
    path.write_text(json.dumps(plan))
    status, report = _report(capsys, str(path))
    assert status == 1
    assert {r["resource"]: r["status"] for r in report["resources"]} == {
        "aws_kms_key.logs": "skipped",
        "aws_kms_key.tenant": "not-judged",
        "aws_kms_key_policy.tenant": "linted",
        'module.payments.aws_kms_key.this["primary"]': "linted",
    }
    state = {
        "format_version": "1.0",
        "terraform_version": "1.9.8",
        "values": plan["planned_values"],
    }
    path.write_text(json.dumps(state))
    status, report = _report(capsys, str(path))
    assert report["input"] == "terraform state"
    assert status == 1


def test_a_cloudformation_template_with_intrinsics(capsys) -> None:
    status, out, _ = _lint(capsys, str(IAC / "voided-template.yaml"))
    assert status == 1
    assert (
        "error    unconditional-attested-allow: Resources.EnclaveKey: Sid 'Enable IAM User" in out
    )
    assert (
        "error    not-judged: Resources.ImportedKey: cannot be judged: its KeyPolicy uses an "
        "intrinsic that cannot be resolved offline: Fn::ImportValue at "
        "Resources.ImportedKey.Properties.KeyPolicy.Statement[0].Principal.AWS"
    ) in out
    assert "assumed  Resources.EnclaveKey: AWS::AccountId = 000000000000 (a stand-in" in out
    assert "skipped  Resources.LogsKey: not an enclave key" in out
    status, report = _report(
        capsys, str(IAC / "voided-template.yaml"), "--parameter", "AWS::AccountId=111122223333"
    )
    enclave = next(r for r in report["resources"] if r["resource"] == "Resources.EnclaveKey")
    assert enclave["assumptions"] == [
        "parameter EnclaveImage = 7fb5c55bc2ecbb68ed99a13d7122abfc0666b926a79d5379bc58b9445c8"
        "4217f59cfdd36c08b2c79552928702efe23e4 (its Default)"
    ]
    message = report["findings"][0]["message"]
    assert "account 111122223333" in message


def test_template_resolution_follows_the_role_and_parameters(tmp_path: Path, capsys) -> None:
    # With the root statement gone the template is clean: the enclave statement's
    # principal (!GetAtt ParentRole.Arn) and PCR (!Ref EnclaveImage) were resolved.
    text = (IAC / "voided-template.yaml").read_text()
    start = text.index("          - Sid: Enable IAM User Permissions")
    end = text.index("          - Sid: Enclave\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(text[:start] + text[end:].split("  LogsKey:")[0])
    status, report = _report(capsys, str(fixed))
    assert status == 0, report
    assert report["resources"][0]["status"] == "linted"
    source = read_policy_input(fixed.read_bytes()).sources[0]
    assert source.policy is not None
    (statement,) = source.policy.statements
    assert statement.principals is not None
    assert statement.principals.aws == ("arn:aws:iam::000000000000:role/enclave-parent",)
    # A parameter given on the command line wins over its default.
    status, report = _report(capsys, str(fixed), "--parameter", "EnclaveImage=" + "0" * 96)
    assert status == 1
    assert "pcr-value" in [f["rule"] for f in report["findings"]]


def test_get_key_policy_and_plain_policies_are_as_before(tmp_path: Path, capsys) -> None:
    policy = (GENERATED / "hello-signed.json").read_text()
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"Policy": policy, "PolicyName": "default"}))
    status, report = _report(capsys, str(path))
    assert (status, report["input"], report["findings"]) == (0, "get-key-policy", [])
    assert "resources" not in report


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"hello": "world"}', "a JSON object with hello"),
        ("[1, 2]", "not a policy, 'aws kms get-key-policy' output, Terraform plan"),
        ("just: yaml\n", "not a policy"),
        ("Resources:\n  A: &x {Type: AWS::KMS::Key}\n  B: *x\n", "aliases are not supported"),
        ("Resources:\n  A: 1\n  A: 2\n", "duplicate key 'A'"),
        ("Resources:\n  A: !Bogus x\n", "unknown tag !Bogus"),
        ('{"Policy": "{}", "PolicyName": "default"}', "has no Statement"),
    ],
)
def test_inputs_that_are_none_of_the_kinds(tmp_path: Path, capsys, content, needle) -> None:
    path = tmp_path / "input"
    path.write_text(content)
    status, out, err = _lint(capsys, str(path))
    assert status == 2
    assert out == ""
    assert needle in err
    assert err.count("\n") == 1


def test_yaml_dates_stay_strings() -> None:
    template = load_yaml_template(b"Resources: {}\nVersion: 2012-10-17\n")
    assert template == {"Resources": {}, "Version": "2012-10-17"}


def test_a_template_over_1_mib_is_refused() -> None:
    data = b'{"Resources": {}, "Pad": "' + b"x" * (1024 * 1024) + b'"}'
    with pytest.raises(MalformedError, match="more than the limit"):
        read_policy_input(data)


# -- arbitrary input raises only MalformedError ------------------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Policy",
                    "PolicyName",
                    "Resources",
                    "Type",
                    "Properties",
                    "KeyPolicy",
                    "Ref",
                    "Fn::Sub",
                    "Fn::GetAtt",
                    "Fn::Join",
                    "format_version",
                    "resource_changes",
                    "planned_values",
                    "values",
                    "root_module",
                    "resources",
                    "child_modules",
                    "change",
                    "after",
                    "after_unknown",
                    "actions",
                    "address",
                    "type",
                    "mode",
                    "policy",
                    "tags",
                    "Tags",
                    "Effect",
                    "Action",
                    "Principal",
                    "Parameters",
                    "Default",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)
_TYPES = st.sampled_from(["AWS::KMS::Key", "aws_kms_key", "aws_kms_key_policy", "AWS::IAM::Role"])


def _read(data: bytes) -> None:
    try:
        found = read_policy_input(data)
    except MalformedError:
        return
    for source in found.sources:
        assert (source.policy is None) != (source.problem is None)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    _read(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES, _TYPES)
def test_arbitrary_json_shaped_like_the_inputs(value: object, resource_type: str) -> None:
    text = json.dumps(value).replace('"x"', json.dumps(resource_type))
    _read(text.encode())
    plan = {"format_version": "1.2", "resource_changes": [value]}
    _read(json.dumps(plan).replace('"x"', json.dumps(resource_type)).encode())
    template = {"Resources": {"K": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": value}}}}
    _read(json.dumps(template).encode())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="Resources:!RefSubGetAt-[]{}&*\n #'\"0123.x", max_size=200))
def test_arbitrary_yaml(text: str) -> None:
    _read(("Resources:\n" + text).encode())
