"""Lint KMS key policies and IAM identity policies for Nitro Enclave attestation mistakes.

Every rule below has been seen in published policies (AWS samples and documentation
included). The first four are errors, the rest warnings:

``unconditional-attested-allow`` (error)
    An Allow of attested operations without an attestation condition, to the account
    root, to everyone, or to a principal an enclave statement also covers.
``attestation-on-unattested-operation`` (error)
    Attestation conditions on operations that never carry a Recipient.
``pcr-value`` (error)
    A PCR value that is not 96 lowercase hex digits, or all zero where that means debug mode.
``unknown-condition-key`` (error)
    A ``kms:RecipientAttestation`` key that KMS does not have.
``case-sensitive-operator`` (warning)
    ``StringEquals``/``StringLike`` (or their negations) on PCR keys.
``image-not-pinned`` (warning)
    An enclave statement that pins neither ImageSha384 nor PCR0.
``risky-permission`` (warning)
    The enclave's principal or everyone may CreateGrant, PutKeyPolicy or ReEncrypt*.
``not-principal`` (warning)
    ``NotPrincipal``, which grants or denies by exclusion.

NitroTPM keys (``kms:RecipientAttestation:NitroTPMPCR<n>``) describe an EC2 instance's
boot, not an enclave: they get the value-format checks but not the enclave rules (an
all-zero NitroTPMPCR12, for example, is normal).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attested.keypolicy._keys import (
    ATTESTED_OPERATIONS,
    DEBUG_ZEROED_PCRS,
    KeyKind,
    ParsedKey,
    action_matches,
    is_all_zero,
    parse_key,
    parse_operator,
    pcr_value_problem,
)
from attested.keypolicy._policy import Condition, PolicyDocument, Statement

__all__ = ["RULES", "Finding", "Severity", "lint_policy"]

_RISKY = ("kms:CreateGrant", "kms:PutKeyPolicy", "kms:ReEncryptFrom", "kms:ReEncryptTo")
_WILDCARD = re.compile(r"[*?]")


class Severity(enum.Enum):
    """How bad a finding is; any error makes ``attested keypolicy lint`` exit 1."""

    ERROR = "error"
    WARNING = "warning"


RULES = {
    "unconditional-attested-allow": Severity.ERROR,
    "attestation-on-unattested-operation": Severity.ERROR,
    "pcr-value": Severity.ERROR,
    "unknown-condition-key": Severity.ERROR,
    "case-sensitive-operator": Severity.WARNING,
    "image-not-pinned": Severity.WARNING,
    "risky-permission": Severity.WARNING,
    "not-principal": Severity.WARNING,
}
"""Every rule id and its severity."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem in a policy.

    Attributes:
        rule: the rule id (a key of :data:`RULES`).
        severity: the rule's severity.
        statement: the statement it is in: its Sid, else ``Statement[i]``.
        index: the statement's position, from 0.
        message: what is wrong and the risk, in one sentence.
    """

    rule: str
    severity: Severity
    statement: str
    index: int
    message: str


def _finding(rule: str, statement: Statement, message: str) -> Finding:
    return Finding(
        rule=rule,
        severity=RULES[rule],
        statement=statement.label,
        index=statement.index,
        message=message,
    )


def _covers(statement: Statement, action: str) -> bool:
    matched = any(action_matches(pattern, action) for pattern in statement.actions)
    return not matched if statement.not_action else matched


def _resources_overlap(a: Statement, b: Statement) -> bool:
    if a.not_resource or b.not_resource or not a.resources or not b.resources:
        return True
    return any(
        action_matches(x, y) or action_matches(y, x) for x in a.resources for y in b.resources
    )


def _principals_overlap(a: Statement, b: Statement) -> bool:
    if a.principals is None or b.principals is None:
        # Identity policies apply to the identity they are attached to: all statements
        # of one identity policy share it. A key policy statement without a principal
        # is invalid in KMS; treat it as overlapping rather than stay silent.
        return True
    if a.not_principal or b.not_principal:
        return True
    return a.principals.overlaps(b.principals)


def _attestation_keys(statement: Statement) -> list[tuple[Condition, ParsedKey]]:
    keys = []
    for condition in statement.conditions:
        parsed = parse_key(condition.key)
        if parsed is not None:
            keys.append((condition, parsed))
    return keys


def _requires(condition: Condition) -> bool:
    """Whether the condition can only be true when the request carries the key."""
    operator = parse_operator(condition.operator)
    if operator.absent_key_passes:
        return False
    if operator.base == "null":
        return all(value.lower() == "false" for value in condition.values)
    return True


def _gated(statement: Statement, *, enclave_only: bool = False) -> bool:
    return any(
        _requires(condition) and (parsed.is_enclave or not enclave_only)
        for condition, parsed in _attestation_keys(statement)
    )


def _pins_image(statement: Statement) -> bool:
    for condition, parsed in _attestation_keys(statement):
        operator = parse_operator(condition.operator)
        if parsed.pins_image and operator.positive_string and _requires(condition):
            return True
    return False


def _denies_unpinned(deny: Statement) -> bool:
    """A Deny that applies whenever the image is not one of the pinned values."""
    if len(deny.conditions) != 1:
        return False
    condition = deny.conditions[0]
    parsed = parse_key(condition.key)
    operator = parse_operator(condition.operator)
    return (
        parsed is not None
        and parsed.pins_image
        and operator.negated_string
        and not operator.for_all_values
        and all(pcr_value_problem(v) is None and not is_all_zero(v) for v in condition.values)
    )


def _enclave_statements(policy: PolicyDocument) -> list[Statement]:
    return [s for s in policy.statements if s.effect == "Allow" and _gated(s, enclave_only=True)]


def _unconditional_allows(policy: PolicyDocument) -> Iterable[Finding]:
    enclaves = _enclave_statements(policy)
    denies = [s for s in policy.statements if s.effect == "Deny"]
    for statement in policy.statements:
        if statement.effect != "Allow" or _gated(statement):
            continue
        operations = [op for op in ATTESTED_OPERATIONS if _covers(statement, op)]
        if not operations:
            continue
        principals = statement.principals
        if principals is not None and principals.root_accounts:
            reason = (
                "to the account root, which lets any IAM policy in the account grant them "
                "without attestation and so voids every PCR condition on this key"
            )
        elif principals is not None and (principals.wildcard or statement.not_principal):
            reason = "to everyone, so no PCR condition on this key protects it"
        elif any(
            _principals_overlap(statement, e) and _resources_overlap(statement, e) for e in enclaves
        ):
            reason = (
                "to a principal the enclave statement also covers, so that principal "
                "(and the parent instance that holds the same role) needs no attestation "
                "and the PCR conditions are void"
            )
        else:
            continue
        mitigated = [
            op
            for op in operations
            if any(
                _covers(d, op)
                and _principals_overlap(d, statement)
                and _resources_overlap(d, statement)
                and _denies_unpinned(d)
                for d in denies
            )
        ]
        remaining = [op for op in operations if op not in mitigated]
        if remaining:
            yield _finding(
                "unconditional-attested-allow",
                statement,
                f"allows {', '.join(remaining)} without an attestation condition {reason}.",
            )


def _unattested_operations(statement: Statement) -> Iterable[Finding]:
    if statement.effect != "Allow" or statement.not_action or not _gated(statement):
        return
    attested = {op.lower() for op in ATTESTED_OPERATIONS}
    never = [
        action
        for action in statement.actions
        if not _WILDCARD.search(action) and action.lower() not in attested
    ]
    if never:
        yield _finding(
            "attestation-on-unattested-operation",
            statement,
            f"requires attestation for {', '.join(never)}, which never carr"
            f"{'ies' if len(never) == 1 else 'y'} a Recipient, so the statement can never "
            "allow them (only Decrypt, DeriveSharedSecret, GenerateDataKey, "
            "GenerateDataKeyPair and GenerateRandom do).",
        )


def _condition_findings(statement: Statement) -> Iterable[Finding]:
    for condition, parsed in _attestation_keys(statement):
        operator = parse_operator(condition.operator)
        if parsed.kind is KeyKind.UNKNOWN:
            yield _finding(
                "unknown-condition-key",
                statement,
                f"{parsed.problem}: the request never has this key, so the condition "
                "never holds as intended.",
            )
            continue
        if operator.base == "null":
            continue
        if operator.case_sensitive_string:
            yield _finding(
                "case-sensitive-operator",
                statement,
                f"{condition.operator} on {condition.key} compares case; AWS documents "
                "StringEqualsIgnoreCase for PCR values, and a case mismatch silently "
                "denies (or, under a Deny, silently stops protecting).",
            )
        seen: set[str] = set()
        for value in condition.values:
            if value in seen:
                continue
            seen.add(value)
            problem = pcr_value_problem(value)
            if problem is not None:
                yield _finding(
                    "pcr-value",
                    statement,
                    f"{condition.key} value {value!r:.60} {problem}, so this condition never "
                    "matches a real enclave.",
                )
            elif (
                parsed.is_enclave
                and parsed.index in DEBUG_ZEROED_PCRS
                and statement.effect == "Allow"
                and operator.positive_string
                and is_all_zero(value)
            ):
                yield _finding(
                    "pcr-value",
                    statement,
                    f"{condition.key} is pinned to all zeros, the value of a debug-mode "
                    "enclave, whose memory the parent instance can read.",
                )


def _risky(policy: PolicyDocument) -> Iterable[Finding]:
    enclaves = _enclave_statements(policy)
    for statement in policy.statements:
        if statement.effect != "Allow":
            continue
        principals = statement.principals
        wildcard = principals is not None and (principals.wildcard or statement.not_principal)
        enclave = any(_same_principal(statement, e) for e in enclaves)
        if not (wildcard or enclave):
            continue
        actions = [a for a in _RISKY if _covers(statement, a)]
        if not actions:
            continue
        who = "everyone" if wildcard else "the enclave's principal"
        yield _finding(
            "risky-permission",
            statement,
            f"gives {who} {', '.join(actions)}: grants are not bound by PCR conditions, "
            "PutKeyPolicy can remove them, and ReEncrypt moves ciphertext to another key "
            "without attestation.",
        )


def _same_principal(statement: Statement, enclave: Statement) -> bool:
    if statement.principals is None or enclave.principals is None:
        return statement.principals is None and enclave.principals is None
    if enclave.principals.wildcard:
        return True
    mine = {p.lower() for p in statement.principals.aws}
    return bool(mine & {p.lower() for p in enclave.principals.aws})


def lint_policy(policy: PolicyDocument) -> tuple[Finding, ...]:
    """Check a key policy or IAM identity policy for attestation mistakes.

    Args:
        policy: the parsed policy (:func:`attested.keypolicy.parse_policy_json`).

    Returns:
        Every finding, errors first, then in statement order.

    The linter reads one policy on its own. It does not know the IAM policies attached to
    the principals a key policy names (or the key policy behind an identity policy), the
    grants on the key, or SCPs; a clean result is not proof that only your enclave can
    decrypt.
    """
    findings: list[Finding] = []
    findings.extend(_unconditional_allows(policy))
    for statement in policy.statements:
        findings.extend(_unattested_operations(statement))
        findings.extend(_condition_findings(statement))
        if (
            statement.effect == "Allow"
            and _gated(statement, enclave_only=True)
            and not _pins_image(statement)
        ):
            findings.append(
                _finding(
                    "image-not-pinned",
                    statement,
                    "pins neither kms:RecipientAttestation:ImageSha384 nor PCR0, so any "
                    "enclave image that matches the other PCRs is admitted (with only PCR3 "
                    "or PCR4 pinned, even a debug-mode enclave).",
                )
            )
        if statement.not_principal:
            findings.append(
                _finding(
                    "not-principal",
                    statement,
                    "uses NotPrincipal, which applies to every principal not listed "
                    "(including ones created later); name the principals instead.",
                )
            )
    findings.extend(_risky(policy))
    return tuple(_ordered(findings))


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    rank = {Severity.ERROR: 0, Severity.WARNING: 1}
    return sorted(findings, key=lambda f: (rank[f.severity], f.index))
