"""AWS identifier patterns: one place, ASCII digits only, and no second copy elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attested import _aws

PACKAGE = Path(_aws.__file__).parent


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (_aws.ACCOUNT_ID, ["111122223333"], ["11112222333", "١١١١٢٢٢٢٣٣٣٣", "11112222333a"]),
        (_aws.REGION, ["us-east-1", "us-gov-west-1", "cn-north-1"], ["us_east_1", "useast1"]),
        (_aws.INSTANCE_ID, ["i-1234567890abcdef0", "i-12345678"], ["i-123", "i-XYZ45678"]),
        (
            _aws.ROOT_ARN,
            ["arn:aws:iam::111122223333:root", "arn:aws-cn:iam::111122223333:root"],
            ["arn:aws:iam::111122223333:role/root", "arn:aws:iam::١١١١٢٢٢٢٣٣٣٣:root"],
        ),
        (
            _aws.ROLE_ARN,
            ["arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/p/q/a"],
            ["arn:aws:iam::111122223333:user/a", "arn:aws:sts::111122223333:role/a"],
        ),
        (
            _aws.ASSUMED_ROLE_ARN,
            ["arn:aws:sts::111122223333:assumed-role/a/session"],
            ["arn:aws:sts::111122223333:assumed-role/a", "arn:aws:iam::111122223333:role/a"],
        ),
    ],
)
def test_patterns(pattern: re.Pattern[str], good: list[str], bad: list[str]) -> None:
    assert all(pattern.fullmatch(g) for g in good)
    assert not any(pattern.fullmatch(b) for b in bad)


def test_groups() -> None:
    role = _aws.ROLE_ARN.fullmatch("arn:aws:iam::111122223333:role/path/name")
    assert role is not None
    assert role.groups() == ("aws", "111122223333", "name")
    principal = _aws.PRINCIPAL_ARN.fullmatch("arn:aws:sts::111122223333:assumed-role/r/s")
    assert principal is not None
    assert principal.group(3) == "111122223333"


def test_no_other_module_writes_its_own_arn_or_account_pattern() -> None:
    written = re.compile(r"re\.compile\([^)]*(arn:|\\d\{12\}|\[0-9\]\{12\})")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "_aws.py" and written.search(path.read_text())
    ]
    assert offenders == []
