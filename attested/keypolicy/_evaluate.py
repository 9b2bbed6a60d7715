"""Decide one request against a key policy (or an identity policy). Pure.

The one evaluator of the project: the KMS emulator decides every request with it, and
``attested keypolicy lint`` asks it "can anyone decrypt without an attestation document?"
(:mod:`._reach`). It implements the part of IAM policy evaluation that one policy
document needs:

* ``Effect``: an explicit Deny in any matching statement wins; a request that no Allow
  matches is denied (implicit deny).
* ``Principal`` / ``NotPrincipal``: ``"*"``, ``{"AWS": "*"}``, or ``{"AWS": ARN | account
  id | [..]}``. An IAM role principal also matches that role's STS sessions. Other
  principal types (``Service``, ``Federated``, ``CanonicalUser``) never match: no AWS
  service calls the emulator. An identity policy has no principal: it applies to the
  identity it is attached to, so every statement applies to the caller.
* ``Action`` / ``NotAction`` with ``*`` and ``?``, case-insensitive (``kms:Gen*``).
* ``Resource`` / ``NotResource``: ``"*"`` or ARNs with wildcards, case-sensitive.
* ``Condition``: every operator AWS documents (:mod:`._operators`), with ``IfExists``
  and ``ForAnyValue:`` / ``ForAllValues:``. Conditions in one statement must all hold.

The **account root principal** (``arn:aws:iam::ACCOUNT:root`` or the bare account id) is
where real KMS hands the decision over to IAM. With no IAM here, the root principal
matches **every identity of that account**: a key policy with the default statement
behaves as it would in an account whose IAM policies allow everything.

Not evaluated: IAM identity policies together with the key policy, grants, SCPs,
permission boundaries, session policies; policy variables (``${aws:username}`` is
compared literally).

Condition key names are case-insensitive, as in IAM: the request gives its values in a
mapping whose keys are lowercased (:func:`recipient_condition_values` and
:func:`encryption_context_condition_values` build them).
"""

from __future__ import annotations

import enum
import itertools
import json
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from attested import _json
from attested._aws import ACCOUNT_ID, ASSUMED_ROLE_ARN, ROLE_ARN, ROOT_ARN
from attested.document import Profile
from attested.errors import KeyPolicyError, MalformedError
from attested.keypolicy._operators import Operator, condition_holds, glob_matches, parse_operator
from attested.keypolicy._policy import PolicyDocument, Principals, Statement, parse_policy

__all__ = [
    "MAX_KEY_POLICY_SIZE",
    "UNKNOWN_CONDITION_PREFIX",
    "CompiledCondition",
    "CompiledStatement",
    "Decision",
    "KeyPolicy",
    "PolicyDecision",
    "PolicyRequest",
    "applies",
    "compile_policy",
    "condition_met",
    "default_key_policy",
    "encryption_context_condition_values",
    "evaluate",
    "names_caller",
    "parse_key_policy",
    "principal_matches",
    "recipient_condition_values",
]

MAX_KEY_POLICY_SIZE = 32 * 1024
"""KMS's limit on a key policy document, in bytes."""

UNKNOWN_CONDITION_PREFIX = "attested:unknown-condition/"
"""In a policy compiled leniently, a condition with an invalid operator is decided by this
request key (``UNKNOWN_CONDITION_PREFIX + str(n)``): it holds when the request sets it to
``"true"``. The linter tries both outcomes; no real request has such a key."""

_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})


