"""Every lint rule with cases that must and must not trigger it."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.errors import MalformedError
from attested.keypolicy import RULES, Severity, lint_policy, parse_policy, parse_policy_json
from tests.keypolicy.values import ACCOUNT, ADMIN_ROLE, ENCLAVE_ROLE, UG, ZERO

IMAGE = "kms:RecipientAttestation:ImageSha384"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
PINNED = {"StringEqualsIgnoreCase": {IMAGE: UG[0], "kms:RecipientAttestation:PCR8": UG[8]}}


def enclave(**changes) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "Enclave",
        "Effect": "Allow",
        "Principal": {"AWS": ENCLAVE_ROLE},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": "*",
        "Condition": PINNED,
    }
    statement.update(changes)
    return {k: v for k, v in statement.items() if v is not None}


def allow(principal, action, **extra) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": "*"}
    if principal is not None:
        statement["Principal"] = principal
    statement.update(extra)
    return statement


def findings(*statements: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Lint a policy of ``statements``: (rule, statement, message) per finding."""
    policy = {"Version": "2012-10-17", "Statement": list(statements)}
    found = lint_policy(parse_policy_json(json.dumps(policy).encode()))
    for finding in found:
        assert finding.severity is RULES[finding.rule]
        assert finding.message.endswith(".")
    return [(f.rule, f.statement, f.message) for f in found]


def lint(*statements: dict[str, Any]) -> list[tuple[str, str]]:
    return [(rule, statement) for rule, statement, _ in findings(*statements)]


def rules(*statements: dict[str, Any]) -> set[str]:
    return {rule for rule, _ in lint(*statements)}


# --- unconditional-attested-allow -----------------------------------------------------------


def test_default_key_policy_root_statement_voids_the_pcr_conditions() -> None:
    root = allow({"AWS": ROOT}, "kms:*", Sid="Enable IAM User Permissions")
    assert lint(root, enclave()) == [
        ("unconditional-attested-allow", "Sid 'Enable IAM User Permissions'")
    ]


@pytest.mark.parametrize(
    "statement",
    [
        allow({"AWS": ACCOUNT}, "kms:Decrypt"),  # bare account id = root
        allow("*", "kms:Decrypt"),
        allow({"AWS": "*"}, "kms:GenerateDataKey"),
        allow({"AWS": ENCLAVE_ROLE}, "kms:Gen*"),
        allow({"AWS": [ADMIN_ROLE, ENCLAVE_ROLE]}, "*"),
        allow({"AWS": ENCLAVE_ROLE}, None, NotAction=["kms:Encrypt", "kms:Sign"]),
        allow({"AWS": ENCLAVE_ROLE.upper().replace("ARN:AWS:IAM", "arn:aws:iam")}, "KMS:decrypt"),
        allow(
            {"AWS": ENCLAVE_ROLE},
            "kms:Decrypt",
            Condition={"StringEqualsIgnoreCaseIfExists": {IMAGE: UG[0]}},
        ),
        allow(
            {"AWS": ENCLAVE_ROLE},
            "kms:Decrypt",
            Condition={"ForAllValues:StringEqualsIgnoreCase": {IMAGE: UG[0]}},
        ),
        allow(
            {"AWS": ENCLAVE_ROLE},
            "kms:Decrypt",
            Condition={"StringEquals": {"kms:EncryptionContext:app": "payments"}},
        ),
        # Whatever the principal: any role that can decrypt without a document is a way
        # around the enclave (the rule).
        allow({"AWS": ADMIN_ROLE}, "kms:Decrypt"),
        # A key policy is on one key; which one the linter cannot know, so a statement
        # naming another key's ARN may be this key's.
        allow(
            {"AWS": ENCLAVE_ROLE},
            "kms:Decrypt",
            Resource="arn:aws:kms:eu-west-1:111122223333:key/other",
        ),
    ],
    ids=[
        "bare-account",
        "star",
        "aws-star",
        "wildcard-action",
        "star-action",
        "not-action",
        "case-insensitive",
        "if-exists",
        "for-all-values",
        "other-condition",
        "other-principal",
        "other-resource",
    ],
)
def test_unconditional_allow_positive(statement) -> None:
    statement = {k: v for k, v in statement.items() if v is not None}
    assert "unconditional-attested-allow" in rules(statement, enclave())


