"""IAM condition operators: their names, and what each means for one condition. Pure.

One place for both readers of policies: the linter asks what an operator is (does it
hold when the key is absent? does it compare case?), the evaluator asks whether it holds
for a request. Source: the IAM User Guide, "IAM JSON policy elements: Condition
operators" and "Single-valued vs. multivalued context keys".

* **Names** are the ones AWS documents, in AWS's spelling, with the optional
  ``ForAnyValue:`` / ``ForAllValues:`` prefix and ``IfExists`` suffix (not on ``Null``).
  Another spelling (``stringequals``, ``StringEqualsIfexists``) is not an operator here:
  :attr:`Operator.problem` says so, the linter reports it and the emulator refuses the
  policy. Treating it as meaning something would be a guess about a security boundary.
* **An absent key** makes a condition false, except: ``...IfExists`` and
  ``ForAllValues:`` are true, negated operators (``StringNotEquals``, ``NotIpAddress``,
  ``ArnNotLike``, ...) are true, ``ForAnyValue:`` is false, and ``Null`` tests presence.
* **Several policy values** for one key: any of them may match (OR). A negated operator
  holds when none matches.
* **Several request values** (multivalued keys such as ``kms:EncryptionContextKeys``):
  ``ForAllValues:`` needs every request value to match, ``ForAnyValue:`` at least one;
  without a qualifier a positive operator needs one and a negated one needs all.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

__all__ = [
    "OPERATORS",
    "Family",
    "Operator",
    "arn_matches",
    "condition_holds",
    "glob_matches",
    "parse_operator",
]


class Family(enum.Enum):
    """What kind of values an operator compares."""

    STRING = "string"
    NUMERIC = "numeric"
    DATE = "date"
    BOOL = "bool"
    BINARY = "binary"
    IP = "ip"
    ARN = "arn"
    NULL = "null"


# Every documented base operator: (family, negated).
OPERATORS: dict[str, tuple[Family, bool]] = {
    "StringEquals": (Family.STRING, False),
    "StringNotEquals": (Family.STRING, True),
    "StringEqualsIgnoreCase": (Family.STRING, False),
    "StringNotEqualsIgnoreCase": (Family.STRING, True),
    "StringLike": (Family.STRING, False),
    "StringNotLike": (Family.STRING, True),
    "NumericEquals": (Family.NUMERIC, False),
    "NumericNotEquals": (Family.NUMERIC, True),
    "NumericLessThan": (Family.NUMERIC, False),
    "NumericLessThanEquals": (Family.NUMERIC, False),
    "NumericGreaterThan": (Family.NUMERIC, False),
    "NumericGreaterThanEquals": (Family.NUMERIC, False),
    "DateEquals": (Family.DATE, False),
    "DateNotEquals": (Family.DATE, True),
    "DateLessThan": (Family.DATE, False),
    "DateLessThanEquals": (Family.DATE, False),
    "DateGreaterThan": (Family.DATE, False),
    "DateGreaterThanEquals": (Family.DATE, False),
    "Bool": (Family.BOOL, False),
    "BinaryEquals": (Family.BINARY, False),
    "IpAddress": (Family.IP, False),
    "NotIpAddress": (Family.IP, True),
    "ArnEquals": (Family.ARN, False),
    "ArnLike": (Family.ARN, False),
    "ArnNotEquals": (Family.ARN, True),
    "ArnNotLike": (Family.ARN, True),
    "Null": (Family.NULL, False),
}
"""Every base operator AWS documents, with its family and whether it is negated."""

_QUALIFIERS = ("ForAnyValue", "ForAllValues")
_SUFFIX = "IfExists"
_BY_LOWER = {name.lower(): name for name in OPERATORS}


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """A condition operator as written, split into its parts.

    Attributes:
        text: the operator as written in the policy.
        base: the documented base operator (``"StringLike"``), or ``None`` if ``text``
            is not a valid operator (see ``problem``).
        qualifier: ``"ForAnyValue"``, ``"ForAllValues"`` or ``None``.
        if_exists: the ``IfExists`` suffix.
        problem: why ``text`` is not a valid operator, or ``None``.
    """

    text: str
    base: str | None
    qualifier: str | None
    if_exists: bool
    problem: str | None = None

    @property
    def valid(self) -> bool:
        """Whether this is an operator AWS documents."""
        return self.base is not None

    @property
    def family(self) -> Family | None:
        """The kind of values compared; ``None`` for an invalid operator."""
        return None if self.base is None else OPERATORS[self.base][0]

    @property
    def negated(self) -> bool:
        """StringNotEquals, NotIpAddress, ArnNotLike and the other "not" forms."""
        return self.base is not None and OPERATORS[self.base][1]

    @property
    def positive_string(self) -> bool:
        """StringEquals, StringEqualsIgnoreCase or StringLike."""
        return self.family is Family.STRING and not self.negated

    @property
    def negated_string(self) -> bool:
        """StringNotEquals, StringNotEqualsIgnoreCase or StringNotLike."""
        return self.family is Family.STRING and self.negated

    @property
    def case_sensitive_string(self) -> bool:
        """A string operator that compares case: all but the IgnoreCase pair."""
        return self.family is Family.STRING and "IgnoreCase" not in (self.base or "")

    @property
    def absent_key_passes(self) -> bool:
        """Whether the condition holds when the request does not have the key.

        ``Null`` is left to the caller: it depends on its value (``"true"`` holds when
        the key is absent).
        """
        return self.if_exists or self.qualifier == "ForAllValues" or self.negated


def parse_operator(text: str) -> Operator:
    """Split an operator name; an invalid one comes back with ``problem`` set."""
    qualifier: str | None = None
    rest = text
    head, sep, tail = text.partition(":")
    if sep:
        if head not in _QUALIFIERS:
            return _invalid(text, f"{head!r:.40} is not ForAnyValue or ForAllValues")
        qualifier, rest = head, tail
    if_exists = rest.endswith(_SUFFIX) and rest != _SUFFIX
    base = rest[: -len(_SUFFIX)] if if_exists else rest
    if base not in OPERATORS:
        hint = _BY_LOWER.get(base.lower())
        if hint is None and base.lower().endswith(_SUFFIX.lower()):
            hint = _BY_LOWER.get(base.lower()[: -len(_SUFFIX)])
        if hint is not None:
            return _invalid(
                text, f"operator names are case-sensitive ({text!r:.60}: did you mean {hint}?)"
            )
        return _invalid(text, f"{text!r:.60} is not an IAM condition operator")
    if base == "Null" and (qualifier is not None or if_exists):
        return _invalid(text, "Null takes no ForAnyValue:/ForAllValues: and no IfExists")
    return Operator(text=text, base=base, qualifier=qualifier, if_exists=if_exists)


def _invalid(text: str, problem: str) -> Operator:
    return Operator(text=text, base=None, qualifier=None, if_exists=False, problem=problem)


# --- matching ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def glob_matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` any one character."""
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def arn_matches(pattern: str, value: str) -> bool:
    """``ArnLike``/``ArnEquals``: each of the six colon-separated parts is matched alone.

    The resource part (the sixth) keeps its own colons.
    """
    want = pattern.split(":", 5)
    have = value.split(":", 5)
    if len(want) != 6 or len(have) != 6:
        return False
    return all(glob_matches(w, h) for w, h in zip(want, have, strict=True))


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _date(text: str) -> datetime | None:
    text = text.strip()
    if re.fullmatch(r"-?\d{1,12}", text):  # epoch seconds
        try:
            return datetime.fromtimestamp(int(text), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _binary(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ip_in(policy_value: str, request_value: str) -> bool:
    try:
        network = ipaddress.ip_network(policy_value.strip(), strict=False)
        address = ipaddress.ip_address(request_value.strip())
    except ValueError:
        return False
    return address.version == network.version and address in network


def _ordered(base: str, have: Decimal | datetime | None, want: Decimal | datetime | None) -> bool:
    if have is None or want is None or type(have) is not type(want):
        return False
    relation = base.removeprefix("Numeric").removeprefix("Date")
    if relation in ("Equals", "NotEquals"):
        return have == want
    if relation == "LessThan":
        return have < want  # type: ignore[operator]
    if relation == "LessThanEquals":
        return have <= want  # type: ignore[operator]
    if relation == "GreaterThan":
        return have > want  # type: ignore[operator]
    return have >= want  # type: ignore[operator]


def _compare(base: str, request_value: str, policy_value: str) -> bool:
    """Whether one request value matches one policy value, before negation."""
    family = OPERATORS[base][0]
    if family is Family.STRING:
        if "IgnoreCase" in base:
            return request_value.casefold() == policy_value.casefold()
        if "Like" in base:
            return glob_matches(policy_value, request_value)
        return request_value == policy_value
    if family is Family.ARN:
        return arn_matches(policy_value, request_value)
    if family is Family.BOOL:
        return request_value.lower() == policy_value.lower()
    if family is Family.NUMERIC:
        return _ordered(base, _number(request_value), _number(policy_value))
    if family is Family.DATE:
        return _ordered(base, _date(request_value), _date(policy_value))
    if family is Family.BINARY:
        have, want = _binary(request_value), _binary(policy_value)
        return have is not None and have == want
    if family is Family.IP:
        return _ip_in(policy_value, request_value)
    raise AssertionError(f"no comparison for {base}")  # pragma: no cover - Null is apart


def condition_holds(
    operator: Operator, policy_values: tuple[str, ...], request_values: tuple[str, ...] | None
) -> bool:
    """Whether one condition (one operator, one key) holds.

    Args:
        operator: a valid operator (``operator.valid``).
        policy_values: the policy's values for the key (any of them may match).
        request_values: the request's values for the key; ``None`` or empty when the
            request does not have it.

    Raises:
        ValueError: the operator is not valid.
    """
    base = operator.base
    if base is None:
        raise ValueError(f"not a condition operator: {operator.text!r:.60}")
    present = bool(request_values)
    if base == "Null":
        # "true": the key must be absent; "false": present. Several values: any.
        return any((v.lower() == "true") != present for v in policy_values)
    if not request_values:
        if operator.if_exists or operator.qualifier == "ForAllValues":
            return True
        if operator.qualifier == "ForAnyValue":
            return False
        return operator.negated

    def matches(value: str) -> bool:
        hit = any(_compare(base, value, p) for p in policy_values)
        return not hit if operator.negated else hit

    if operator.qualifier == "ForAllValues" or (operator.qualifier is None and operator.negated):
        return all(matches(v) for v in request_values)
    return any(matches(v) for v in request_values)
