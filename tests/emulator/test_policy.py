"""The pure key-policy evaluator."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.emulator import (
    Decision,
    PolicyRequest,
    default_key_policy,
    encryption_context_condition_values,
    evaluate_key_policy,
    parse_key_policy,
    recipient_condition_values,
)
from attested.errors import KeyPolicyError

ACCOUNT = "111122223333"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/parent"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PCR0 = "ab" * 48


def request(
    action: str = "kms:Decrypt",
    *,
    caller: str = ROLE,
    principal: str | None = None,
    account: str = ACCOUNT,
    context: dict[str, tuple[str, ...]] | None = None,
    resource: str = KEY,
) -> PolicyRequest:
    return PolicyRequest(
        caller_arn=caller,
        principal_arn=principal or caller,
        account=account,
        action=action,
        resource=resource,
        context={"aws:principalarn": (principal or caller,), **(context or {})},
    )


def policy(*statements: dict[str, Any]) -> Any:
    return parse_key_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def allow(**fields: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"AWS": ROLE},
        "Action": "kms:*",
        "Resource": "*",
    } | fields


def deny(**fields: Any) -> dict[str, Any]:
    return allow(Effect="Deny") | fields


def without(statement: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in statement.items() if k != name}


def decide(p: Any, r: PolicyRequest) -> Decision:
    return evaluate_key_policy(p, r).decision


def test_default_policy_lets_every_identity_of_the_account_do_everything() -> None:
    p = parse_key_policy(default_key_policy(ACCOUNT))
    assert decide(p, request("kms:PutKeyPolicy")) is Decision.ALLOW
    other = request(caller="arn:aws:iam::444455556666:role/x", account="444455556666")
    assert decide(p, other) is Decision.IMPLICIT_DENY


def test_explicit_deny_beats_allow_and_no_allow_is_an_implicit_deny() -> None:
    assert decide(policy(allow(), deny(Action="kms:Decrypt")), request()) is Decision.EXPLICIT_DENY
    assert decide(policy(allow(Action="kms:Encrypt")), request()) is Decision.IMPLICIT_DENY
    assert decide(policy(allow(), deny(Action="kms:Encrypt")), request()) is Decision.ALLOW


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("kms:*", "kms:Decrypt", True),
        ("*", "kms:Decrypt", True),
        ("kms:Gen*", "kms:GenerateDataKey", True),
        ("kms:Gen*", "kms:Decrypt", False),
        ("KMS:decrypt", "kms:Decrypt", True),
        ("kms:Decryp?", "kms:Decrypt", True),
        ("kms:Decrypt", "kms:DecryptX", False),
        ("kms:ReEncrypt*", "kms:ReEncryptFrom", True),
    ],
)
def test_action_wildcards(pattern: str, action: str, matches: bool) -> None:
    got = decide(policy(allow(Action=pattern)), request(action))
    assert got is (Decision.ALLOW if matches else Decision.IMPLICIT_DENY)


def test_not_action_not_principal_not_resource() -> None:
    p = policy(without(allow(NotAction=["kms:Decrypt", "kms:Gen*"]), "Action"))
    assert decide(p, request("kms:PutKeyPolicy")) is Decision.ALLOW
    assert decide(p, request("kms:Decrypt")) is Decision.IMPLICIT_DENY
    assert decide(p, request("kms:GenerateRandom")) is Decision.IMPLICIT_DENY
    everyone_but = {"Effect": "Deny", "NotPrincipal": {"AWS": ROLE}, "Action": "*", "Resource": "*"}
    p = policy(allow(Principal="*"), everyone_but)
    assert decide(p, request()) is Decision.ALLOW
    assert decide(p, request(caller=f"arn:aws:iam::{ACCOUNT}:user/eve")) is Decision.EXPLICIT_DENY
    p = policy(without(allow(NotResource="arn:aws:kms:*:*:key/other"), "Resource"))
    assert decide(p, request()) is Decision.ALLOW
    assert (
        decide(p, request(resource="arn:aws:kms:us-east-1:1:key/other")) is Decision.IMPLICIT_DENY
    )


@pytest.mark.parametrize(
    ("principal", "caller", "matches"),
    [
        ("*", "arn:aws:iam::999999999999:user/anyone", True),
        (ROLE, ROLE, True),
        (f"arn:aws:iam::{ACCOUNT}:role/other", ROLE, False),
        (ACCOUNT, ROLE, True),
        (f"arn:aws:iam::{ACCOUNT}:root", f"arn:aws:iam::{ACCOUNT}:user/alice", True),
        ("444455556666", ROLE, False),
        (ROLE, f"arn:aws:sts::{ACCOUNT}:assumed-role/parent/i-0abc", True),
        (
            f"arn:aws:iam::{ACCOUNT}:role/path/parent",
            f"arn:aws:sts::{ACCOUNT}:assumed-role/parent/s",
            True,
        ),
        (
            f"arn:aws:iam::{ACCOUNT}:role/parentx",
            f"arn:aws:sts::{ACCOUNT}:assumed-role/parent/s",
            False,
        ),
    ],
)
def test_principals(principal: str, caller: str, matches: bool) -> None:
    entry: Any = principal if principal == "*" else {"AWS": principal}
    got = decide(policy(allow(Principal=entry)), request(caller=caller))
    assert got is (Decision.ALLOW if matches else Decision.IMPLICIT_DENY)


def test_service_principals_never_match() -> None:
    p = policy(allow(Principal={"Service": "ec2.amazonaws.com"}))
    assert decide(p, request()) is Decision.IMPLICIT_DENY


PCRS = {0: bytes.fromhex(PCR0), 8: bytes(48)}


@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        ({"StringEquals": {"kms:RecipientAttestation:PCR0": PCR0}}, PCRS, True),
        ({"StringEquals": {"kms:RecipientAttestation:PCR0": PCR0.upper()}}, PCRS, False),
        ({"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": PCR0.upper()}}, PCRS, True),
        ({"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}}, PCRS, True),
        ({"StringEquals": {"KMS:RECIPIENTATTESTATION:PCR8": "00" * 48}}, PCRS, True),
        ({"StringEquals": {"kms:RecipientAttestation:PCR0": ["x", PCR0]}}, PCRS, True),
        ({"StringEquals": {"kms:RecipientAttestation:PCR0": PCR0}}, None, False),
        ({"StringEqualsIfExists": {"kms:RecipientAttestation:PCR0": "x"}}, None, True),
        ({"StringEqualsIfExists": {"kms:RecipientAttestation:PCR0": "x"}}, PCRS, False),
        ({"StringNotEquals": {"kms:RecipientAttestation:PCR0": "x"}}, None, True),
        ({"StringNotEquals": {"kms:RecipientAttestation:PCR0": ["x", PCR0]}}, PCRS, False),
        ({"StringLike": {"kms:RecipientAttestation:PCR0": "abab*"}}, PCRS, True),
        ({"StringLike": {"kms:RecipientAttestation:PCR0": "abab?"}}, PCRS, False),
        ({"StringNotLike": {"kms:RecipientAttestation:PCR0": "cd*"}}, PCRS, True),
        ({"Null": {"kms:RecipientAttestation:PCR0": "true"}}, None, True),
        ({"Null": {"kms:RecipientAttestation:PCR0": "true"}}, PCRS, False),
        ({"Null": {"kms:RecipientAttestation:PCR0": False}}, PCRS, True),
        ({"Null": {"kms:RecipientAttestation:PCR0": "false"}}, None, False),
        # Every key of every operator must hold:
        (
            {
                "StringEquals": {
                    "kms:RecipientAttestation:PCR0": PCR0,
                    "kms:RecipientAttestation:PCR8": "11" * 48,
                }
            },
            PCRS,
            False,
        ),
    ],
)
def test_attestation_conditions(
    condition: dict[str, Any], context: dict[int, bytes] | None, holds: bool
) -> None:
    values = recipient_condition_values(context) if context is not None else {}
    got = decide(policy(allow(Condition=condition)), request(context=values))
    assert got is (Decision.ALLOW if holds else Decision.IMPLICIT_DENY)


def test_encryption_context_and_principal_arn_conditions() -> None:
    values = encryption_context_condition_values({"Purpose": "db", "team": "a"})
    assert values["kms:encryptioncontextkeys"] == ("Purpose", "team")
    p = policy(allow(Condition={"StringEquals": {"kms:EncryptionContext:purpose": "db"}}))
    assert decide(p, request(context=values)) is Decision.ALLOW
    p = policy(
        allow(Condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Purpose"]}})
    )
    assert decide(p, request(context=values)) is Decision.IMPLICIT_DENY
    assert decide(p, request()) is Decision.ALLOW  # no keys at all: ForAllValues holds
    p = policy(
        allow(Condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["team"]}})
    )
    assert decide(p, request(context=values)) is Decision.ALLOW
    assert decide(p, request()) is Decision.IMPLICIT_DENY
    p = policy(
        allow(
            Principal="*", Condition={"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/par*"}}
        )
    )
    assert decide(p, request()) is Decision.ALLOW
    assert (
        decide(p, request(caller=f"arn:aws:iam::{ACCOUNT}:user/parent")) is Decision.IMPLICIT_DENY
    )


def test_conditions_on_deny_statements() -> None:
    """The Nitro guide's pattern: deny Decrypt to callers without an attestation document."""
    p = policy(
        allow(),
        deny(Action="kms:Decrypt", Condition={"Null": {"kms:RecipientAttestation:PCR0": "true"}}),
    )
    assert decide(p, request()) is Decision.EXPLICIT_DENY
    attested = request(context=recipient_condition_values(PCRS))
    assert decide(p, attested) is Decision.ALLOW