def test_unconditional_allow_in_an_identity_policy() -> None:
    unconditional = allow(None, "kms:Decrypt", Sid="Plain")
    attested = enclave(Principal=None)
    assert ("unconditional-attested-allow", "Sid 'Plain'") in lint(unconditional, attested)


def test_null_only_deny_does_not_mitigate_but_a_pinning_deny_does() -> None:
    root = allow({"AWS": ROOT}, "kms:*")
    null_deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"Null": {IMAGE: "true"}},
    }
    # No document: the Deny applies. A debug-mode enclave's document passes it, and the
    # root statement lets IAM grant Decrypt to it: the parent reads that enclave's memory.
    assert rules(root, enclave(), null_deny) == {"debug-mode-admitted"}
    pin_deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*", "kms:GenerateRandom", "kms:Derive*"],
        "Resource": "*",
        "Condition": {"StringNotEqualsIgnoreCase": {IMAGE: [UG[0]]}},
    }
    assert "unconditional-attested-allow" not in rules(root, enclave(), pin_deny)
    partial = dict(pin_deny, Action="kms:Decrypt")
    found = lint(root, enclave(), partial)
    assert ("unconditional-attested-allow", "Statement[0]") in found


@pytest.mark.parametrize(
    "statement",
    [
        allow(
            {"AWS": ROOT}, ["kms:Describe*", "kms:Put*", "kms:Enable*", "kms:ScheduleKeyDeletion"]
        ),
        allow({"AWS": ENCLAVE_ROLE}, "kms:DescribeKey"),
        allow({"AWS": ADMIN_ROLE}, ["kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext"]),
    ],
    ids=["root-admin-only", "describe", "encrypt-only"],
)
def test_unconditional_allow_negative(statement) -> None:
    attested = enclave(Resource="arn:aws:kms:eu-west-1:111122223333:key/mine")
    assert "unconditional-attested-allow" not in rules(statement, attested)


# --- attestation-on-unattested-operation ----------------------------------------------------


def test_attestation_condition_on_sign_can_never_match() -> None:
    found = lint(enclave(Action=["kms:Decrypt", "kms:Sign", "kms:DescribeKey"]))
    assert found == [("attestation-on-unattested-operation", "Sid 'Enclave'")]
    policy = parse_policy({"Statement": enclave(Action=["kms:Sign", "kms:Decrypt"])})
    (finding,) = lint_policy(policy)
    assert "kms:Sign, which never carries a Recipient" in finding.message


@pytest.mark.parametrize(
    "action",
    ["kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:GetKeyPolicy", "kms:ReEncryptFrom"],
)
def test_unattested_operations(action) -> None:
    assert "attestation-on-unattested-operation" in rules(enclave(Action=action))


def test_attested_operations_and_denies_are_fine() -> None:
    all_five = [
        "kms:Decrypt",
        "kms:DeriveSharedSecret",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateRandom",
    ]
    assert rules(enclave(Action=all_five)) == set()
    deny = enclave(Effect="Deny", Action="kms:Sign", Condition={"Null": {IMAGE: "true"}})
    assert "attestation-on-unattested-operation" not in rules(deny)


# --- pcr-value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("0x" + UG[0], "0x prefix"),
        (UG[0] + UG[0][:32], "128 hex digits (a SHA-512 length)"),
        (UG[0][:64], "64 hex digits (a SHA-256 length)"),
        (UG[0][:90], "90 hex digits"),
        ("<PCR0>", "placeholder"),
        ("${PCR0}", "placeholder"),
        ("$PCR0_VALUE", "placeholder"),
        ("EXAMPLE8d2ed1e43a2cd3f8b9e52e85f15bbfcb3a37bd1bdc3a2b2c4fd1f9bd1d8c1a4f", "placeholder"),
        ("PCR0", "placeholder"),
        ("...", "placeholder"),
        (UG[0].upper(), "uppercase"),
        (" " + UG[0], "white space"),
        ("zz" + UG[0][2:], "not hexadecimal"),
        ("*", "wildcard"),
    ],
)
def test_bad_pcr_values(value, needle) -> None:
    policy = {"Statement": enclave(Condition={"StringEqualsIgnoreCase": {IMAGE: [UG[0], value]}})}
    findings = [f for f in lint_policy(parse_policy(policy)) if f.rule == "pcr-value"]
    assert len(findings) == 1
    assert needle in findings[0].message