class Decision(enum.Enum):
    """The outcome of evaluating a request against a policy."""

    ALLOW = "allow"
    """An Allow statement matched and no Deny statement did."""
    EXPLICIT_DENY = "explicit_deny"
    """A Deny statement matched."""
    IMPLICIT_DENY = "implicit_deny"
    """No statement allowed the request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledCondition:
    """One condition ready to evaluate: an operator applied to one condition key.

    Attributes:
        operator: the parsed operator (``operator.valid`` unless compiled leniently).
        key: the condition key, lowercased.
        values: the policy's values (any of them may match).
    """

    operator: Operator
    key: str
    values: tuple[str, ...]

    @property
    def text(self) -> str:
        """The operator as written, for messages."""
        return self.operator.text


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledStatement:
    """One statement ready to evaluate.

    Attributes:
        source: the statement as read (:class:`attested.keypolicy.Statement`).
        principals: principal ARNs (account ids as root ARNs), ``"*"`` for everyone,
            other principal types as ``"Service:..."`` (never matching); ``None`` in an
            identity policy (the statement applies to its identity).
        conditions: every condition; all must hold.
    """

    source: Statement
    principals: tuple[str, ...] | None
    conditions: tuple[CompiledCondition, ...]

    @property
    def label(self) -> str:
        """The Sid, else the position (as the linter names statements)."""
        return self.source.label

    @property
    def effect(self) -> str:
        """``"Allow"`` or ``"Deny"``."""
        return self.source.effect


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPolicy:
    """A policy ready to evaluate.

    Attributes:
        document: the policy as read.
        statements: the statements, in document order.
        identity_policy: no statement names a principal (an IAM identity policy).
    """

    document: PolicyDocument
    statements: tuple[CompiledStatement, ...]
    identity_policy: bool = False

    @property
    def version(self) -> str | None:
        """The policy language version, if given."""
        return self.document.version

    @property
    def policy_id(self) -> str | None:
        """The document's ``Id``, if given."""
        return self.document.policy_id


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest:
    """Who asks to do what on which key, and in what context.

    Attributes:
        caller_arn: the calling identity's ARN (an IAM user or role, or an STS
            assumed-role session ARN).
        principal_arn: ``aws:PrincipalArn``: the caller's ARN, or the role ARN for an
            assumed-role session.
        account: the caller's account id.
        action: the action, e.g. ``"kms:Decrypt"``.
        resource: the key ARN.
        context: condition key (lowercased) to its values; single-valued keys have one.
    """

    caller_arn: str
    principal_arn: str
    account: str
    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: types.MappingProxyType({})
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision:
    """The decision, with enough detail to explain it in a log.

    Attributes:
        decision: allow, explicit deny or implicit deny.
        statement: the label of the deciding statement (``None`` for an implicit deny).
        reasons: for an implicit deny, why each statement that names the caller and the
            action did not apply (condition values are public: PCRs, context keys).
    """

    decision: Decision
    statement: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the request is allowed."""
        return self.decision is Decision.ALLOW


def default_key_policy(account_id: str, *, partition: str = "aws") -> str:
    """The policy KMS gives a key created without one: the account root may do ``kms:*``.

    Args:
        account_id: the key's account.
        partition: the ARN partition.
    """
    policy = {
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    return json.dumps(policy, indent=2)


# --- compiling -----------------------------------------------------------------------


def parse_key_policy(text: str | bytes) -> KeyPolicy:
    """Parse and check a key policy document, strictly, as KMS takes it.

    The structure is read by :func:`attested.keypolicy.parse_policy` (the same reader the
    linter uses), then compiled with :func:`compile_policy` in strict mode.

    Args:
        text: the JSON document.

    Raises:
        KeyPolicyError: the document is larger than :data:`MAX_KEY_POLICY_SIZE`, is not
            JSON, lacks a required element, or uses an invalid condition operator.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        doc = _json.loads(raw, what="key policy", max_size=MAX_KEY_POLICY_SIZE, max_depth=32)
        if isinstance(doc, dict) and doc.get("Statement") in ([], {}):
            raise MalformedError("key policy needs a Statement (an object or a non-empty list)")
        parsed = parse_policy(doc)
    except MalformedError as exc:
        raise KeyPolicyError(f"key policy: {exc}") from None
    if parsed.version is not None and parsed.version not in _VERSIONS:
        raise KeyPolicyError(f"unsupported policy Version {parsed.version!r:.40}")
    return compile_policy(parsed, strict=True)


