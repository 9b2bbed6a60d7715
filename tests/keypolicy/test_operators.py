"""IAM condition operators: names and matching, as the IAM User Guide documents them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.keypolicy._operators import OPERATORS, condition_holds, parse_operator


def holds(operator: str, policy: list[str] | str, request: list[str] | str | None) -> bool:
    parsed = parse_operator(operator)
    assert parsed.valid, parsed.problem
    values = (policy,) if isinstance(policy, str) else tuple(policy)
    have = None if request is None else (request,) if isinstance(request, str) else tuple(request)
    return condition_holds(parsed, values, have)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_documented_operator_parses_with_its_forms(name: str) -> None:
    assert parse_operator(name).base == name
    if name != "Null":
        assert parse_operator(f"{name}IfExists").if_exists
        assert parse_operator(f"ForAnyValue:{name}").qualifier == "ForAnyValue"
        assert parse_operator(f"ForAllValues:{name}IfExists").qualifier == "ForAllValues"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("stringequals", "did you mean StringEquals?"),
        ("STRINGLIKE", "did you mean StringLike?"),
        ("StringLikeifexists", "did you mean"),
        ("forallvalues:StringEquals", "not ForAnyValue or ForAllValues"),
        ("ForAnyValue:Null", "Null takes no"),
        ("IfExists", "not an IAM condition operator"),
        ("", "not an IAM condition operator"),
    ],
)
def test_other_spellings_are_not_operators(text: str, needle: str) -> None:
    parsed = parse_operator(text)
    assert not parsed.valid
    assert parsed.problem is not None
    assert needle in parsed.problem


@pytest.mark.parametrize(
    ("operator", "absent"),
    [
        ("StringEquals", False),
        ("StringEqualsIfExists", True),
        ("StringNotEquals", True),
        ("StringNotLikeIfExists", True),
        ("ForAllValues:StringEquals", True),
        ("ForAnyValue:StringEquals", False),
        ("ForAnyValue:StringNotEquals", False),
        ("NotIpAddress", True),
        ("IpAddress", False),
        ("ArnNotLike", True),
        ("NumericLessThan", False),
        ("NumericNotEquals", True),
        ("DateNotEquals", True),
        ("Bool", False),
        ("BinaryEquals", False),
    ],
)
def test_an_absent_key(operator: str, absent: bool) -> None:
    assert holds(operator, "x", None) is absent
    assert holds(operator, "x", []) is absent


def test_null() -> None:
    assert holds("Null", "true", None)
    assert not holds("Null", "true", "v")
    assert holds("Null", "false", "v")
    assert not holds("Null", "false", None)


def test_strings() -> None:
    assert holds("StringEquals", ["a", "b"], "b")
    assert not holds("StringEquals", "B", "b")
    assert holds("StringEqualsIgnoreCase", "B", "b")
    assert holds("StringLike", "bill*", "billing")
    assert holds("StringLike", "b?ll", "bell")
    assert not holds("StringLike", "bill*", "Billing")
    assert holds("StringNotEquals", ["a", "b"], "c")
    assert not holds("StringNotEquals", ["a", "b"], "a")


def test_multivalued_keys() -> None:
    assert holds("ForAllValues:StringEquals", ["a", "b"], ["a", "b"])
    assert not holds("ForAllValues:StringEquals", ["a"], ["a", "b"])
    assert holds("ForAnyValue:StringEquals", ["a"], ["a", "b"])
    assert not holds("ForAnyValue:StringEquals", ["c"], ["a", "b"])
    assert holds("ForAnyValue:StringNotEquals", ["a"], ["a", "b"])
    assert not holds("StringNotEquals", ["a"], ["a", "b"])


def test_numbers_dates_addresses_binary_and_bool() -> None:
    assert holds("NumericLessThan", "10", "9")
    assert not holds("NumericLessThan", "10", "10")
    assert holds("NumericLessThanEquals", "10", "10.0")
    assert holds("NumericGreaterThan", "1.5", "2")
    assert not holds("NumericEquals", "1", "one")
    assert holds("DateLessThan", "2030-01-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert holds("DateGreaterThanEquals", "2026-12-01T00:00:00Z", "1796083200")
    assert not holds("DateEquals", "2026-12-01", "not a date")
    assert holds("IpAddress", "10.0.0.0/8", "10.1.2.3")
    assert not holds("IpAddress", "10.0.0.0/8", "11.1.2.3")
    assert holds("NotIpAddress", "10.0.0.0/8", "11.1.2.3")
    assert holds("IpAddress", "2001:db8::/32", "2001:db8::1")
    assert not holds("IpAddress", "10.0.0.0/8", "::ffff:10.0.0.1")
    assert holds("BinaryEquals", "AAEC", "AAEC")
    assert not holds("BinaryEquals", "AAEC", "AAED")
    assert holds("Bool", "true", "TRUE")
    assert not holds("Bool", "true", "false")


def test_arns_match_part_by_part_for_both_equals_and_like() -> None:
    role = "arn:aws:iam::111122223333:role/enclave-parent"
    for operator in ("ArnEquals", "ArnLike"):
        assert holds(operator, "arn:aws:iam::*:role/enclave-parent", role)
        assert holds(operator, role, role)
        assert not holds(operator, "arn:aws:iam::*:role/other", role)
    # A wildcard stays inside its part: it cannot swallow colons of the first five.
    assert not holds("ArnLike", "arn:aws:*:role/enclave-parent", role)
    assert holds("ArnNotLike", "arn:aws:iam::*:role/other", role)


@given(st.text(max_size=80))
def test_any_text_parses_without_raising(text: str) -> None:
    parsed = parse_operator(text)
    assert parsed.valid == (parsed.problem is None)


@given(
    st.sampled_from(sorted(OPERATORS)),
    st.sampled_from(["", "IfExists"]),
    st.sampled_from(["", "ForAnyValue:", "ForAllValues:"]),
    st.lists(st.text(max_size=40), min_size=1, max_size=3),
    st.none() | st.lists(st.text(max_size=40), max_size=3),
)
def test_matching_never_raises(name, suffix, prefix, policy, request) -> None:
    parsed = parse_operator(f"{prefix}{name}{suffix}")
    if parsed.valid:
        result = condition_holds(parsed, tuple(policy), None if request is None else tuple(request))
        assert isinstance(result, bool)