def test_all_zero_means_debug_mode_in_allows_only() -> None:
    for key in (IMAGE, "kms:RecipientAttestation:PCR1", "kms:RecipientAttestation:PCR8"):
        found = lint(enclave(Condition={"StringEqualsIgnoreCase": {IMAGE: UG[0], key: ZERO}}))
        assert ("pcr-value", "Sid 'Enclave'") in found
    deny_debug = enclave(Effect="Deny", Condition={"StringEqualsIgnoreCase": {IMAGE: ZERO}})
    assert "pcr-value" not in rules(enclave(), deny_debug)
    zero_pcr3 = {"StringEqualsIgnoreCase": {IMAGE: UG[0], "kms:RecipientAttestation:PCR3": ZERO}}
    assert "pcr-value" not in rules(enclave(Condition=zero_pcr3))


def test_nitrotpm_keys_are_judged_by_their_own_meaning() -> None:
    tpm = {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:NitroTPMPCR4": UG[1],
            "kms:RecipientAttestation:NitroTPMPCR7": UG[2],
            "kms:RecipientAttestation:NitroTPMPCR12": ZERO,
        }
    }
    # Not an enclave statement: no debug-mode zero rule, no image-not-pinned warning.
    assert rules(enclave(Condition=tpm)) == set()
    bad = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:NitroTPMPCR7": "0x" + UG[2]}}
    assert rules(enclave(Condition=bad)) == {"pcr-value"}
    sensitive = {"StringEquals": {"kms:RecipientAttestation:NitroTPMPCR7": UG[2]}}
    assert rules(enclave(Condition=sensitive)) == {"case-sensitive-operator"}


# --- unknown-condition-key ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("kms:RecipientAttestation", "needs a suffix"),
        ("kms:RecipientAttestation:PCR32", "0..31"),
        ("kms:RecipientAttestation:PCR01", "leading zeros"),
        ("kms:RecipientAttestation:PCR", "0..31"),
        ("kms:RecipientAttestation:ImageSha256", "has no condition key"),
        ("kms:RecipientAttestation:NitroTPMPCR24", "0..23"),
        ("kms:RecipientAttestationPCR0", "is not a KMS condition key"),
    ],
)
def test_unknown_condition_keys(key, needle) -> None:
    policy = {
        "Statement": enclave(Condition={"StringEqualsIgnoreCase": {IMAGE: UG[0], key: UG[1]}})
    }
    (finding,) = lint_policy(parse_policy(policy))
    assert finding.rule == "unknown-condition-key"
    assert needle in finding.message


def test_known_keys_in_any_case() -> None:
    condition = {
        "StringEqualsIgnoreCase": {
            "KMS:RecipientAttestation:imagesha384": UG[0],
            "kms:recipientattestation:pcr31": UG[1],
        }
    }
    assert rules(enclave(Condition=condition)) == set()
    tpm = {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:NitroTPMPCR4": UG[2],
            "KMS:recipientattestation:nitrotpmpcr12": ZERO,
            "kms:RecipientAttestation:NitroTPMPCR23": UG[8],
        }
    }
    assert rules(enclave(Condition=tpm)) == set()


# --- warnings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["StringEquals", "StringLike", "ForAnyValue:StringEquals"])
def test_case_sensitive_operators(operator) -> None:
    found = rules(enclave(Condition={operator: {IMAGE: UG[0]}}))
    assert "case-sensitive-operator" in found


def test_case_sensitive_operator_negatives() -> None:
    assert rules(enclave()) == set()
    other = PINNED | {"StringEquals": {"kms:EncryptionContext:app": "payments"}}
    assert rules(enclave(Condition=other)) == set()


def test_image_not_pinned() -> None:
    only_signer = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR8": UG[8]}}
    assert lint(enclave(Condition=only_signer)) == [("image-not-pinned", "Sid 'Enclave'")]
    only_role = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR3": UG[1]}}
    assert lint(enclave(Condition=only_role)) == [
        ("debug-mode-admitted", "Sid 'Enclave'"),
        ("image-not-pinned", "Sid 'Enclave'"),
    ]
    for key in (IMAGE, "kms:RecipientAttestation:PCR0"):
        assert rules(enclave(Condition={"StringEqualsIgnoreCase": {key: UG[0]}})) == set()
    negated = {
        "StringNotEqualsIgnoreCase": {IMAGE: UG[0]},
        "StringEqualsIgnoreCase": only_role["StringEqualsIgnoreCase"],
    }
    assert "image-not-pinned" in rules(enclave(Condition=negated))


