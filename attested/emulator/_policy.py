"""KMS key policies: parse a policy document and decide one request against it. Pure.

This is the part of IAM policy evaluation that a KMS key policy needs, and nothing more:

* ``Effect`` ``Allow`` / ``Deny``; an explicit Deny in any matching statement wins, and a
  request that no Allow statement matches is denied (implicit deny).
* ``Principal`` / ``NotPrincipal``: ``"*"``, ``{"AWS": "*"}``, or ``{"AWS": ARN | account id
  | [..]}``. Other principal types (``Service``, ``Federated``, ``CanonicalUser``) are
  accepted but never match: the emulator has no AWS services calling it.
* ``Action`` / ``NotAction`` with ``*`` and ``?`` wildcards, case-insensitive
  (``kms:*``, ``kms:Gen*``).
* ``Resource`` / ``NotResource``: ``"*"`` or ARNs with wildcards, case-sensitive.
* ``Condition`` operators ``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
  ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``, ``ArnEquals``,
  ``ArnLike``, ``ArnNotEquals``, ``ArnNotLike``, ``Bool``, each with its ``IfExists`` form
  and the ``ForAnyValue:`` / ``ForAllValues:`` set qualifiers, and ``Null``. A list of
  values means "any of them". Operators in one block, and keys under one operator, must
  all hold.

The **account root principal** (``arn:aws:iam::ACCOUNT:root`` or the bare account id) is
where real KMS hands the decision over to IAM. The emulator has no IAM, so the root
principal matches **every identity of that account**: a key policy with the default
statement behaves as it would in an account whose IAM policies allow everything.

What this does **not** evaluate: IAM identity policies, grants, SCPs, permission
boundaries, session policies, policy variables (``${aws:username}`` is compared
literally), the ``Numeric*``, ``Date*``, ``IpAddress`` and ``BinaryEquals`` operators
(a policy using them is refused with :class:`~attested.errors.KeyPolicyError`, never
silently ignored).

Condition key names are case-insensitive, as in IAM; the request side gives its values in
a mapping whose keys are lowercased (:func:`recipient_condition_values` and
:func:`encryption_context_condition_values` build them).
"""

from __future__ import annotations

import enum
import functools
import json
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from attested import _json
from attested.errors import KeyPolicyError, MalformedError
from attested.keypolicy._policy import Condition as ReadCondition
from attested.keypolicy._policy import Principals
from attested.keypolicy._policy import Statement as ReadStatement
from attested.keypolicy._policy import parse_policy as read_policy

__all__ = [
    "MAX_KEY_POLICY_SIZE",
    "Condition",
    "Decision",
    "KeyPolicy",
    "PolicyDecision",
    "PolicyRequest",
    "Statement",
    "default_key_policy",
    "encryption_context_condition_values",
    "evaluate_key_policy",
    "parse_key_policy",
    "recipient_condition_values",
]

MAX_KEY_POLICY_SIZE = 32 * 1024
"""KMS's limit on a key policy document, in bytes."""

_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})

_STRING_OPS = frozenset(
    {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "ArnEquals",
        "ArnLike",
        "ArnNotEquals",
        "ArnNotLike",
        "Bool",
    }
)
_NEGATED = frozenset(
    {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}
)
_QUALIFIERS = ("ForAnyValue", "ForAllValues")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_ROOT_RE = re.compile(r"arn:(aws[a-z-]*):iam::([0-9]{12}):root")
_ROLE_RE = re.compile(r"arn:(aws[a-z-]*):iam::([0-9]{12}):role/(?:.*/)?([^/]+)")
_ASSUMED_RE = re.compile(r"arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/.+")


class Decision(enum.Enum):
    """The outcome of evaluating a request against a key policy."""

    ALLOW = "allow"
    """An Allow statement matched and no Deny statement did."""
    EXPLICIT_DENY = "explicit_deny"
    """A Deny statement matched."""
    IMPLICIT_DENY = "implicit_deny"
    """No statement allowed the request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One condition: an operator applied to one condition key.

    Attributes:
        operator: the base operator, e.g. ``"StringEqualsIgnoreCase"`` or ``"Null"``.
        qualifier: ``"ForAnyValue"``, ``"ForAllValues"`` or ``None``.
        if_exists: the ``...IfExists`` form (an absent key satisfies it).
        key: the condition key, lowercased.
        values: the policy's values (any of them may match).
        text: the operator as written in the policy, for messages.
    """

    operator: str
    qualifier: str | None
    if_exists: bool
    key: str
    values: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One statement of a key policy.

    Attributes:
        sid: the statement id, or ``None``.
        effect: ``"Allow"`` or ``"Deny"``.
        principals: principal ARNs (account ids normalised to root ARNs), ``"*"`` for
            everyone; entries of other principal types are kept as ``"Service:..."``
            and never match.
        not_principal: the list is a ``NotPrincipal``.
        actions: action patterns.
        not_action: the list is a ``NotAction``.
        resources: resource patterns.
        not_resource: the list is a ``NotResource``.
        conditions: every condition, all of which must hold.
    """

    sid: str | None
    effect: str
    principals: tuple[str, ...]
    not_principal: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """The Sid, or a placeholder when the statement has none."""
        return self.sid if self.sid else "(no Sid)"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPolicy:
    """A parsed key policy document.

    Attributes:
        statements: the statements, in document order.
        version: the policy language version, if given.
        policy_id: the document's ``Id``, if given.
    """

    statements: tuple[Statement, ...]
    version: str | None = None
    policy_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest:
    """What a key policy decides about: who asks to do what on which key, and in what context.

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


