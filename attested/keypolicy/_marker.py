"""What marks a KMS key as an enclave key (for ``keypolicy lint`` and ``keypolicy audit``).

A key is an enclave key when any of these holds:

* its policy names ``kms:RecipientAttestation`` (any condition key of the family);
* it carries the tag ``attested:enclave`` with the value ``true`` (any case), which
  ``keypolicy generate --format terraform|cloudformation`` writes;
* one of its aliases starts with ``alias/enclave/``.

The policy test alone would miss the very key an audit must catch: one whose attestation
conditions were edited away. The tag and the alias survive that edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ENCLAVE_ALIAS_PREFIX", "ENCLAVE_TAG", "enclave_marker"]

ENCLAVE_TAG = ("attested:enclave", "true")
"""The tag that marks a KMS key as an enclave key (key, value; the value in any case)."""
ENCLAVE_ALIAS_PREFIX = "alias/enclave/"
"""Aliases that mark their key as an enclave key."""


def enclave_marker(
    *,
    policy_text: str | None,
    tags: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
) -> str | None:
    """Why a key counts as an enclave key, in a few words; ``None`` if nothing marks it."""
    if policy_text is not None and "kms:recipientattestation" in policy_text.lower():
        return "its policy names kms:RecipientAttestation"
    tag_key, tag_value = ENCLAVE_TAG
    for key, value in (tags or {}).items():
        if key == tag_key and value.lower() == tag_value:
            return f"tag {tag_key}={value}"
    for alias in aliases:
        if alias.startswith(ENCLAVE_ALIAS_PREFIX):
            return f"alias {alias}"
    return None
