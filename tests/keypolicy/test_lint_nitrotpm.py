"""The lint rules on NitroTPM key policies (EC2 instances from an Attestable AMI).

The voiding mistakes of enclave policies void NitroTPM policies the same way; three rules
are NitroTPM's own (docs/keypolicy.md, ADR 0133): an AMI of someone else's admitted, a
tampered kernel command line admitted (GHSA-xrv8-2pf5-f3q7), and enclave and NitroTPM keys
required by one statement. Each has cases that must and must not trigger it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attested import pcr
from attested.keypolicy import RULES
from tests.keypolicy.test_lint import allow, findings
from tests.keypolicy.values import ACCOUNT, ADMIN_ROLE, UG, ZERO

INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/app-instance"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
TPM = "kms:RecipientAttestation:NitroTPMPCR"
IMAGE = "kms:RecipientAttestation:ImageSha384"
PCR4 = UG[0]  # any 96-digit value stands for an AMI's measurement
OTHER_PCR4 = UG[1]
SECURE_BOOT = UG[2]  # a PCR7 of Secure Boot with your own keys
SB_OFF = pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex()
STANDARD = {"StringEqualsIgnoreCase": {f"{TPM}4": PCR4, f"{TPM}12": ZERO}}


def instance(condition: dict[str, Any] | None = STANDARD, **changes: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "Instance",
        "Effect": "Allow",
        "Principal": {"AWS": INSTANCE_ROLE},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": "*",
        "Condition": condition,
    }
    statement.update(changes)
    return {k: v for k, v in statement.items() if v is not None}


def rules(*statements: dict[str, Any]) -> set[str]:
    return {rule for rule, _, _ in findings(*statements)}


def pins(**values: str) -> dict[str, Any]:
    """A StringEqualsIgnoreCase condition on NitroTPM PCRs: ``pins(p4=..., p12=...)``."""
    return {"StringEqualsIgnoreCase": {f"{TPM}{k[1:]}": v for k, v in values.items()}}


# --- clean policies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        STANDARD,
        pins(p7=SECURE_BOOT),
        pins(p4=PCR4, p7=SB_OFF, p12=ZERO),  # the AWS samples' pattern: PCR7 is harmless here
        pins(p4=PCR4, p7=SECURE_BOOT),  # Secure Boot protects the command line
        {"StringEqualsIgnoreCase": {f"{TPM}4": [PCR4, OTHER_PCR4], f"{TPM}12": ZERO}},
    ],
)
def test_pinned_instance_policies_are_clean(condition: dict[str, Any]) -> None:
    admin = allow({"AWS": ADMIN_ROLE}, ["kms:PutKeyPolicy", "kms:DescribeKey"])
    assert findings(admin, instance(condition)) == []


# --- the enclave policies' voiding mistakes, on NitroTPM keys ----------------------------


@pytest.mark.parametrize(
    "statements",
    [
        pytest.param([allow({"AWS": ROOT}, "kms:*"), instance()], id="admin-root-kms-star"),
        pytest.param([allow({"AWS": ADMIN_ROLE}, "kms:*"), instance()], id="admin-kms-star"),
        pytest.param(
            [instance({"StringEqualsIgnoreCaseIfExists": STANDARD["StringEqualsIgnoreCase"]})],
            id="if-exists",
        ),
        pytest.param(
            [instance({"ForAllValues:StringEqualsIgnoreCase": STANDARD["StringEqualsIgnoreCase"]})],
            id="for-all-values",
        ),
        pytest.param(
            [instance({"StringNotEqualsIgnoreCase": {f"{TPM}4": OTHER_PCR4}})], id="negated"
        ),
        pytest.param([instance({"Null": {f"{TPM}4": "true"}})], id="null-true"),
    ],
)
def test_voiding_mistakes_fire_on_nitrotpm_keys(statements: list[dict[str, Any]]) -> None:
    assert "unconditional-attested-allow" in rules(*statements)


@pytest.mark.parametrize(
    ("condition", "rule"),
    [
        (pins(p4="*", p12=ZERO), "pcr-value"),
        (pins(p4="<PCR4 of your AMI>", p12=ZERO), "pcr-value"),
        (pins(p4="0x" + PCR4, p12=ZERO), "pcr-value"),
        ({"StringLike": {f"{TPM}4": "*", f"{TPM}12": ZERO}}, "nitrotpm-other-ami-admitted"),
        ({"StringEquals": {f"{TPM}4": PCR4, f"{TPM}12": ZERO}}, "case-sensitive-operator"),
        ({"ForAnyValue:StringEquals": {f"{TPM}4": PCR4}}, "case-sensitive-operator"),
    ],
)
def test_value_and_operator_mistakes_fire_on_nitrotpm_keys(
    condition: dict[str, Any], rule: str
) -> None:
    assert rule in rules(instance(condition))


def test_any_account_fires_for_a_shared_ami() -> None:
    everyone = instance(Principal="*")
    found = findings(everyone)
    assert [(r, s) for r, s, _ in found] == [("any-account", "Sid 'Instance'")]
    assert "shared AMI" in found[0][2]
    scoped = instance(
        {**STANDARD, "StringEquals": {"aws:PrincipalAccount": ACCOUNT}}, Principal="*"
    )
    assert "any-account" not in rules(scoped)


def test_risky_permission_for_the_instance_role() -> None:
    grants = allow({"AWS": INSTANCE_ROLE}, "kms:CreateGrant")
    assert "risky-permission" in rules(instance(), grants)
    assert "risky-permission" not in rules(
        instance(), allow({"AWS": ADMIN_ROLE}, "kms:CreateGrant")
    )


def test_an_identity_policy_with_an_instance_statement_is_judged_for_it() -> None:
    plain = allow(None, "kms:Decrypt", Sid="Plain")
    assert ("unconditional-attested-allow", "Sid 'Plain'") in {
        (r, s) for r, s, _ in findings(plain, instance(Principal=None))
    }


# --- nitrotpm-command-line-not-pinned --------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        pins(p4=PCR4),
        pins(p4=PCR4, p7=SB_OFF),  # the Secure-Boot-off PCR7 does not stop an outside cmdline
        pins(p0=UG[8], p4=PCR4),
        {"StringEqualsIgnoreCase": {f"{TPM}4": PCR4}, "Null": {f"{TPM}12": "false"}},
    ],
)
def test_pcr4_without_pcr12_admits_a_tampered_command_line(condition: dict[str, Any]) -> None:
    found = findings(instance(condition))
    assert [(r, s) for r, s, _ in found] == [("nitrotpm-command-line-not-pinned", "Sid 'Instance'")]
    message = found[0][2]
    assert "GHSA-xrv8-2pf5-f3q7" in message
    assert "NitroTPMPCR12" in message
    assert INSTANCE_ROLE in message


def test_a_pcr12_pin_or_secure_boot_closes_the_command_line() -> None:
    assert "nitrotpm-command-line-not-pinned" not in rules(instance(pins(p4=PCR4, p12=ZERO)))
    assert "nitrotpm-command-line-not-pinned" not in rules(instance(pins(p4=PCR4, p7=SECURE_BOOT)))
    # A Deny of every command line but the pinned one closes it as well.
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"StringNotEqualsIgnoreCase": {f"{TPM}12": ZERO}},
    }
    assert "nitrotpm-command-line-not-pinned" not in rules(instance(pins(p4=PCR4)), deny)


# --- nitrotpm-other-ami-admitted ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "needle"),
    [
        (pins(p7=SB_OFF), "Secure-Boot-off constant"),
        (pins(p7=SB_OFF, p12=ZERO), "Secure-Boot-off constant"),
        (pins(p0=UG[8], p1=UG[1]), "only firmware PCRs (NitroTPMPCR0, NitroTPMPCR1)"),
        (pins(p12=ZERO), "nothing it requires identifies your image"),
        (pins(p11=UG[8], p12=ZERO), "nothing it requires identifies your image"),
        ({"StringLike": {f"{TPM}4": "*"}}, "nothing it requires identifies your image"),
    ],
)
def test_a_statement_that_pins_no_image_admits_any_ami(
    condition: dict[str, Any], needle: str
) -> None:
    found = [f for f in findings(instance(condition)) if f[0] == "nitrotpm-other-ami-admitted"]
    assert len(found) == 1
    assert needle in found[0][2]
    assert "NitroTPMPCR4 with NitroTPMPCR12" in found[0][2]


def test_a_null_deny_does_not_stop_another_ami() -> None:
    root = allow({"AWS": ROOT}, "kms:*")
    null_deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"Null": {f"{TPM}4": "true"}},
    }
    # No document: the Deny applies. Any instance's document passes it, and the root
    # statement lets IAM grant Decrypt to it.
    assert rules(root, instance(), null_deny) == {"nitrotpm-other-ami-admitted"}
    pin_deny = {**null_deny, "Condition": {"StringNotEqualsIgnoreCase": {f"{TPM}4": PCR4}}}
    assert "nitrotpm-other-ami-admitted" not in rules(root, instance(), pin_deny)


def test_enclave_policies_are_not_judged_as_instance_policies() -> None:
    enclave = instance({"StringEqualsIgnoreCase": {IMAGE: UG[0]}}, Sid="Enclave")
    assert rules(enclave) == set()


# --- mixed-document-kinds -------------------------------------------------------------------


def test_enclave_and_nitrotpm_keys_in_one_statement_never_match() -> None:
    both = {"StringEqualsIgnoreCase": {IMAGE: UG[0], f"{TPM}4": PCR4, f"{TPM}12": ZERO}}
    found = findings(instance(both))
    assert [(r, s) for r, s, _ in found] == [("mixed-document-kinds", "Sid 'Instance'")]
    assert "never applies" in found[0][2]
    deny = instance(both, Effect="Deny", Sid="Deny")
    found = findings(instance(), deny)
    assert [(r, s) for r, s, _ in found] == [("mixed-document-kinds", "Sid 'Deny'")]
    assert "protects nothing" in found[0][2]


def test_one_statement_per_kind_is_clean() -> None:
    enclave = instance({"StringEqualsIgnoreCase": {IMAGE: UG[0]}}, Sid="Enclave")
    assert rules(enclave, instance()) == set()
    # A key absent from a document of the other kind is fine when its condition does not
    # require it (IfExists): that is not a statement that requires both.
    lenient = {
        "StringEqualsIgnoreCase": STANDARD["StringEqualsIgnoreCase"],
        "StringEqualsIgnoreCaseIfExists": {IMAGE: UG[0]},
    }
    assert "mixed-document-kinds" not in rules(instance(lenient))


def test_every_rule_is_documented() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "keypolicy.md").read_text()
    for rule, severity in RULES.items():
        assert f"| `{rule}` | {severity.value} |" in guide, rule