def compile_policy(document: PolicyDocument, *, strict: bool) -> KeyPolicy:
    """Prepare a parsed policy for :func:`evaluate`.

    Args:
        document: the policy as read.
        strict: a key policy as KMS accepts it: every statement has a ``Principal`` and
            a ``Resource``, principals are ARNs or account ids, operators are valid.
            When false (the linter), a document without principals is an identity
            policy, odd principals are kept as written (they match nothing), and a
            condition with an invalid operator is decided by a request key named
            :data:`UNKNOWN_CONDITION_PREFIX` ``+ n``.

    Raises:
        KeyPolicyError: in strict mode, what KMS would refuse.
    """
    identity = not strict and document.is_identity_policy
    counter = itertools.count()
    statements = tuple(
        _statement(s, strict=strict, identity=identity, counter=counter)
        for s in document.statements
    )
    return KeyPolicy(document=document, statements=statements, identity_policy=identity)


def _statement(
    read: Statement, *, strict: bool, identity: bool, counter: Iterator[int]
) -> CompiledStatement:
    where = f"statement {read.sid!r:.60}" if read.sid else f"statement {read.index}"
    if strict:
        if read.principals is None:
            raise KeyPolicyError(f"{where}: Principal is required")
        if not read.resources:
            raise KeyPolicyError(f"{where}: Resource is required")
        for name, items in (("Action", read.actions), ("Resource", read.resources)):
            if not all(items):
                raise KeyPolicyError(f"{where}: {name} must hold non-empty strings only")
    principals: tuple[str, ...] | None
    if identity or read.principals is None:
        principals = None if identity else ()
    else:
        principals = _principals(read.principals, where, strict=strict)
    conditions = []
    for condition in read.conditions:
        operator = parse_operator(condition.operator)
        key = condition.key.lower()
        if not operator.valid:
            if strict:
                raise KeyPolicyError(f"{where}: {operator.problem}")
            key = f"{UNKNOWN_CONDITION_PREFIX}{next(counter)}"
        elif strict:
            _check_values(operator, condition.values, condition.key, where)
        conditions.append(CompiledCondition(operator=operator, key=key, values=condition.values))
    return CompiledStatement(source=read, principals=principals, conditions=tuple(conditions))


def _check_values(operator: Operator, values: tuple[str, ...], key: str, where: str) -> None:
    if not values:
        raise KeyPolicyError(f"{where}: {operator.text} {key} has an empty list of values")
    if operator.base == "Null" and any(v.lower() not in ("true", "false") for v in values):
        raise KeyPolicyError(f"{where}: Null takes 'true' or 'false'")


def _principals(read: Principals, where: str, *, strict: bool) -> tuple[str, ...]:
    if read.wildcard and not read.aws:
        return ("*",)
    result: list[str] = []
    for name in read.aws:
        if name == "*" or name.startswith("arn:"):
            result.append(name)
        elif ACCOUNT_ID.fullmatch(name):
            result.append(f"arn:aws:iam::{name}:root")
        elif strict:
            raise KeyPolicyError(f"{where}: {name!r:.80} is not an ARN or account id")
        else:
            result.append(name)  # matches nothing
    result.extend(read.other)  # "Service:...", "Federated:...": kept, never matched
    return tuple(result)


# --- evaluation ----------------------------------------------------------------------


def principal_matches(principal: str, request: PolicyRequest) -> bool:
    """Whether one policy principal names the caller (a root names its whole account)."""
    if principal == "*":
        return True
    if principal in (request.caller_arn, request.principal_arn):
        return True
    root = ROOT_ARN.fullmatch(principal)
    if root is not None:
        # No IAM here: the root principal stands for every identity of its account.
        return root.group(2) == request.account
    role = ROLE_ARN.fullmatch(principal)
    session = ASSUMED_ROLE_ARN.fullmatch(request.caller_arn)
    if role is not None and session is not None:
        return role.group(2) == session.group(2) and role.group(3) == session.group(3)
    return False


def names_caller(statement: CompiledStatement, request: PolicyRequest) -> bool:
    """Whether the statement's ``Principal``/``NotPrincipal`` covers the caller."""
    if statement.principals is None:
        return True
    named = any(principal_matches(p, request) for p in statement.principals)
    return named != statement.source.not_principal


def applies(statement: CompiledStatement, request: PolicyRequest) -> bool:
    """Whether principal, action and resource match (conditions aside)."""
    source = statement.source
    if not names_caller(statement, request):
        return False
    action = any(glob_matches(a, request.action, ignore_case=True) for a in source.actions)
    if action == source.not_action:
        return False
    if not source.resources:  # an identity policy statement without Resource: invalid
        return True
    resource = any(r == "*" or glob_matches(r, request.resource) for r in source.resources)
    return resource != source.not_resource