@pytest.mark.parametrize(
    "statement",
    [
        allow({"AWS": ENCLAVE_ROLE}, "kms:CreateGrant"),
        allow({"AWS": ENCLAVE_ROLE}, "kms:ReEncrypt*"),
        allow("*", "kms:PutKeyPolicy", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-1"}}),
        allow({"AWS": "*"}, ["kms:CreateGrant", "kms:ListGrants"]),
        enclave(Action=["kms:Decrypt", "kms:ReEncryptTo"]),
    ],
    ids=["enclave-create-grant", "enclave-reencrypt", "star-put-policy", "aws-star-grant", "same"],
)
def test_risky_permissions(statement) -> None:
    assert "risky-permission" in rules(enclave(), statement)


def test_risky_permission_in_an_identity_policy_and_negatives() -> None:
    assert "risky-permission" in rules(enclave(Principal=None), allow(None, "kms:CreateGrant"))
    admin = allow({"AWS": ADMIN_ROLE}, ["kms:PutKeyPolicy", "kms:CreateGrant"])
    assert "risky-permission" not in rules(enclave(), admin)
    assert "risky-permission" not in rules(allow({"AWS": ENCLAVE_ROLE}, "kms:CreateGrant"))


def test_not_principal() -> None:
    deny = {
        "Effect": "Deny",
        "NotPrincipal": {"AWS": ENCLAVE_ROLE},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    assert lint(enclave(), deny) == [("not-principal", "Statement[1]")]
    named = {k: v for k, v in deny.items() if k != "NotPrincipal"} | {"Principal": "*"}
    assert "not-principal" not in rules(enclave(), named)


def test_findings_are_ordered_errors_first() -> None:
    policy = {
        "Statement": [
            {"Effect": "Deny", "NotPrincipal": {"AWS": ADMIN_ROLE}, "Action": "kms:Sign"},
            allow({"AWS": ROOT}, "kms:*"),
            enclave(),
        ]
    }
    severities = [f.severity for f in lint_policy(parse_policy(policy))]
    assert severities == [Severity.ERROR, Severity.WARNING]


# --- the policy reader ------------------------------------------------------------------------


def test_real_json_shapes() -> None:
    policy = parse_policy_json(
        json.dumps(
            {
                "Statement": {
                    "Effect": "Allow",
                    "Principal": {"AWS": [ENCLAVE_ROLE], "Service": "ec2.amazonaws.com"},
                    "Action": "kms:Decrypt",
                    "Resource": ["*"],
                    "Condition": {
                        "Bool": {"aws:SecureTransport": True},
                        "NumericLessThan": {"x": 3},
                    },
                }
            }
        ).encode()
    )
    (statement,) = policy.statements
    assert statement.actions == ("kms:Decrypt",)
    assert statement.principals is not None
    assert statement.principals.other == ("Service:ec2.amazonaws.com",)
    assert [c.values for c in statement.conditions] == [("true",), ("3",)]
    assert statement.label == "Statement[0]"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({}, "no Statement"),
        ({"Statement": []}, "empty list"),
        ({"Statement": [1]}, "must be an object"),
        ({"Statement": {"Effect": "allow", "Action": "x"}}, "Effect"),
        ({"Statement": {"Effect": "Allow"}}, "neither Action nor NotAction"),
        ({"Statement": {"Effect": "Allow", "Action": "a", "NotAction": "b"}}, "both"),
        ({"Statement": {"Effect": "Allow", "Action": [1]}}, "list of strings"),
        ({"Statement": {"Effect": "Allow", "Action": []}}, "empty list"),
        ({"Statement": {"Effect": "Allow", "Action": "a", "Principal": "me"}}, "must be"),
        ({"Statement": {"Effect": "Allow", "Action": "a", "Principal": {"IAM": "x"}}}, "unknown"),
        ({"Statement": {"Effect": "Allow", "Action": "a", "Condition": []}}, "map of operators"),
        ({"Statement": {"Effect": "Allow", "Action": "a", "Condition": {"X": 1}}}, "non-empty map"),
        (
            {"Statement": {"Effect": "Allow", "Action": "a", "Condition": {"X": {"k": {}}}}},
            "string",
        ),
        ({"Statement": {"Effect": "Allow", "Action": "a", "Sid": 1}}, "Sid"),
        ({"Version": 2012, "Statement": {"Effect": "Allow", "Action": "a"}}, "Version"),
    ],
)
def test_not_a_policy(document, message) -> None:
    with pytest.raises(MalformedError, match=message):
        parse_policy_json(json.dumps(document).encode())


