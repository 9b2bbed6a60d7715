"""KMS key policies for enclaves and NitroTPM instances: generate them, and lint them.

>>> sets = parse_measurements(build_output_json)        # doctest: +SKIP
>>> policy = generate_policy(                            # doctest: +SKIP
...     account="111122223333",
...     enclave_role="arn:aws:iam::111122223333:role/enclave-parent",
...     admin_role="arn:aws:iam::111122223333:role/KeyAdmin",
...     measurements=sets,
... )
>>> text = render_policy(policy)                         # doctest: +SKIP
>>> lint_policy(parse_policy_json(text.encode()))        # doctest: +SKIP
()

:func:`render_terraform` and :func:`render_cloudformation` wrap a policy in a KMS key
resource; :func:`audit_keys` lints every enclave key of an account through a KMS client
the caller builds. Generation and lint work on one policy document at a time. KMS
decides with the key policy, the IAM policies of the caller, grants and SCPs together;
see ``docs/keypolicy.md`` for what a clean lint does and does not show.
"""

from __future__ import annotations

from attested.keypolicy._audit import KeyAudit, KmsReader, audit_keys
from attested.keypolicy._generate import (
    ADMIN_ACTIONS,
    DEFAULT_OPERATIONS,
    DEFAULT_PCRS,
    ENCRYPT_ACTIONS,
    NITROTPM_SECURE_BOOT_PCRS,
    NITROTPM_STANDARD_BOOT_PCRS,
    generate_nitrotpm_policy,
    generate_policy,
)
from attested.keypolicy._iac import render_cloudformation, render_terraform
from attested.keypolicy._keys import ATTESTED_OPERATIONS
from attested.keypolicy._lint import RULES, Finding, Severity, lint_policy
from attested.keypolicy._marker import ENCLAVE_ALIAS_PREFIX, ENCLAVE_TAG, enclave_marker
from attested.keypolicy._measurements import (
    HASH_ALGORITHMS,
    NITROTPM_HASH_ALGORITHM,
    MeasurementSet,
    parse_measurements,
)
from attested.keypolicy._policy import (
    Condition,
    PolicyDocument,
    Principals,
    Statement,
    parse_policy,
    parse_policy_json,
)
from attested.keypolicy._render import render_policy

__all__ = [
    "ADMIN_ACTIONS",
    "ATTESTED_OPERATIONS",
    "Condition",
    "DEFAULT_OPERATIONS",
    "DEFAULT_PCRS",
    "ENCLAVE_ALIAS_PREFIX",
    "ENCLAVE_TAG",
    "ENCRYPT_ACTIONS",
    "Finding",
    "HASH_ALGORITHMS",
    "KeyAudit",
    "KmsReader",
    "MeasurementSet",
    "NITROTPM_HASH_ALGORITHM",
    "NITROTPM_SECURE_BOOT_PCRS",
    "NITROTPM_STANDARD_BOOT_PCRS",
    "PolicyDocument",
    "Principals",
    "RULES",
    "Severity",
    "Statement",
    "audit_keys",
    "enclave_marker",
    "generate_nitrotpm_policy",
    "generate_policy",
    "lint_policy",
    "parse_measurements",
    "parse_policy",
    "parse_policy_json",
    "render_cloudformation",
    "render_policy",
    "render_terraform",
]
