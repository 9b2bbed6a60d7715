"""The key-policy generator: shape, determinism, several sets, refusals, warnings."""

from __future__ import annotations

import json
import random
import warnings
from typing import Any

import pytest

from attested.errors import ConfigurationError, SecurityWarning
from attested.keypolicy import (
    ADMIN_ACTIONS,
    ATTESTED_OPERATIONS,
    MeasurementSet,
    generate_policy,
    lint_policy,
    parse_policy_json,
    render_policy,
)
from tests.keypolicy.values import (
    ACCOUNT,
    ADMIN_ROLE,
    CLI_X86,
    ENCLAVE_ROLE,
    UG,
    UG_PCR3,
    UG_PCR3_ROLE,
    UG_PCR4,
    UG_PCR4_INSTANCE,
    ZERO,
)

IMAGE = "kms:RecipientAttestation:ImageSha384"


def _set(values: dict[int, str], source: str = "", debug: bool = False) -> MeasurementSet:
    return MeasurementSet(
        pcrs={i: bytes.fromhex(v) for i, v in values.items()}, source=source, debug_mode=debug
    )


def _generate(*sets: MeasurementSet, **kwargs):
    args: dict[str, Any] = {
        "account": ACCOUNT,
        "enclave_role": ENCLAVE_ROLE,
        "admin_role": ADMIN_ROLE,
        "measurements": sets or (_set(UG),),
    }
    args.update(kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = generate_policy(**args)
    return policy, [str(w.message) for w in caught if issubclass(w.category, SecurityWarning)]


def _statement(policy, sid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in policy["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1
    return found[0]


def test_default_policy_shape() -> None:
    policy, notes = _generate()
    assert notes == []
    assert policy["Version"] == "2012-10-17"
    assert [s["Sid"] for s in policy["Statement"]] == [
        "KeyAdministration",
        "EnclaveDescribeKey",
        "EnclaveAttestedOperations",
    ]
    admin = _statement(policy, "KeyAdministration")
    assert admin["Principal"] == {"AWS": ADMIN_ROLE}
    assert admin["Action"] == list(ADMIN_ACTIONS)
    for forbidden in (*ATTESTED_OPERATIONS, "kms:CreateGrant", "kms:Encrypt", "kms:ReEncryptFrom"):
        assert forbidden not in admin["Action"]
    assert not any("*" in action for action in admin["Action"])
    describe = _statement(policy, "EnclaveDescribeKey")
    assert describe["Action"] == "kms:DescribeKey"
    assert "Condition" not in describe
    attested = _statement(policy, "EnclaveAttestedOperations")
    assert attested["Principal"] == {"AWS": ENCLAVE_ROLE}
    assert attested["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert attested["Condition"] == {
        "StringEqualsIgnoreCase": {
            IMAGE: UG[0],
            "kms:RecipientAttestation:PCR0": UG[0],
            "kms:RecipientAttestation:PCR1": UG[1],
            "kms:RecipientAttestation:PCR2": UG[2],
            "kms:RecipientAttestation:PCR8": UG[8],
        }
    }
    assert not any(
        s.get("Principal") == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"} for s in policy["Statement"]
    )


def test_generated_policy_lints_clean() -> None:
    policy, _ = _generate(deny_without_attestation=True, role_arn=UG_PCR3_ROLE)
    assert lint_policy(parse_policy_json(render_policy(policy).encode())) == ()


def test_deny_without_attestation_statement() -> None:
    policy, _ = _generate(deny_without_attestation=True, operations=["Decrypt"])
    deny = _statement(policy, "DenyWithoutAttestation")
    assert deny == {
        "Sid": "DenyWithoutAttestation",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["kms:Decrypt"],
        "Resource": "*",
        "Condition": {"Null": {IMAGE: "true"}},
    }


def test_pcr3_and_pcr4_from_the_aws_guide_examples() -> None:
    policy, _ = _generate(
        role_arn=UG_PCR3_ROLE, instance_ids=[UG_PCR4_INSTANCE, UG_PCR4_INSTANCE], pcrs=[0]
    )
    condition = _statement(policy, "EnclaveAttestedOperations")["Condition"]
    values = condition["StringEqualsIgnoreCase"]
    assert values["kms:RecipientAttestation:PCR3"] == UG_PCR3
    assert values["kms:RecipientAttestation:PCR4"] == UG_PCR4
    assert set(values) == {
        IMAGE,
        "kms:RecipientAttestation:PCR0",
        "kms:RecipientAttestation:PCR3",
        "kms:RecipientAttestation:PCR4",
    }


def test_several_sets_become_value_lists_in_input_order() -> None:
    policy, notes = _generate(_set(UG, "old"), _set(CLI_X86, "new"), _set(UG, "old again"))
    values = _statement(policy, "EnclaveAttestedOperations")["Condition"]["StringEqualsIgnoreCase"]
    assert values[IMAGE] == [UG[0], CLI_X86[0]]
    assert values["kms:RecipientAttestation:PCR2"] == [UG[2], CLI_X86[2]]
    # PCR8 is only in the signed set: not pinned, and said so.
    assert "kms:RecipientAttestation:PCR8" not in values
    assert any("PCR8 is in some measurement sets but not all" in n for n in notes)


def test_rendering_is_deterministic_and_independent_of_input_order() -> None:
    first, _ = _generate(_set(UG), operations=["GenerateDataKey", "kms:Decrypt"])
    shuffled = dict(reversed(list(UG.items())))
    second, _ = _generate(_set(shuffled), operations=["kms:decrypt", "GenerateDataKey"])
    text = render_policy(first)
    assert text == render_policy(second)
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    items = list(first["Statement"][2].items())
    random.Random(1).shuffle(items)
    scrambled = dict(first)
    scrambled["Statement"] = [*first["Statement"][:2], dict(items)]
    assert render_policy(scrambled) == text
    lines = text.splitlines()
    assert lines[1] == '  "Version": "2012-10-17",'
    assert json.loads(text) == first


def test_all_zero_pcrs_are_refused_unless_allowed() -> None:
    debug = _set({0: ZERO, 1: ZERO, 2: ZERO})
    with pytest.raises(ConfigurationError, match="PCR0, PCR1, PCR2 all zero: that is a debug-mode"):
        _generate(debug)
    policy, notes = _generate(debug, allow_debug=True)
    assert any("debug-mode enclaves are admitted" in n for n in notes)
    values = _statement(policy, "EnclaveAttestedOperations")["Condition"]["StringEqualsIgnoreCase"]
    assert values[IMAGE] == ZERO


def test_all_zero_pcr3_is_not_a_debug_value() -> None:
    policy, notes = _generate(_set(UG | {3: ZERO}), pcrs=[0, 3])
    assert notes == []
    values = _statement(policy, "EnclaveAttestedOperations")["Condition"]["StringEqualsIgnoreCase"]
    assert values["kms:RecipientAttestation:PCR3"] == ZERO


def test_policy_without_pcr0_warns() -> None:
    policy, notes = _generate(_set(UG), _set(CLI_X86), pcrs=[1, 2])
    assert any("neither ImageSha384 nor PCR0 is pinned" in n for n in notes)
    assert any("combine across measurement sets" in n for n in notes)
    findings = lint_policy(parse_policy_json(render_policy(policy).encode()))
    assert [f.rule for f in findings] == ["image-not-pinned"]


def test_debug_mode_enclave_and_generate_random_and_cross_account_warn() -> None:
    _, notes = _generate(
        _set(UG, "enclaves.json[0] (app)", debug=True),
        operations=["Decrypt", "GenerateRandom"],
        enclave_role="arn:aws:iam::444455556666:role/parent",
    )
    assert any("enclaves.json[0] (app) runs in debug mode" in n for n in notes)
    assert any("GenerateRandom takes no key" in n for n in notes)
    assert any("account 444455556666" in n for n in notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"account": "1111-2222-3333"}, "12-digit"),
        ({"enclave_role": "arn:aws:iam::111122223333:user/alice"}, "not an IAM role ARN"),
        ({"enclave_role": "arn:aws:sts::111122223333:assumed-role/x/y"}, "not an IAM role ARN"),
        ({"admin_role": "KeyAdmin"}, "not an IAM role or user ARN"),
        ({"admin_role": ENCLAVE_ROLE}, "must differ"),
        ({"operations": ["Sign"]}, "'Sign' is not an attested operation"),
        ({"operations": ["kms:Encrypt"]}, "can never be met"),
        ({"operations": []}, "no operations"),
        ({"measurements": ()}, "no measurements"),
        ({"pcrs": [8], "measurements": (_set(CLI_X86, "x86"),)}, "PCR8 is not in x86 .an unsigned"),
        ({"pcrs": [32]}, "0..31"),
        ({"pcrs": []}, "nothing to pin"),
        ({"role_arn": "arn:aws:iam::111122223333:instance-profile/web"}, "role ARN"),
        ({"instance_ids": ["i-123"]}, "not an EC2 instance id"),
        ({"measurements": (_set(UG | {3: UG[0]}),), "role_arn": UG_PCR3_ROLE}, "PCR3 differs"),
    ],
)
def test_refusals(kwargs, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _generate(**kwargs)


def test_encryptors_get_encrypt_only() -> None:
    from attested.errors import ConfigurationError
    from attested.keypolicy import ENCRYPT_ACTIONS, MeasurementSet, generate_policy

    image = {0: b"\x11" * 48, 1: b"\x22" * 48, 2: b"\x33" * 48}
    kwargs: dict[str, Any] = {
        "account": "111122223333",
        "enclave_role": "arn:aws:iam::111122223333:role/enclave",
        "admin_role": "arn:aws:iam::111122223333:role/admin",
        "measurements": [MeasurementSet(pcrs=image)],
    }
    policy = generate_policy(**kwargs, encryptors=["arn:aws:iam::111122223333:role/producer"])
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == "EncryptOnly"]
    assert statement["Action"] == list(ENCRYPT_ACTIONS)
    assert "kms:ReEncryptFrom" not in str(policy)
    assert "EncryptOnly" not in str(generate_policy(**kwargs))
    with pytest.raises(ConfigurationError, match="encryptor"):
        generate_policy(**kwargs, encryptors=["not-an-arn"])
