"""One canonical JSON rendering for policies, so generated files diff cleanly.

Keys of the policy grammar come in the order AWS's own documentation uses (``Version``,
``Id``, ``Statement``; ``Sid``, ``Effect``, ``Principal``, ``Action``, ``Resource``,
``Condition``, with the ``Not`` forms beside their positive ones); every other key
(condition operators, condition keys, principal types) is sorted. Two-space indent,
ASCII only, one trailing newline. Lists keep their order: it can carry meaning (old and
new image values during a rollout).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from attested.keypolicy._policy import POLICY_ELEMENTS, STATEMENT_ELEMENTS

__all__ = ["canonical_policy", "render_policy"]

_ORDER = {name: rank for rank, name in enumerate(POLICY_ELEMENTS + STATEMENT_ELEMENTS)}


def _canonical(value: object) -> object:
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: (_ORDER.get(k, len(_ORDER)), k))
        return {key: _canonical(value[key]) for key in keys}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def canonical_policy(policy: Mapping[str, object]) -> dict[str, object]:
    """A copy of ``policy`` with its keys in the canonical order (what is rendered)."""
    value = _canonical(policy)
    if not isinstance(value, dict):  # pragma: no cover - a Mapping stays a dict
        raise TypeError("a policy is a mapping")
    return value


def render_policy(policy: Mapping[str, object]) -> str:
    """Render a policy as canonical JSON text (ends with a newline).

    The same policy always renders to the same text, whatever order its dictionaries
    were built in.
    """
    return json.dumps(_canonical(policy), indent=2, ensure_ascii=True) + "\n"
