"""The emulator's key-policy evaluator: the project's one evaluator, from ``attested.keypolicy``.

The emulator decides every request with :func:`evaluate_key_policy`, the same code
``attested keypolicy lint`` asks whether anyone can decrypt without an attestation
document, so the two can never disagree. It lives in the production package
(:mod:`attested.keypolicy._evaluate`) because the linter needs it; this module only gives
it the emulator's names. See that module for what is evaluated and what is not.
"""

from __future__ import annotations

from attested.keypolicy._evaluate import (
    MAX_KEY_POLICY_SIZE,
    Decision,
    KeyPolicy,
    PolicyDecision,
    PolicyRequest,
    default_key_policy,
    encryption_context_condition_values,
    parse_key_policy,
    recipient_condition_values,
)
from attested.keypolicy._evaluate import evaluate as evaluate_key_policy

__all__ = [
    "MAX_KEY_POLICY_SIZE",
    "Decision",
    "KeyPolicy",
    "PolicyDecision",
    "PolicyRequest",
    "default_key_policy",
    "encryption_context_condition_values",
    "evaluate_key_policy",
    "parse_key_policy",
    "recipient_condition_values",
]
