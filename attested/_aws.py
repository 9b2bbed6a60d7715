r"""AWS identifiers: account ids, principal ARNs, regions, instance and key ids. Pure.

One place for the patterns every part checks or takes apart (the key-policy linter and
evaluator, the generator, the KMS client and the emulator), from the IAM User Guide ("IAM
identifiers", "AWS JSON policy elements: Principal"), the ARN reference and the KMS and
EC2 API references. Digits are ASCII digits only: ``\d`` would also accept ``"٨"``.
Patterns are compiled and meant for ``fullmatch``; groups are documented per pattern.
"""

from __future__ import annotations

import re

__all__ = [
    "ACCOUNT_ID",
    "ARN_ACCOUNT",
    "ASSUMED_ROLE_ARN",
    "IAM_PRINCIPAL_ARN",
    "INSTANCE_ID",
    "KMS_KEY_ID",
    "PRINCIPAL_ARN",
    "REGION",
    "ROLE_ARN",
    "ROOT_ARN",
    "SECRETSMANAGER_ARN",
]

_PARTITION = r"aws[a-z-]*"
_ACCOUNT = r"[0-9]{12}"

ACCOUNT_ID = re.compile(_ACCOUNT)
"""A 12-digit AWS account id."""

REGION = re.compile(r"[a-z]{2,5}(-[a-z0-9]+){1,3}-[0-9]{1,2}")
"""A region name (``us-east-1``, ``us-gov-west-1``, ``cn-north-1``, ``eu-isoe-west-1``)."""

INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?")
"""An EC2 instance id, short (8 hex digits) or long (17)."""

KMS_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A KMS key id (a lowercase UUID); multi-Region ``mrk-`` ids are not included."""

ROOT_ARN = re.compile(rf"arn:({_PARTITION}):iam::({_ACCOUNT}):root")
"""An account's root principal. Groups: partition, account."""

ROLE_ARN = re.compile(rf"arn:({_PARTITION}):iam::({_ACCOUNT}):role/(?:.*/)?([^/]+)")
"""An IAM role, with or without a path. Groups: partition, account, role name."""

IAM_PRINCIPAL_ARN = re.compile(
    rf"arn:({_PARTITION}):iam::({_ACCOUNT}):(role|user)/[\w+=,.@/-]{{1,512}}"
)
"""An IAM role or user in IAM's name characters. Groups: partition, account, kind."""

ASSUMED_ROLE_ARN = re.compile(rf"arn:({_PARTITION}):sts::({_ACCOUNT}):assumed-role/([^/]+)/.+")
"""An STS session of a role. Groups: partition, account, role name."""

PRINCIPAL_ARN = re.compile(rf"arn:({_PARTITION}):(iam|sts)::({_ACCOUNT}):(.+)")
"""Any IAM or STS principal. Groups: partition, service, account, resource."""

ARN_ACCOUNT = re.compile(rf"arn:{_PARTITION}:[a-z0-9-]*:[a-z0-9-]*:({_ACCOUNT}):")
"""The start of any ARN that names an account (``match``, not ``fullmatch``). Group: account."""

SECRETSMANAGER_ARN = re.compile(
    rf"arn:(?P<partition>{_PARTITION}):secretsmanager:(?P<region>{REGION.pattern}):"
    rf"(?P<account>{_ACCOUNT}):secret:(?P<name>[A-Za-z0-9/_+=.@-]{{1,519}})"
)
"""A Secrets Manager secret (its name, with or without the random suffix AWS adds).
Named groups: partition, region, account, name."""