def test_duplicate_keys_and_size() -> None:
    text = (
        '{"Statement": {"Effect": "Allow", "Action": "a", "Condition": '
        '{"StringEquals": {"k": "1"}, "StringEquals": {"k": "2"}}}}'
    )
    with pytest.raises(MalformedError, match="duplicate key 'StringEquals'"):
        parse_policy_json(text.encode())
    with pytest.raises(MalformedError, match="limit"):
        parse_policy_json(b" " * (128 * 1024 + 1))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(
        [
            "*",
            "Allow",
            "Deny",
            "kms:*",
            "kms:Decrypt",
            IMAGE,
            "kms:RecipientAttestation:PCR8",
            UG[0],
            ZERO,
            ROOT,
            ENCLAVE_ROLE,
            "StringEquals",
            "Null",
            "true",
            "AWS",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Effect",
                    "Principal",
                    "NotPrincipal",
                    "Action",
                    "NotAction",
                    "Resource",
                    "Condition",
                    "AWS",
                    "StringEqualsIgnoreCase",
                    "Null",
                    IMAGE,
                    "Sid",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=400)
@given(_json_values)
def test_arbitrary_documents_raise_only_malformed(document) -> None:
    for candidate in (document, {"Statement": document}):
        try:
            policy = parse_policy_json(json.dumps(candidate).encode())
        except MalformedError:
            continue
        for finding in lint_policy(policy):
            assert finding.rule in RULES


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        parse_policy_json(data)


# --- the evaluator's question: who gets a secret without the pinned enclave ------------------


@pytest.mark.parametrize(
    "condition",
    [
        {"StringEqualsIgnoreCaseIfExists": {IMAGE: UG[0]}},
        {"ForAllValues:StringEqualsIgnoreCase": {IMAGE: UG[0]}},
        {"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": ZERO}},
        {"Null": {IMAGE: "true"}},
        {"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}},
    ],
    ids=["if-exists", "for-all-values", "negated", "null-true", "free-key"],
)
def test_a_named_role_that_looks_gated_is_an_error_without_any_enclave_statement(
    condition,
) -> None:
    statement = allow({"AWS": ENCLAVE_ROLE}, ["kms:Decrypt"], Sid="Parent", Condition=condition)
    (finding,) = lint_policy(parse_policy({"Statement": [statement]}))[:1]
    assert finding.rule == "unconditional-attested-allow"
    assert ENCLAVE_ROLE in finding.message
    assert "no attestation document" in finding.message


def test_the_message_says_why_a_gated_looking_statement_is_not() -> None:
    statement = allow(
        {"AWS": ENCLAVE_ROLE},
        "kms:Decrypt",
        Condition={"StringEqualsIgnoreCaseIfExists": {IMAGE: UG[0]}},
    )
    (finding,) = lint_policy(parse_policy({"Statement": [statement]}))
    assert "StringEqualsIgnoreCaseIfExists on kms:RecipientAttestation:ImageSha384" in (
        finding.message
    )


def test_the_witness_context_is_named() -> None:
    statement = allow(
        {"AWS": ENCLAVE_ROLE},
        "kms:Decrypt",
        Condition={"StringEquals": {"kms:EncryptionContext:app": "payments"}},
    )
    (finding,) = lint_policy(parse_policy({"Statement": [statement]}))
    assert "kms:encryptioncontext:app = 'payments'" in finding.message


def test_a_deny_the_caller_cannot_avoid_removes_the_finding() -> None:
    statement = allow({"AWS": ENCLAVE_ROLE}, "kms:Decrypt")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"StringNotEqualsIgnoreCase": {IMAGE: UG[0]}},
    }
    assert rules(statement, deny) == set()
    # ... but not one the caller can avoid by choosing its encryption context.
    avoidable = deny | {"Condition": {"StringEquals": {"kms:EncryptionContext:app": "x"}}}
    assert rules(statement, avoidable) == {"unconditional-attested-allow"}