# --- parsing -------------------------------------------------------------------------


def parse_key_policy(text: str | bytes) -> KeyPolicy:
    """Parse and check a key policy document.

    The structure is read by :func:`attested.keypolicy.parse_policy` (the same reader the
    linter uses); this adds what a key policy requires and what evaluation needs:
    ``Principal`` and ``Resource`` present, principals normalised (a bare account id is
    its root ARN), supported condition operators split into their parts.

    Args:
        text: the JSON document.

    Returns:
        The parsed policy.

    Raises:
        KeyPolicyError: the document is larger than :data:`MAX_KEY_POLICY_SIZE`, is not
            JSON, lacks a required element, or uses an operator this module does not
            evaluate.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        doc = _json.loads(raw, what="key policy", max_size=MAX_KEY_POLICY_SIZE, max_depth=32)
        if isinstance(doc, dict) and doc.get("Statement") in ([], {}):
            raise MalformedError("key policy needs a Statement (an object or a non-empty list)")
        parsed = read_policy(doc)
    except MalformedError as exc:
        raise KeyPolicyError(f"key policy: {exc}") from None
    if parsed.version is not None and parsed.version not in _VERSIONS:
        raise KeyPolicyError(f"unsupported policy Version {parsed.version!r:.40}")
    return KeyPolicy(
        statements=tuple(_statement(s) for s in parsed.statements),
        version=parsed.version,
        policy_id=parsed.policy_id,
    )


def _statement(read: ReadStatement) -> Statement:
    where = f"statement {read.sid!r:.60}" if read.sid else f"statement {read.index}"
    if read.principals is None:
        raise KeyPolicyError(f"{where}: Principal is required")
    if not read.resources:
        raise KeyPolicyError(f"{where}: Resource is required")
    for name, items in (("Action", read.actions), ("Resource", read.resources)):
        if not all(items):
            raise KeyPolicyError(f"{where}: {name} must hold non-empty strings only")
    return Statement(
        sid=read.sid,
        effect=read.effect,
        principals=_principals(read.principals, where),
        not_principal=read.not_principal,
        actions=read.actions,
        not_action=read.not_action,
        resources=read.resources,
        not_resource=read.not_resource,
        conditions=tuple(_condition(c, where) for c in read.conditions),
    )


def _principals(read: Principals, where: str) -> tuple[str, ...]:
    if read.wildcard and not read.aws:
        return ("*",)
    result: list[str] = []
    for name in read.aws:
        if not name:
            raise KeyPolicyError(f"{where}: an empty principal")
        if name == "*" or name.startswith("arn:"):
            result.append(name)
        elif _ACCOUNT_RE.fullmatch(name):
            result.append(f"arn:aws:iam::{name}:root")
        else:
            raise KeyPolicyError(f"{where}: {name!r:.80} is not an ARN or account id")
    result.extend(read.other)  # "Service:...", "Federated:...": accepted, never matched
    return tuple(result)


def _condition(read: ReadCondition, where: str) -> Condition:
    qualifier, base, if_exists = _split_operator(read.operator, where)
    if not read.values:
        raise KeyPolicyError(f"{where}: {read.operator} {read.key} has an empty list of values")
    if base == "Null" and any(v.lower() not in ("true", "false") for v in read.values):
        raise KeyPolicyError(f"{where}: Null takes 'true' or 'false'")
    return Condition(
        operator=base,
        qualifier=qualifier,
        if_exists=if_exists,
        key=read.key.lower(),
        values=read.values,
        text=read.operator,
    )


def _split_operator(text: str, where: str) -> tuple[str | None, str, bool]:
    qualifier: str | None = None
    base = text
    if ":" in text:
        qualifier, _, base = text.partition(":")
        if qualifier not in _QUALIFIERS:
            raise KeyPolicyError(f"{where}: unknown set qualifier {qualifier!r:.40}")
    if_exists = False
    if base.endswith("IfExists") and base != "IfExists":
        base, if_exists = base[: -len("IfExists")], True
    if base == "Null":
        if qualifier is not None or if_exists:
            raise KeyPolicyError(f"{where}: Null takes no qualifier and no IfExists")
    elif base not in _STRING_OPS:
        supported = ", ".join(sorted(_STRING_OPS | {"Null"}))
        raise KeyPolicyError(
            f"{where}: the KMS emulator does not evaluate condition operator {text!r:.60} "
            f"(supported: {supported}, with IfExists and ForAnyValue:/ForAllValues:)"
        )
    return qualifier, base, if_exists


# --- evaluation ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _glob_match(pattern: str, value: str, *, ignore_case: bool) -> bool:
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    want = pattern.split(":", 5)
    have = value.split(":", 5)
    if len(want) != 6 or len(have) != 6:
        return False
    return all(_glob_match(w, h, ignore_case=False) for w, h in zip(want, have, strict=True))


def _compare(operator: str, request_value: str, policy_value: str) -> bool:
    if operator in ("StringEquals", "StringNotEquals", "ArnEquals", "ArnNotEquals"):
        return request_value == policy_value
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return request_value.casefold() == policy_value.casefold()
    if operator in ("StringLike", "StringNotLike"):
        return _glob_match(policy_value, request_value, ignore_case=False)
    if operator in ("ArnLike", "ArnNotLike"):
        return _arn_like(policy_value, request_value)
    if operator == "Bool":
        return request_value.lower() == policy_value.lower()
    raise AssertionError(f"unhandled operator {operator}")  # pragma: no cover - parse refuses


def _condition_holds(condition: Condition, context: Mapping[str, tuple[str, ...]]) -> bool:
    values = context.get(condition.key)
    present = bool(values)
    if condition.operator == "Null":
        return any((v.lower() == "true") != present for v in condition.values)
    negated = condition.operator in _NEGATED
    if not values:
        if condition.if_exists or condition.qualifier == "ForAllValues":
            return True
        if condition.qualifier == "ForAnyValue":
            return False
        return negated

    def matches(value: str) -> bool:
        hit = any(_compare(condition.operator, value, p) for p in condition.values)
        return not hit if negated else hit

    if condition.qualifier == "ForAllValues" or (condition.qualifier is None and negated):
        return all(matches(v) for v in values)
    return any(matches(v) for v in values)


def _principal_matches(principal: str, request: PolicyRequest) -> bool:
    if principal == "*":
        return True
    if principal in (request.caller_arn, request.principal_arn):
        return True
    root = _ROOT_RE.fullmatch(principal)
    if root is not None:
        # No IAM here: the root principal stands for every identity of its account.
        return root.group(2) == request.account
    role = _ROLE_RE.fullmatch(principal)
    session = _ASSUMED_RE.fullmatch(request.caller_arn)
    if role is not None and session is not None:
        return role.group(2) == session.group(2) and role.group(3) == session.group(3)
    return False


def _applies(statement: Statement, request: PolicyRequest) -> bool:
    """Whether principal, action and resource match (conditions aside)."""
    principal = any(_principal_matches(p, request) for p in statement.principals)
    if principal == statement.not_principal:
        return False
    action = any(_glob_match(a, request.action, ignore_case=True) for a in statement.actions)
    if action == statement.not_action:
        return False
    resource = any(
        r == "*" or _glob_match(r, request.resource, ignore_case=False) for r in statement.resources
    )
    return resource != statement.not_resource


def _explain(condition: Condition, context: Mapping[str, tuple[str, ...]]) -> str:
    have = context.get(condition.key)
    got = "absent" if not have else ", ".join(repr(v) for v in have)
    want = ", ".join(repr(v) for v in condition.values[:8])
    if len(condition.values) > 8:
        want += ", ..."
    return f"{condition.text} {condition.key}: request has {got}; policy wants [{want}]"


def evaluate_key_policy(policy: KeyPolicy, request: PolicyRequest) -> PolicyDecision:
    """Decide ``request`` against ``policy``: explicit Deny wins, then any Allow.

    Args:
        policy: the parsed key policy.
        request: who asks for what.

    Returns:
        The decision; for an implicit deny, ``reasons`` says which conditions failed.
    """
    allow: str | None = None
    reasons: list[str] = []
    for statement in policy.statements:
        if not _applies(statement, request):
            continue
        failed = [c for c in statement.conditions if not _condition_holds(c, request.context)]
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


def recipient_condition_values(pcrs: Mapping[int, bytes]) -> dict[str, tuple[str, ...]]:
    """Condition values from a **verified** attestation document's PCRs.

    ``kms:RecipientAttestation:ImageSha384`` is PCR0; ``kms:RecipientAttestation:PCR<n>``
    is PCR n, for every PCR the document carries; values are lowercase hex.

    Args:
        pcrs: PCR index to value, from a verified document only.
    """
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
