"""Lint KMS key policies and IAM identity policies for Nitro Enclave attestation mistakes.

The first rule is not a pattern but a question, answered by the project's one policy
evaluator (the KMS emulator decides with the same code): **can any principal get a
secret of this key (Decrypt, GenerateDataKey, GenerateDataKeyPair, DeriveSharedSecret)
without an attestation document?** Every principal the policy names is tried, an account
root as "any identity IAM allows", and an outsider; the caller's free choices
(encryption context, source VPC, ...) are searched (:mod:`._reach`). The other rules
have each been seen in published policies (AWS samples and documentation included).

Errors:
``unconditional-attested-allow``
    Some principal gets a secret of the key with no attestation document (in an
    identity policy: the identity an enclave statement of the same policy is for).
``debug-mode-admitted``
    Some principal gets a secret with the document of a debug-mode enclave, whose memory
    the parent instance can read.
``any-account``
    An attested Allow to ``"*"`` with no account or organization condition: any AWS
    account that runs the image gets the key.
``attestation-on-unattested-operation``
    Attestation conditions on operations that never carry a Recipient.
``pcr-value``
    A PCR value that is not 96 lowercase hex digits, or all zero where that means debug mode.
``unknown-condition-key``
    A ``kms:RecipientAttestation`` key that KMS does not have.
``unknown-operator``
    A condition operator AWS does not have (operator names are case-sensitive).
``nitrotpm-other-ami-admitted``
    Some principal gets a secret with the NitroTPM document of an instance booted from
    someone else's AMI: the statement pins neither NitroTPMPCR4 (the boot images) nor a
    Secure Boot NitroTPMPCR7, only firmware PCRs, or PCR7's Secure-Boot-off constant.
``nitrotpm-command-line-not-pinned``
    Some principal gets a secret with the NitroTPM document of the pinned image booted
    without Secure Boot and with someone else's kernel command line: NitroTPMPCR4
    without NitroTPMPCR12 or a Secure Boot NitroTPMPCR7 (GHSA-xrv8-2pf5-f3q7).
``mixed-document-kinds``
    One statement requires both enclave keys (ImageSha384, PCR<n>) and NitroTPM keys
    (NitroTPMPCR<n>): no document carries both, so the statement never applies.

Warnings:
``identity-policy-unattested``
    An identity policy grants a secret operation without attestation (it voids the
    enclave condition of any key whose policy delegates to IAM).
``case-sensitive-operator``
    ``StringEquals``/``StringLike`` (or their negations) on PCR keys.
``image-not-pinned``
    An enclave statement that pins neither ImageSha384 nor PCR0.
``risky-permission``
    The enclave's principal or everyone may CreateGrant, PutKeyPolicy or ReEncrypt*.
``not-principal``
    ``NotPrincipal``, which grants or denies by exclusion.

NitroTPM keys (``kms:RecipientAttestation:NitroTPMPCR<n>``) describe an EC2 instance's
boot, not an enclave. The questions about access without a document, any-account,
value formats, operators and risky permissions apply to them as to enclave keys; the
enclave rules about debug mode and the image do not (an all-zero NitroTPMPCR12 is
normal), the two ``nitrotpm-*`` questions take their place (docs/keypolicy.md,
ADR 0133).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attested import pcr
from attested.keypolicy._evaluate import UNKNOWN_CONDITION_PREFIX, compile_policy
from attested.keypolicy._keys import (
    ATTESTED_OPERATIONS,
    DEBUG_ZEROED_PCRS,
    KeyKind,
    ParsedKey,
    action_matches,
    is_all_zero,
    parse_key,
    pcr_value_problem,
)
from attested.keypolicy._operators import parse_operator
from attested.keypolicy._policy import Condition, PolicyDocument, Statement
from attested.keypolicy._reach import Evidence, Witness, find_access, identities

__all__ = ["RULES", "Finding", "Severity", "lint_policy"]

_RISKY = ("kms:CreateGrant", "kms:PutKeyPolicy", "kms:ReEncryptFrom", "kms:ReEncryptTo")
_WILDCARD = re.compile(r"[*?]")


class Severity(enum.Enum):
    """How bad a finding is; any error makes ``attested keypolicy lint`` exit 1."""

    ERROR = "error"
    WARNING = "warning"


RULES = {
    "unconditional-attested-allow": Severity.ERROR,
    "debug-mode-admitted": Severity.ERROR,
    "any-account": Severity.ERROR,
    "attestation-on-unattested-operation": Severity.ERROR,
    "pcr-value": Severity.ERROR,
    "unknown-condition-key": Severity.ERROR,
    "unknown-operator": Severity.ERROR,
    "nitrotpm-other-ami-admitted": Severity.ERROR,
    "nitrotpm-command-line-not-pinned": Severity.ERROR,
    "mixed-document-kinds": Severity.ERROR,
    "identity-policy-unattested": Severity.WARNING,
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
    if not operator.valid or operator.absent_key_passes:
        return False
    if operator.base == "Null":
        return all(value.lower() == "false" for value in condition.values)
    return True


def _gated(statement: Statement, *, enclave_only: bool = False) -> bool:
    return any(
        _requires(condition) and (parsed.is_enclave or not enclave_only)
        for condition, parsed in _attestation_keys(statement)
    )


def _required_kinds(statement: Statement) -> set[KeyKind]:
    """The kinds of attestation key the statement requires (enclave keys as ``PCR``)."""
    kinds = set()
    for condition, parsed in _attestation_keys(statement):
        if parsed.kind is KeyKind.UNKNOWN or not _requires(condition):
            continue
        kinds.add(KeyKind.NITROTPM_PCR if parsed.kind is KeyKind.NITROTPM_PCR else KeyKind.PCR)
    return kinds


def _pins_image(statement: Statement) -> bool:
    for condition, parsed in _attestation_keys(statement):
        operator = parse_operator(condition.operator)
        if parsed.pins_image and operator.positive_string and _requires(condition):
            return True
    return False


def _attested_statements(policy: PolicyDocument) -> list[Statement]:
    """The Allow statements that require a document (of an enclave or an instance)."""
    return [s for s in policy.statements if s.effect == "Allow" and _required_kinds(s)]


_CONSEQUENCE = {
    "root": (
        "the account root hands the decision to IAM, so any IAM policy in that account can "
        "grant it and every PCR condition on this key is void"
    ),
    "outsider": "no PCR condition on this key protects it",
    "named": (
        "whoever holds those credentials (the parent instance, if it is the enclave's "
        "role) gets the plaintext without any enclave"
    ),
    "identity": (
        "the identity the enclave statement is for (and the parent instance that holds "
        "it) needs no attestation, so the PCR conditions are void"
    ),
}


def _who(witnesses: Sequence[Witness]) -> tuple[str, str]:
    """How to name who gets access, and which consequence applies."""
    people = list(dict.fromkeys(w.identity for w in witnesses))
    if any(p.outsider for p in people):
        return "everyone (any AWS account)", "outsider"
    roots = list(dict.fromkeys(p.name for p in people if p.anyone_in_account))
    if roots:
        return " and ".join(roots[:2]), "root"
    names = list(dict.fromkeys(p.name for p in people))
    text = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return text, "named"


def _passes_without_document(statement: Statement) -> str:
    for condition, parsed in _attestation_keys(statement):
        if parsed.kind is not KeyKind.UNKNOWN and not _requires(condition):
            return (
                f" (its condition {condition.operator} on {condition.key} holds when the "
                "request has no attestation document)"
            )
    return ""


def _assumptions(witness: Witness) -> str:
    chosen = witness.chosen
    unknown = [k for k in chosen if k.startswith(UNKNOWN_CONDITION_PREFIX)]
    shown = [f"{k} = {v[0]!r:.60}" for k, v in chosen.items() if k not in unknown]
    parts = []
    if shown:
        parts.append("when the request has " + ", ".join(shown[:3]))
    if unknown:
        parts.append("if its conditions with unknown operators hold")
    if not witness.certain:
        parts.append("the search reached its limit, so this is assumed, not shown")
    return f" ({'; '.join(parts)})" if parts else ""


def _access_message(evidence: Evidence, statement: Statement, group: Sequence[Witness]) -> str:
    operations = ", ".join(sorted({w.action for w in group}))
    who, kind = _who(group)
    if statement.principals is None:
        kind = "identity"
    if evidence is Evidence.NONE:
        why = _passes_without_document(statement)
        return (
            f"lets {who} call {operations} with no attestation document{why}"
            f"{_assumptions(group[0])}; {_CONSEQUENCE[kind]}."
        )
    if evidence is Evidence.NITROTPM_ANY_AMI:
        return (
            f"lets {who} call {operations} with the NitroTPM document of an instance booted "
            f"without Secure Boot from an AMI of someone else's{_assumptions(group[0])}: "
            f"{_why_any_ami(statement)}; pin NitroTPMPCR4 with NitroTPMPCR12 (standard boot) "
            "or NitroTPMPCR7 to your Secure Boot value."
        )
    if evidence is Evidence.NITROTPM_COMMAND_LINE:
        return (
            f"lets {who} call {operations} with the NitroTPM document of your image booted "
            "without Secure Boot and a kernel command line of someone else's (init=/bin/sh, "
            f"say){_assumptions(group[0])}: NitroTPMPCR4 does not cover a command line "
            "systemd-boot appends, NitroTPMPCR12 does (GHSA-xrv8-2pf5-f3q7); pin "
            "NitroTPMPCR12 too (or, for a Secure Boot image, NitroTPMPCR7)."
        )
    return (
        f"lets {who} call {operations} with the document of a debug-mode enclave "
        f"(all-zero PCR0, 1, 2 and 8){_assumptions(group[0])}; the parent instance can read "
        "such an enclave's memory, so pin ImageSha384 or PCR0 to your image."
    )


_FIRMWARE_PCRS = frozenset({0, 1, 2, 3, 5, 6})
"""NitroTPM PCRs the firmware of an instance type sets: the same for every AMI."""


def _tpm_pins(statement: Statement) -> dict[int, set[str]]:
    """The NitroTPM PCRs a statement pins (a positive string match that needs the key)."""
    pins: dict[int, set[str]] = {}
    for condition, parsed in _attestation_keys(statement):
        operator = parse_operator(condition.operator)
        if (
            parsed.kind is KeyKind.NITROTPM_PCR
            and parsed.index is not None
            and operator.positive_string
            and _requires(condition)
        ):
            pins.setdefault(parsed.index, set()).update(v.lower() for v in condition.values)
    return pins


def _why_any_ami(statement: Statement) -> str:
    pins = _tpm_pins(statement)
    if pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex() in pins.get(7, set()):
        return (
            "its NitroTPMPCR7 value is the Secure-Boot-off constant "
            "(attested.pcr.NITROTPM_PCR7_SECURE_BOOT_OFF), which every instance booted "
            "without Secure Boot has, whatever its AMI"
        )
    if pins and set(pins) <= _FIRMWARE_PCRS:
        names = ", ".join(f"NitroTPMPCR{i}" for i in sorted(pins))
        return (
            f"it pins only firmware PCRs ({names}), which are AWS's and the same for every "
            "AMI on an instance type"
        )
    return (
        "nothing it requires identifies your image (NitroTPMPCR4) or your Secure Boot keys "
        "(NitroTPMPCR7)"
    )


def _grouped(witnesses: Sequence[Witness]) -> dict[int, list[Witness]]:
    groups: dict[int, list[Witness]] = {}
    for witness in witnesses:
        groups.setdefault(witness.statement.source.index, []).append(witness)
    return groups


_QUESTIONS = (
    (Evidence.NONE, "unconditional-attested-allow"),
    (Evidence.DEBUG, "debug-mode-admitted"),
    (Evidence.NITROTPM_ANY_AMI, "nitrotpm-other-ami-admitted"),
    (Evidence.NITROTPM_COMMAND_LINE, "nitrotpm-command-line-not-pinned"),
)
"""The evidence the linter tries, in order, and the rule a statement it lets in breaks."""


def _reachable(policy: PolicyDocument) -> Iterable[Finding]:
    """Ask the evaluator who gets a secret without the pinned enclave."""
    compiled = compile_policy(policy, strict=False)
    identity_policy = compiled.identity_policy
    for_enclave = not identity_policy or bool(_attested_statements(policy))
    flagged: set[int] = set()
    # With no NitroTPM key named, a NitroTPM document's request is a request without one:
    # those questions would repeat the first.
    kinds = {parsed.kind for s in policy.statements for _, parsed in _attestation_keys(s)}
    nitrotpm = KeyKind.NITROTPM_PCR in kinds
    for evidence, rule in _QUESTIONS:
        if evidence.nitrotpm and not nitrotpm:
            continue
        for index, group in _grouped(find_access(compiled, evidence=evidence)).items():
            if index in flagged:
                continue
            flagged.add(index)
            statement = policy.statements[index]
            if not for_enclave:
                if evidence is Evidence.NONE:
                    yield _finding(
                        "identity-policy-unattested",
                        statement,
                        f"grants {', '.join(sorted({w.action for w in group}))} without "
                        "requiring an attestation document; alone this cannot be judged, but "
                        'for any key whose policy delegates to IAM (the usual root "kms:*" '
                        "statement) it lets this identity decrypt without an enclave and voids "
                        "the key's PCR conditions.",
                    )
                continue
            yield _finding(rule, statement, _access_message(evidence, statement, group))
    if identity_policy:
        return
    outsiders = [i for i in identities(compiled) if i.outsider]
    pinned = find_access(compiled, evidence=Evidence.PINNED, who=outsiders)
    if nitrotpm:
        pinned += find_access(compiled, evidence=Evidence.NITROTPM_PINNED, who=outsiders)
    for index, group in _grouped(pinned).items():
        statement = policy.statements[index]
        if index in flagged or not _gated(statement):
            continue
        flagged.add(index)
        operations = ", ".join(sorted({w.action for w in group}))
        yield _finding(
            "any-account",
            statement,
            f"allows {operations} to any AWS account that runs the pinned image: the "
            "principal is everyone and no condition requires aws:PrincipalAccount, "
            "kms:CallerAccount or aws:PrincipalOrgID, so anyone with a copy of the image "
            "(a public or leaked EIF, a shared AMI) gets the key in their own account.",
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


def _operator_findings(statement: Statement) -> Iterable[Finding]:
    for condition in statement.conditions:
        operator = parse_operator(condition.operator)
        if operator.problem is not None:
            yield _finding(
                "unknown-operator",
                statement,
                f"{operator.problem}: KMS refuses the policy or the condition does not mean "
                f"what it says (on {condition.key}).",
            )


def _condition_findings(statement: Statement) -> Iterable[Finding]:
    yield from _operator_findings(statement)
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
        if operator.base == "Null" or not operator.valid:
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
                    f"matches a real {'enclave' if parsed.is_enclave else 'instance'}.",
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


def _mixed(statement: Statement) -> Iterable[Finding]:
    if len(_required_kinds(statement)) < 2:
        return
    if statement.effect == "Deny":
        risk = "this Deny never applies and protects nothing"
    else:
        risk = "this Allow never applies (and an enclave or instance relying on it is denied)"
    yield _finding(
        "mixed-document-kinds",
        statement,
        "requires both enclave keys (ImageSha384, PCR<n>) and NitroTPM keys "
        "(NitroTPMPCR<n>), but a request carries one document, an enclave's or an "
        f"instance's, never both: {risk}; write one statement per kind.",
    )


def _risky(policy: PolicyDocument) -> Iterable[Finding]:
    enclaves = _attested_statements(policy)
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
    findings.extend(_reachable(policy))
    for statement in policy.statements:
        findings.extend(_unattested_operations(statement))
        findings.extend(_condition_findings(statement))
        findings.extend(_mixed(statement))
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
