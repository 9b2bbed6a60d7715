"""A typed view of an IAM policy document (key policy or identity policy), for linting.

Accepts the shapes AWS accepts: ``Statement`` as one object or a list; ``Action``,
``NotAction``, ``Resource``, ``NotResource`` as a string or a list; ``Principal`` as
``"*"`` or a map of ``AWS``/``Service``/``Federated``/``CanonicalUser`` to a string or a
list; condition values as a string, a boolean, a number or a list of those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from attested import _json
from attested._aws import ACCOUNT_ID, ARN_ACCOUNT, ROOT_ARN
from attested.errors import MalformedError

__all__ = [
    "MAX_POLICY_SIZE",
    "Condition",
    "PolicyDocument",
    "Principals",
    "Statement",
    "parse_policy",
    "parse_policy_json",
]

MAX_POLICY_SIZE = 128 * 1024
"""Bytes; KMS key policies are at most 32 KiB and IAM policies smaller."""
MAX_STATEMENTS = 512
MAX_LIST = 1024

_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
# The elements of a policy and of a statement, in AWS's documentation order.
POLICY_ELEMENTS = ("Version", "Id", "Statement")
STATEMENT_ELEMENTS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principals:
    """Who a statement names.

    Attributes:
        wildcard: ``"*"`` or ``{"AWS": "*"}``: everyone.
        aws: the ``AWS`` principals (ARNs or bare account ids), as written.
        other: ``Service``/``Federated``/``CanonicalUser`` principals as ``"Type:value"``.
    """

    wildcard: bool
    aws: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def root_accounts(self) -> frozenset[str]:
        """Accounts named as a whole (``arn:aws:iam::ID:root`` or a bare account id)."""
        accounts = set()
        for principal in self.aws:
            match = ROOT_ARN.fullmatch(principal.lower())
            if match:
                accounts.add(match.group(2))
            elif ACCOUNT_ID.fullmatch(principal):
                accounts.add(principal)
        return frozenset(accounts)

    def overlaps(self, other: Principals) -> bool:
        """Whether some principal is covered by both (a root covers its account)."""
        if self.wildcard or other.wildcard:
            return True
        mine = {p.lower() for p in self.aws}
        if mine & {p.lower() for p in other.aws}:
            return True
        if {p.lower() for p in self.other} & {p.lower() for p in other.other}:
            return True
        return _covers_account(self, other) or _covers_account(other, self)


def _covers_account(roots: Principals, members: Principals) -> bool:
    accounts = roots.root_accounts
    if not accounts:
        return False
    for principal in members.aws:
        match = ARN_ACCOUNT.match(principal.lower())
        if match and match.group(1) in accounts:
            return True
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One ``operator: {key: values}`` entry of a ``Condition`` block.

    Attributes:
        operator: the operator as written (``"StringEqualsIgnoreCase"``).
        key: the condition key as written.
        values: the values, as text (booleans as ``"true"``/``"false"``).
    """

    operator: str
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One policy statement.

    Attributes:
        index: position in the policy, from 0.
        sid: the ``Sid``, if any.
        effect: ``"Allow"`` or ``"Deny"``.
        principals: ``Principal`` or ``NotPrincipal``; ``None`` in identity policies.
        not_principal: the principals are a ``NotPrincipal``.
        actions: ``Action`` or ``NotAction`` patterns.
        not_action: the actions are a ``NotAction``.
        resources: ``Resource`` or ``NotResource`` patterns (empty if neither).
        not_resource: the resources are a ``NotResource``.
        conditions: every condition, flattened.
    """

    index: int
    sid: str | None
    effect: str
    principals: Principals | None
    not_principal: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """How findings name the statement: its Sid, else its position."""
        return f"Sid {self.sid!r}" if self.sid else f"Statement[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDocument:
    """A parsed policy.

    Attributes:
        version: the ``Version`` field, if any.
        statements: the statements in order.
        policy_id: the ``Id`` field, if any.
    """

    version: str | None
    statements: tuple[Statement, ...]
    policy_id: str | None = None

    @property
    def is_identity_policy(self) -> bool:
        """No statement names a principal: an IAM identity policy."""
        return all(s.principals is None for s in self.statements)


def _strings(value: object, *, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MalformedError(f"{what} is an empty list")
    if len(items) > MAX_LIST:
        raise MalformedError(f"{what} has more than {MAX_LIST} entries")
    if not all(isinstance(item, str) for item in items):
        raise MalformedError(f"{what} must be a string or a list of strings")
    return tuple(items)


def _scalar(value: object, *, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise MalformedError(f"{what} must be a string, a boolean or a number")


def _principals(value: object, *, what: str) -> Principals:
    if value == "*":
        return Principals(wildcard=True, aws=(), other=())
    if not isinstance(value, dict) or not value:
        raise MalformedError(f'{what} must be "*" or a map such as {{"AWS": ...}}')
    aws: tuple[str, ...] = ()
    other: list[str] = []
    for kind, names in value.items():
        if kind not in _PRINCIPAL_TYPES:
            raise MalformedError(f"{what} has an unknown principal type {kind!r:.40}")
        listed = _strings(names, what=f"{what}.{kind}")
        if kind == "AWS":
            aws = listed
        else:
            other.extend(f"{kind}:{name}" for name in listed)
    return Principals(wildcard="*" in aws, aws=aws, other=tuple(other))


def _conditions(value: object, *, what: str) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise MalformedError(f"{what} must be a map of operators")
    found = []
    for operator, block in value.items():
        if not isinstance(block, dict) or not block:
            raise MalformedError(f"{what}.{operator} must be a non-empty map of condition keys")
        for key, raw in block.items():
            items = raw if isinstance(raw, list) else [raw]
            if len(items) > MAX_LIST:
                raise MalformedError(f"{what}.{operator}.{key} has too many values")
            values = tuple(_scalar(v, what=f"{what}.{operator}.{key}") for v in items)
            found.append(Condition(operator=operator, key=key, values=values))
    return tuple(found)


def _pick(raw: Mapping[str, object], name: str, negated: str, *, what: str) -> tuple[str, bool]:
    if name in raw and negated in raw:
        raise MalformedError(f"{what} has both {name} and {negated}")
    return (negated, True) if negated in raw else (name, False)


def _statement(raw: object, index: int) -> Statement:
    what = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise MalformedError(f"{what} must be an object")
    unknown = sorted(set(raw) - set(STATEMENT_ELEMENTS))
    if unknown:  # AWS refuses these (MalformedPolicyDocument); a typo must not pass
        raise MalformedError(f"{what} has unknown elements: {', '.join(unknown)[:200]}")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedError(f"{what}.Sid must be a string")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedError(f'{what}.Effect must be "Allow" or "Deny"')
    action_key, not_action = _pick(raw, "Action", "NotAction", what=what)
    if action_key not in raw:
        raise MalformedError(f"{what} has neither Action nor NotAction")
    principal_key, not_principal = _pick(raw, "Principal", "NotPrincipal", what=what)
    resource_key, not_resource = _pick(raw, "Resource", "NotResource", what=what)
    principals = (
        _principals(raw[principal_key], what=f"{what}.{principal_key}")
        if principal_key in raw
        else None
    )
    return Statement(
        index=index,
        sid=sid,
        effect=effect,
        principals=principals,
        not_principal=not_principal,
        actions=_strings(raw[action_key], what=f"{what}.{action_key}"),
        not_action=not_action,
        resources=(
            _strings(raw[resource_key], what=f"{what}.{resource_key}")
            if resource_key in raw
            else ()
        ),
        not_resource=not_resource,
        conditions=(
            _conditions(raw["Condition"], what=f"{what}.Condition") if "Condition" in raw else ()
        ),
    )


def parse_policy(document: object) -> PolicyDocument:
    """Read a decoded policy document.

    Raises:
        MalformedError: the value is not an IAM policy document.
    """
    if not isinstance(document, dict):
        raise MalformedError("a policy must be a JSON object")
    unknown = sorted(set(document) - set(POLICY_ELEMENTS))
    if unknown:
        raise MalformedError(f"the policy has unknown elements: {', '.join(unknown)[:200]}")
    version = document.get("Version")
    if version is not None and not isinstance(version, str):
        raise MalformedError("Version must be a string")
    policy_id = document.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise MalformedError("Id must be a string")
    if "Statement" not in document:
        raise MalformedError("the policy has no Statement")
    raw = document["Statement"]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedError("Statement is an empty list")
    if len(items) > MAX_STATEMENTS:
        raise MalformedError(f"the policy has more than {MAX_STATEMENTS} statements")
    return PolicyDocument(
        version=version,
        statements=tuple(_statement(item, i) for i, item in enumerate(items)),
        policy_id=policy_id,
    )


def parse_policy_json(data: bytes) -> PolicyDocument:
    """Decode and read a policy from JSON bytes (at most :data:`MAX_POLICY_SIZE`).

    Raises:
        MalformedError: not JSON (including duplicate keys), too large, or not a policy.
    """
    return parse_policy(_json.loads(data, what="policy", max_size=MAX_POLICY_SIZE, max_depth=16))