def test_implicit_deny_explains_failed_conditions() -> None:
    p = policy(
        allow(Sid="Enclave", Condition={"StringEquals": {"kms:RecipientAttestation:PCR0": "00"}})
    )
    result = evaluate_key_policy(p, request(context=recipient_condition_values(PCRS)))
    assert not result.allowed
    (reason,) = result.reasons
    assert "Enclave" in reason
    assert PCR0 in reason
    assert "kms:recipientattestation:pcr0" in reason


_OPEN = '"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"'


def _with(extra: str) -> str:
    return '{"Statement": [{' + _OPEN + ", " + extra + "}]}"


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"Statement": []}',
        '{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}',
        '{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "*", "Resource": "*"}]}',
        '{"Statement": [{"Effect": "Allow", "Principal": "*", "Resource": "*"}]}',
        '{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*"}]}',
        '{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "*", '
        '"Resource": "*"}]}',
        _with('"NotAction": "*"'),
        _with('"Condition": {"numericLessThan": {"a": "1"}}'),
        _with('"Condition": {"NullIfExists": {"a": "true"}}'),
        _with('"Condition": {"ForAnyValue:Null": {"a": "true"}}'),
        _with('"Condition": {"ForSome:StringEquals": {"a": "1"}}'),
        _with('"Condition": {"Null": {"a": "maybe"}}'),
        _with('"Condition": {"StringEquals": {"a": {"b": 1}}}'),
        _with('"Effect": "Deny"'),
        '{"Version": "2020-01-01", "Statement": [{' + _OPEN + "}]}",
        '{"Statement": {' + _OPEN + ', "Extra": 1}}',
        '{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": NaN, "Resource": "*"}]}',
    ],
)
def test_malformed_policies_are_refused(document: str) -> None:
    with pytest.raises(KeyPolicyError):
        parse_key_policy(document)


def test_size_cap() -> None:
    big = json.dumps({"Statement": [allow(Sid="x" * 40000)]})
    with pytest.raises(KeyPolicyError, match="more than the limit"):
        parse_key_policy(big)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Effect",
                    "Principal",
                    "AWS",
                    "Action",
                    "Resource",
                    "Condition",
                    "StringEquals",
                    "Null",
                    "NotAction",
                    "Sid",
                    "Version",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(_json)
def test_arbitrary_documents_raise_only_key_policy_error(document: object) -> None:
    try:
        parsed = parse_key_policy(json.dumps(document))
    except KeyPolicyError:
        return
    evaluate_key_policy(parsed, request())


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_key_policy_error(data: bytes) -> None:
    with contextlib.suppress(KeyPolicyError):
        parse_key_policy(data)
