"""Audit an account's KMS keys: every enclave key's policy, linted.

:func:`audit_keys` lists the account's keys (``ListKeys``, paginated), skips the
AWS-managed ones (``DescribeKey``'s ``KeyManager``), reads each key policy
(``GetKeyPolicy``) and lints every *enclave key*: one whose policy names
``kms:RecipientAttestation``, whose tags or aliases mark it (:mod:`._marker`; aliases come
from one paginated ``ListAliases``, tags from ``ListResourceTags`` only when the policy and
aliases did not already decide). It yields one :class:`KeyAudit` per key, as it goes.

The client is anything with the methods of boto3's KMS client that it calls, with their
keyword arguments and answers; this module imports no AWS SDK and opens no socket (the
caller builds the client, with its credentials, endpoint and retries). Any exception a
call raises is a failed read: for one key, that key's audit says so (it is an error: a key
that cannot be read cannot be called safe); for ``ListKeys`` or ``ListAliases`` the whole
audit stops with :class:`~attested.errors.UnavailableError`. Messages carry the AWS error
code and message (no credential is ever in them), cut to 300 characters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from attested.errors import MalformedError, UnavailableError
from attested.keypolicy._lint import Finding, Severity, lint_policy
from attested.keypolicy._marker import enclave_marker
from attested.keypolicy._policy import parse_policy_json

__all__ = ["MAX_KEYS", "KeyAudit", "KmsReader", "audit_keys"]

MAX_KEYS = 100_000
"""Keys (and aliases) read from one account and region; KMS's default quota is 100,000."""
_PAGE = 100