def condition_met(condition: CompiledCondition, context: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether one compiled condition holds for the request context."""
    if not condition.operator.valid:
        return context.get(condition.key) == ("true",)
    return condition_holds(condition.operator, condition.values, context.get(condition.key))


def _explain(condition: CompiledCondition, context: Mapping[str, tuple[str, ...]]) -> str:
    have = context.get(condition.key)
    got = "absent" if not have else ", ".join(repr(v) for v in have)
    want = ", ".join(repr(v) for v in condition.values[:8])
    if len(condition.values) > 8:
        want += ", ..."
    return f"{condition.text} {condition.key}: request has {got}; policy wants [{want}]"


def evaluate(policy: KeyPolicy, request: PolicyRequest) -> PolicyDecision:
    """Decide ``request`` against ``policy``: explicit Deny wins, then any Allow.

    Args:
        policy: the compiled policy.
        request: who asks for what.

    Returns:
        The decision; for an implicit deny, ``reasons`` says which conditions failed.
    """
    allow: str | None = None
    reasons: list[str] = []
    for statement in policy.statements:
        if not applies(statement, request):
            continue
        failed = [c for c in statement.conditions if not condition_met(c, request.context)]
        if statement.effect == "Deny":
            if not failed:
                return PolicyDecision(decision=Decision.EXPLICIT_DENY, statement=statement.label)
        elif not failed:
            allow = allow or statement.label
        else:
            reasons.extend(
                f"statement {statement.label}: {_explain(c, request.context)}" for c in failed
            )
    if allow is not None:
        return PolicyDecision(decision=Decision.ALLOW, statement=allow)
    return PolicyDecision(decision=Decision.IMPLICIT_DENY, reasons=tuple(reasons))


def recipient_condition_values(
    pcrs: Mapping[int, bytes], *, profile: Profile = Profile.ENCLAVE
) -> dict[str, tuple[str, ...]]:
    """Condition values from a **verified** attestation document's PCRs.

    A document gives the keys of its own kind only, as AWS KMS does:

    * an enclave document (:attr:`Profile.ENCLAVE`): ``kms:RecipientAttestation:ImageSha384``
      (PCR0) and ``kms:RecipientAttestation:PCR<n>`` for every PCR it carries;
    * a NitroTPM document (:attr:`Profile.NITROTPM`):
      ``kms:RecipientAttestation:NitroTPMPCR<n>`` for every PCR it carries, and no
      enclave key.

    Values are lowercase hex. A key the document does not give is absent from the request,
    with IAM's semantics: ``StringEquals*`` on it fails, ``...IfExists`` holds, ``Null``
    sees it absent.

    Args:
        pcrs: PCR index to value, from a verified document only.
        profile: the kind of document they came from (the verifier's profile).
    """
    if profile is Profile.NITROTPM:
        return {f"kms:recipientattestation:nitrotpmpcr{i}": (v.hex(),) for i, v in pcrs.items()}
    values: dict[str, tuple[str, ...]] = {
        f"kms:recipientattestation:pcr{i}": (v.hex(),) for i, v in pcrs.items()
    }
    if 0 in pcrs:
        values["kms:recipientattestation:imagesha384"] = (pcrs[0].hex(),)
    return values


def encryption_context_condition_values(
    context: Mapping[str, str], *, keys_too: bool = True
) -> dict[str, tuple[str, ...]]:
    """Condition values from an encryption context.

    Gives ``kms:EncryptionContext:<key>`` for each pair and, when ``keys_too``, the
    multi-valued ``kms:EncryptionContextKeys``.

    Args:
        context: the request's encryption context.
        keys_too: also give ``kms:EncryptionContextKeys``.
    """
    values: dict[str, tuple[str, ...]] = {}
    for key, value in context.items():
        name = f"kms:encryptioncontext:{key.lower()}"
        values[name] = (*values.get(name, ()), value)
    if keys_too and context:
        values["kms:encryptioncontextkeys"] = tuple(context)
    return values