def test_debug_mode_admitted() -> None:
    only_role = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR3": UG[1]}}
    found = lint(enclave(Condition=only_role))
    assert ("debug-mode-admitted", "Sid 'Enclave'") in found
    # PCR1 and PCR2 pinned: a debug-mode enclave has zeros there.
    pcr12 = {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:PCR1": UG[1],
            "kms:RecipientAttestation:PCR2": UG[2],
        }
    }
    assert "debug-mode-admitted" not in rules(enclave(Condition=pcr12))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({}, True),
        ({"StringEquals": {"aws:PrincipalOrgID": "o-1234567890"}}, False),
        ({"StringEquals": {"kms:CallerAccount": ACCOUNT}}, False),
        ({"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}, False),
        ({"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-1234567890"}}, True),
        ({"StringNotEquals": {"kms:CallerAccount": "999999999999"}}, True),
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/enclave-parent"}}, True),
        ({"ArnLike": {"aws:PrincipalArn": ENCLAVE_ROLE}}, False),
    ],
    ids=[
        "none",
        "org",
        "caller-account",
        "principal-account",
        "org-if-exists",
        "not-some-account",
        "any-account-role-name",
        "one-role",
    ],
)
def test_any_account(condition, expected) -> None:
    conditions = dict(PINNED)
    for operator, block in condition.items():
        conditions[operator] = conditions.get(operator, {}) | block
    statement = enclave(Principal="*", Condition=conditions)
    assert ("any-account" in rules(statement)) is expected


def test_identity_policy_without_an_enclave_statement_warns() -> None:
    found = lint_policy(parse_policy({"Statement": [allow(None, "kms:GenerateDataKey*")]}))
    assert [(f.rule, f.severity) for f in found] == [
        ("identity-policy-unattested", Severity.WARNING)
    ]
    assert "delegates to IAM" in found[0].message
    gated = allow(None, "kms:Decrypt", Condition=PINNED)
    assert rules(gated) == set()


@pytest.mark.parametrize(
    ("operator", "needle"),
    [
        ("stringequalsignorecase", "did you mean StringEqualsIgnoreCase?"),
        ("StringEqualsIgnorecase", "did you mean StringEqualsIgnoreCase?"),
        ("StringEqualsIgnoreCaseIfexists", "did you mean"),
        ("StringMatches", "is not an IAM condition operator"),
        ("ForSomeValues:StringEquals", "is not ForAnyValue or ForAllValues"),
        ("NullIfExists", "Null takes no"),
    ],
)
def test_unknown_operators(operator, needle) -> None:
    statement = enclave(Condition={operator: {IMAGE: UG[0]}})
    found = lint_policy(parse_policy({"Statement": [statement]}))
    unknown = [f for f in found if f.rule == "unknown-operator"]
    assert unknown
    assert needle in unknown[0].message
    # Not understood, so not trusted: the statement is treated as possibly unconditional.
    assert "unconditional-attested-allow" in {f.rule for f in found}


def test_numeric_date_ip_and_binary_operators_are_understood() -> None:
    conditions = PINNED | {
        "NumericLessThan": {"kms:x": "10"},
        "DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
        "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
        "BinaryEquals": {"kms:y": "AAEC"},
    }
    assert rules(enclave(Condition=conditions)) == set()
    gated_off = {
        "NumericLessThan": {"kms:x": "10"},
        "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
    }
    found = lint_policy(parse_policy({"Statement": [enclave(Condition=gated_off)]}))
    assert found[0].rule == "unconditional-attested-allow"
    assert "aws:sourceip = '10.0.0.0'" in found[0].message


def test_a_large_policy_lints_quickly() -> None:
    statements = [
        enclave(Sid=f"S{i}", Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:role/r{i}"})
        for i in range(150)
    ]
    statements.append(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringNotEqualsIgnoreCase": {IMAGE: UG[0]}},
        }
    )
    policy = parse_policy({"Statement": statements})
    assert lint_policy(policy) == ()