class KmsReader(Protocol):
    """The calls an audit makes; boto3's KMS client has them."""

    def list_keys(self, **kwargs: Any) -> Mapping[str, Any]:
        """``ListKeys``."""
        ...

    def list_aliases(self, **kwargs: Any) -> Mapping[str, Any]:
        """``ListAliases``."""
        ...

    def describe_key(self, **kwargs: Any) -> Mapping[str, Any]:
        """``DescribeKey``."""
        ...

    def get_key_policy(self, **kwargs: Any) -> Mapping[str, Any]:
        """``GetKeyPolicy``."""
        ...

    def list_resource_tags(self, **kwargs: Any) -> Mapping[str, Any]:
        """``ListResourceTags``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyAudit:
    """What the audit found for one key.

    Attributes:
        key_id: the key id.
        arn: the key ARN, when read.
        aliases: the key's aliases.
        state: ``KeyState`` (``Enabled``, ``Disabled``, ``PendingDeletion``, ...), when read.
        status: ``ok`` (an enclave key, no error finding), ``error`` (an enclave key with
            an error finding, or a policy that is not a policy), ``unreadable`` (a read
            failed: not judged), ``aws-managed`` or ``not-enclave`` (skipped).
        marker: why it counts as an enclave key, or ``None``.
        findings: the lint findings.
        problem: what failed, for ``unreadable`` and for a policy that is not a policy.
    """

    key_id: str
    arn: str | None
    aliases: tuple[str, ...]
    state: str | None
    status: str
    marker: str | None
    findings: tuple[Finding, ...] = ()
    problem: str | None = None

    @property
    def failed(self) -> bool:
        """An error: the key is not shown safe (lint errors, or it could not be read)."""
        return self.status in ("error", "unreadable")


class _ReadFailed(Exception):
    pass


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    text = f"{code}: {error.get('Message', '')}" if code and isinstance(error, dict) else str(exc)
    return " ".join(text.split())[:300] or type(exc).__name__


def _call(
    operation: str, call: Callable[..., Mapping[str, Any]], **kwargs: Any
) -> Mapping[str, Any]:
    try:
        answer = call(**kwargs)
    except Exception as exc:  # the client's own errors: a failed read, whatever their type
        raise _ReadFailed(f"{operation}: {_describe(exc)}") from None
    if not isinstance(answer, Mapping):
        raise _ReadFailed(f"{operation}: the answer is not an object")
    return answer


def _pages(
    operation: str,
    call: Callable[..., Mapping[str, Any]],
    member: str,
    page_size: int = _PAGE,
    **kwargs: Any,
) -> Iterator[Mapping[str, Any]]:
    """Every entry of ``member`` over all pages (``Marker``/``NextMarker``/``Truncated``)."""
    marker: str | None = None
    seen: set[str] = set()
    count = 0
    while True:
        page = _call(
            operation, call, Limit=page_size, **kwargs, **({"Marker": marker} if marker else {})
        )
        entries = page.get(member, [])
        if not isinstance(entries, list):
            raise _ReadFailed(f"{operation}: {member} is not a list")
        for entry in entries:
            count += 1
            if count > MAX_KEYS:
                raise _ReadFailed(f"{operation}: more than {MAX_KEYS} entries")
            if isinstance(entry, Mapping):
                yield entry
        marker = page.get("NextMarker")
        if not page.get("Truncated") or not isinstance(marker, str) or not marker:
            return
        if marker in seen:
            raise _ReadFailed(f"{operation}: the same page marker came back twice")
        seen.add(marker)


def _aliases(client: KmsReader, page_size: int) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for alias in _pages("ListAliases", client.list_aliases, "Aliases", page_size):
        target, name = alias.get("TargetKeyId"), alias.get("AliasName")
        if isinstance(target, str) and isinstance(name, str):
            by_key.setdefault(target, []).append(name)
    return by_key


def _tags(client: KmsReader, key_id: str, page_size: int) -> dict[str, str]:
    tags = {}
    pages = _pages("ListResourceTags", client.list_resource_tags, "Tags", page_size, KeyId=key_id)
    for tag in pages:
        key, value = tag.get("TagKey"), tag.get("TagValue")
        if isinstance(key, str) and isinstance(value, str):
            tags[key] = value
    return tags


def audit_keys(
    client: KmsReader, *, lint_all: bool = False, page_size: int = _PAGE
) -> Iterator[KeyAudit]:
    """Audit every key of the client's account and region, yielding one result per key.

    Args:
        client: a KMS client (boto3's, or anything with the same calls).
        lint_all: lint every customer managed key, not only enclave keys.
        page_size: entries asked for per page of ``ListKeys``, ``ListAliases`` and
            ``ListResourceTags`` (1..1000).

    Raises:
        UnavailableError: ``ListAliases`` or ``ListKeys`` failed (no credentials, no
            permission, endpoint unreachable, throttled beyond the client's retries).
    """
    if not 1 <= page_size <= 1000:
        raise ValueError("page_size must be 1..1000")
    try:
        aliases = _aliases(client, page_size)
        keys = _pages("ListKeys", client.list_keys, "Keys", page_size)
        for entry in keys:
            key_id = entry.get("KeyId")
            if isinstance(key_id, str) and key_id:
                names = tuple(aliases.get(key_id, ()))
                yield _audit_one(client, key_id[:256], names, lint_all, page_size)
    except _ReadFailed as exc:
        raise UnavailableError(f"cannot list the account's keys: {exc}") from None


def _audit_one(
    client: KmsReader, key_id: str, aliases: tuple[str, ...], lint_all: bool, page_size: int
) -> KeyAudit:
    arn: str | None = None
    state: str | None = None
    try:
        metadata = _call("DescribeKey", client.describe_key, KeyId=key_id).get("KeyMetadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        arn = metadata.get("Arn") if isinstance(metadata.get("Arn"), str) else None
        state = metadata.get("KeyState") if isinstance(metadata.get("KeyState"), str) else None
        if metadata.get("KeyManager") == "AWS":
            return KeyAudit(
                key_id=key_id, arn=arn, aliases=aliases, state=state, status="aws-managed",
                marker=None,
            )  # fmt: skip
        text = _call("GetKeyPolicy", client.get_key_policy, KeyId=key_id, PolicyName="default")
        policy_text = text.get("Policy")
        if not isinstance(policy_text, str):
            raise _ReadFailed("GetKeyPolicy: the answer has no Policy")
        marker = enclave_marker(policy_text=policy_text, aliases=aliases)
        if marker is None and not lint_all:
            marker = enclave_marker(policy_text=None, tags=_tags(client, key_id, page_size))
            if marker is None:
                return KeyAudit(
                    key_id=key_id, arn=arn, aliases=aliases, state=state, status="not-enclave",
                    marker=None,
                )  # fmt: skip
    except _ReadFailed as exc:
        return KeyAudit(
            key_id=key_id, arn=arn, aliases=aliases, state=state, status="unreadable",
            marker=None, problem=str(exc),
        )  # fmt: skip
    try:
        findings = lint_policy(parse_policy_json(policy_text.encode("utf-8")))
    except MalformedError as exc:
        return KeyAudit(
            key_id=key_id, arn=arn, aliases=aliases, state=state, status="error",
            marker=marker, problem=f"its policy is not a valid policy: {exc}",
        )  # fmt: skip
    failed = any(f.severity is Severity.ERROR for f in findings)
    return KeyAudit(
        key_id=key_id,
        arn=arn,
        aliases=aliases,
        state=state,
        status="error" if failed else "ok",
        marker=marker,
        findings=findings,
    )
