"""Key administration: keys, aliases, key policies, states, tags, rotation settings.

Each handler takes (service, validated parameters, caller, time) and returns the answer's
members. Operations KMS authorizes with IAM alone (CreateKey, ListKeys, ListAliases,
ListRetirableGrants) are allowed to every authenticated identity (ADR 0051); the others
decide the key policy of the key they name.

Some operations answer what AWS answers for every key this emulator can hold: its keys
all have ``Origin`` ``AWS_KMS`` (so importing key material is refused as AWS refuses it)
and none is multi-Region (so ReplicateKey is refused). Grants do not exist here: the
listing operations answer empty lists, and creating one is ``UnsupportedOperationException``
(see ``_service``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from attested.emulator import _keys
from attested.emulator._keys import KeyRecord, KeyState
from attested.emulator._sigv4 import Caller
from attested.emulator._store import AliasRecord
from attested.keypolicy._evaluate import default_key_policy, parse_key_policy
from attested.kms._wire import ApiError, Json

if TYPE_CHECKING:
    from attested.emulator._service import Handler, KmsService

__all__ = ["HANDLERS", "MAX_TAGS"]

logger = logging.getLogger(__name__)

MAX_TAGS = 50
"""KMS's limit of tags on one key."""

_DEFAULT_ROTATION_DAYS = 365
_ALIAS_PREFIX = (
    'Alias must start with the prefix "alias/". Please see '
    "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
)


def _check_create_options(p: Mapping[str, Any]) -> None:
    for name in ("CustomKeyStoreId", "XksKeyId"):
        if name in p:
            raise ApiError(
                "UnsupportedOperationException", f"The KMS emulator does not emulate {name}"
            )
    if p.get("Origin", "AWS_KMS") != "AWS_KMS":
        raise ApiError(
            "UnsupportedOperationException", "The KMS emulator supports only Origin AWS_KMS"
        )
    if p.get("MultiRegion"):
        raise ApiError(
            "UnsupportedOperationException",
            "The KMS emulator does not emulate multi-Region keys",
        )
    if "KeySpec" in p and "CustomerMasterKeySpec" in p:
        raise ApiError("ValidationException", "Specify KeySpec or CustomerMasterKeySpec, not both")


def _spec_and_usage(p: Mapping[str, Any]) -> tuple[str, str]:
    spec = p.get("KeySpec") or p.get("CustomerMasterKeySpec") or _keys.SYMMETRIC_DEFAULT
    if "KeyUsage" not in p and spec != _keys.SYMMETRIC_DEFAULT:
        raise ApiError(
            "ValidationException",
            "You must specify a KeyUsage value for all KMS keys except for symmetric "
            "encryption keys.",
        )
    usage = p.get("KeyUsage", _keys.ENCRYPT_DECRYPT)
    problem = _keys.check_spec_usage(spec, usage)
    if problem is not None:
        kind, _, message = problem.partition(": ")
        code = "UnsupportedOperationException" if kind == "unsupported" else "ValidationException"
        raise ApiError(code, message)
    return spec, usage


def _create_key(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _check_create_options(p)
    spec, usage = _spec_and_usage(p)
    tags = _merge_tags((), p.get("Tags", []))
    key_id = str(uuid.uuid4())
    arn = svc.key_arn(key_id)
    text = p.get("Policy")
    if text is None:
        text = default_key_policy(svc.account_id, partition=svc.partition)
        policy = parse_key_policy(text)
    else:
        policy = svc.parse_policy(text, caller, arn, bool(p.get("BypassPolicyLockoutSafetyCheck")))
    record = KeyRecord(
        key_id=key_id,
        arn=arn,
        created=now,
        description=p.get("Description", ""),
        key_spec=spec,
        key_usage=usage,
        state=KeyState.ENABLED,
        deletion_date=None,
        pending_window_days=None,
        policy_text=text,
        policy=policy,
        material=_keys.generate_material(spec),
        material_id=os.urandom(32).hex(),
        tags=tags,
    )
    svc.store.put_key(record)
    logger.info("created key %s (%s, %s) for %s", arn, spec, usage, caller.arn)
    return {"KeyMetadata": svc.metadata(record)}


def _describe_key(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now)
    svc.authorize(caller, "kms:DescribeKey", record)
    return {"KeyMetadata": svc.metadata(record)}


def _list_keys(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    keys = [k for k in svc.store.all_keys() if svc.live(k.key_id, now) is not None]
    page, extra = svc.page(keys, p)
    return {"Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page], **extra}


def _change(
    svc: KmsService,
    p: Mapping[str, Any],
    caller: Caller,
    now: datetime,
    action: str,
    update: Callable[[KeyRecord], Mapping[str, Any]],
    *,
    usable: bool = False,
) -> KeyRecord:
    """Authorize ``action`` on the key ``KeyId`` names and store it changed by ``update``.

    The key must not be pending deletion (nor disabled, when ``usable``); ``update`` gets
    the key after these checks and returns the fields to change (or raises).
    """
    with svc.store.lock:
        record = svc.resolve(p["KeyId"], now, aliases=False)
        svc.authorize(caller, action, record)
        if usable:
            svc.usable(record)
        svc.not_pending(record)
        changed = dataclasses.replace(record, **update(record))
        if changed != record:
            svc.store.put_key(changed)
    return changed


def _update_key_description(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _change(
        svc, p, caller, now, "kms:UpdateKeyDescription", lambda _: {"description": p["Description"]}
    )
    return {}


def _enable_key(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _change(svc, p, caller, now, "kms:EnableKey", lambda _: {"state": KeyState.ENABLED})
    return {}


def _disable_key(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _change(svc, p, caller, now, "kms:DisableKey", lambda _: {"state": KeyState.DISABLED})
    return {}


def _schedule_key_deletion(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    days = p.get("PendingWindowInDays", 30)
    if not 7 <= days <= 30:
        raise ApiError(
            "ValidationException",
            f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed "
            "to satisfy constraint: Member must have value between 7 and 30 (inclusive)",
        )
    record = _change(
        svc,
        p,
        caller,
        now,
        "kms:ScheduleKeyDeletion",
        lambda _: {
            "state": KeyState.PENDING_DELETION,
            "deletion_date": now + timedelta(days=days),
            "pending_window_days": days,
        },
    )
    logger.info("key %s scheduled for deletion on %s", record.arn, record.deletion_date)
    return {
        "KeyId": record.arn,
        "DeletionDate": record.deletion_date,
        "KeyState": record.state,
        "PendingWindowInDays": days,
    }


def _cancel_key_deletion(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    with svc.store.lock:
        record = svc.resolve(p["KeyId"], now, aliases=False)
        svc.authorize(caller, "kms:CancelKeyDeletion", record)
        if record.state != KeyState.PENDING_DELETION:
            raise ApiError("KMSInvalidStateException", f"{record.arn} is not pending deletion.")
        record = dataclasses.replace(
            record, state=KeyState.DISABLED, deletion_date=None, pending_window_days=None
        )
        svc.store.put_key(record)
    return {"KeyId": record.arn}


def _check_alias_name(name: str) -> None:
    if not name.startswith("alias/"):
        raise ApiError("ValidationException", _ALIAS_PREFIX)
    if name == "alias/":
        raise ApiError("InvalidAliasNameException", "The alias name is empty after alias/")
    if name.startswith("alias/aws/"):
        raise ApiError(
            "InvalidAliasNameException", "Alias names starting with alias/aws/ are reserved"
        )


def _create_alias(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    name = p["AliasName"]
    _check_alias_name(name)
    record = svc.resolve(p["TargetKeyId"], now, aliases=False)
    svc.authorize(caller, "kms:CreateAlias", record)
    svc.not_pending(record)
    with svc.store.lock:
        existing = svc.store.get_alias(name)
        if existing is not None and svc.live(existing.key_id, now) is not None:
            raise ApiError(
                "AlreadyExistsException",
                f"An alias with the name {svc.alias_arn(name)} already exists",
            )
        svc.store.put_alias(AliasRecord(name=name, key_id=record.key_id, created=now, updated=now))
    return {}


def _key_type(record: KeyRecord) -> tuple[str, str]:
    kind = "symmetric" if record.symmetric else "asymmetric" if record.asymmetric else "HMAC"
    return kind, record.key_usage


def _update_alias(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    name = p["AliasName"]
    _check_alias_name(name)
    with svc.store.lock:
        current = svc.resolve(name, now)
        target = svc.resolve(p["TargetKeyId"], now, aliases=False)
        svc.authorize(caller, "kms:UpdateAlias", current)
        svc.authorize(caller, "kms:UpdateAlias", target)
        svc.not_pending(target)
        if _key_type(current) != _key_type(target):
            raise ApiError(
                "ValidationException",
                f"{target.arn} cannot replace {current.arn} as the target of {name}: the keys "
                "must be of the same type (symmetric, asymmetric or HMAC) and key usage",
            )
        alias = svc.store.get_alias(name)
        assert alias is not None  # noqa: S101 - resolved above, under the lock
        svc.store.put_alias(dataclasses.replace(alias, key_id=target.key_id, updated=now))
    return {}


def _delete_alias(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    name = p["AliasName"]
    _check_alias_name(name)
    with svc.store.lock:
        record = svc.resolve(name, now)
        svc.authorize(caller, "kms:DeleteAlias", record)
        svc.store.delete_alias(name)
    return {}


def _list_aliases(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    wanted = None
    if "KeyId" in p:
        wanted = svc.resolve(p["KeyId"], now, aliases=False).key_id
    aliases = [
        a
        for a in svc.store.all_aliases()
        if (wanted is None or a.key_id == wanted) and svc.live(a.key_id, now) is not None
    ]
    page, extra = svc.page(aliases, p)
    entries = [
        {
            "AliasName": a.name,
            "AliasArn": svc.alias_arn(a.name),
            "TargetKeyId": a.key_id,
            "CreationDate": a.created,
            "LastUpdatedDate": a.updated,
        }
        for a in page
    ]
    return {"Aliases": entries, **extra}


def _policy_name(p: Mapping[str, Any]) -> str:
    name: str = p.get("PolicyName", "default")
    if name != "default":
        raise ApiError("NotFoundException", f"No such policy exists: {name[:128]}")
    return name


def _get_key_policy(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    name = _policy_name(p)
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:GetKeyPolicy", record)
    return {"Policy": record.policy_text, "PolicyName": name}


def _put_key_policy(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _policy_name(p)
    with svc.store.lock:
        record = svc.resolve(p["KeyId"], now, aliases=False)
        svc.authorize(caller, "kms:PutKeyPolicy", record)
        svc.not_pending(record)
        policy = svc.parse_policy(
            p["Policy"], caller, record.arn, bool(p.get("BypassPolicyLockoutSafetyCheck"))
        )
        svc.store.put_key(dataclasses.replace(record, policy_text=p["Policy"], policy=policy))
    logger.info("policy of %s replaced by %s", record.arn, caller.arn)
    return {}


def _list_key_policies(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:ListKeyPolicies", record)
    page, extra = svc.page(["default"], p)
    return {"PolicyNames": page, **extra}


def _merge_tags(
    current: tuple[tuple[str, str], ...], new: list[Mapping[str, str]]
) -> tuple[tuple[str, str], ...]:
    """``current`` with ``new`` set (replacing values of existing keys), checked as KMS does.

    Raises:
        ApiError: ``TagException``: a reserved ``aws:`` key, a key given twice, or more than
            :data:`MAX_TAGS` tags in all.
    """
    keys = [tag["TagKey"] for tag in new]
    if any(key.lower().startswith("aws:") for key in keys):
        raise ApiError("TagException", "Tags beginning with aws: are reserved")
    if len(set(keys)) != len(keys):
        raise ApiError("TagException", "Duplicate tag keys")
    merged = dict(current)
    merged.update((tag["TagKey"], tag["TagValue"]) for tag in new)
    if len(merged) > MAX_TAGS:
        raise ApiError("TagException", "Too many tags")
    return tuple(merged.items())


def _tag_resource(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _change(
        svc, p, caller, now, "kms:TagResource", lambda r: {"tags": _merge_tags(r.tags, p["Tags"])}
    )
    return {}


def _untag_resource(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    removed = set(p["TagKeys"])
    _change(
        svc,
        p,
        caller,
        now,
        "kms:UntagResource",
        lambda r: {"tags": tuple(tag for tag in r.tags if tag[0] not in removed)},
    )
    return {}


def _list_resource_tags(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:ListResourceTags", record)
    page, extra = svc.page(list(record.tags), p)
    return {"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **extra}


def _rotatable(record: KeyRecord, message: str | None = None) -> None:
    if not record.symmetric:
        raise ApiError(
            "UnsupportedOperationException",
            f"{record.arn} does not support key rotation: only symmetric encryption keys rotate"
            if message is None
            else message,
        )


def _rotation_setting(days: int | None) -> Callable[[KeyRecord], Mapping[str, Any]]:
    def update(record: KeyRecord) -> Mapping[str, Any]:
        _rotatable(record)
        return {"rotation_period_days": days}

    return update


def _enable_key_rotation(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    days = p.get("RotationPeriodInDays", _DEFAULT_ROTATION_DAYS)
    _change(svc, p, caller, now, "kms:EnableKeyRotation", _rotation_setting(days), usable=True)
    return {}


def _disable_key_rotation(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    _change(svc, p, caller, now, "kms:DisableKeyRotation", _rotation_setting(None), usable=True)
    return {}


def _get_key_rotation_status(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:GetKeyRotationStatus", record)
    _rotatable(record)
    # KMS: a key pending deletion reports false; cancelling the deletion restores it.
    enabled = record.rotation_period_days is not None and record.state != (
        KeyState.PENDING_DELETION
    )
    result: dict[str, Any] = {"KeyRotationEnabled": enabled, "KeyId": record.arn}
    if enabled:
        result["RotationPeriodInDays"] = record.rotation_period_days
    return result


def _list_key_rotations(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:ListKeyRotations", record)
    _rotatable(record)
    page, extra = svc.page([], p)  # the emulator never rotates key material
    return {"Rotations": page, **extra}


def _rotate_key_on_demand(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:RotateKeyOnDemand", record)
    svc.usable(record)
    _rotatable(record, message="")  # AWS answers an empty message here
    raise ApiError(
        "UnsupportedOperationException",
        "RotateKeyOnDemand: the KMS emulator does not rotate key material",
    )


# --- grants, imported key material, replicas: what AWS answers for our keys ------------


def _list_grants(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now, aliases=False)
    svc.authorize(caller, "kms:ListGrants", record)
    return {"Grants": [], "Truncated": False}  # no grant can exist here


def _list_retirable_grants(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    return {"Grants": [], "Truncated": False}


def _refuse_for_key(action: str, message: str) -> Handler:
    def refuse(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
        record = svc.resolve(p["KeyId"], now, aliases=False)
        svc.authorize(caller, action, record)
        raise ApiError("UnsupportedOperationException", message.format(arn=record.arn))

    return refuse


_NOT_EXTERNAL = "{arn} origin is AWS_KMS which is not valid for this operation."

HANDLERS: dict[str, Handler] = {
    "CancelKeyDeletion": _cancel_key_deletion,
    "CreateAlias": _create_alias,
    "CreateKey": _create_key,
    "DeleteAlias": _delete_alias,
    "DeleteImportedKeyMaterial": _refuse_for_key("kms:DeleteImportedKeyMaterial", _NOT_EXTERNAL),
    "DescribeKey": _describe_key,
    "DisableKey": _disable_key,
    "DisableKeyRotation": _disable_key_rotation,
    "EnableKey": _enable_key,
    "EnableKeyRotation": _enable_key_rotation,
    "GetKeyPolicy": _get_key_policy,
    "GetKeyRotationStatus": _get_key_rotation_status,
    "GetParametersForImport": _refuse_for_key("kms:GetParametersForImport", _NOT_EXTERNAL),
    "ImportKeyMaterial": _refuse_for_key("kms:ImportKeyMaterial", _NOT_EXTERNAL),
    "ListAliases": _list_aliases,
    "ListGrants": _list_grants,
    "ListKeyPolicies": _list_key_policies,
    "ListKeyRotations": _list_key_rotations,
    "ListKeys": _list_keys,
    "ListResourceTags": _list_resource_tags,
    "ListRetirableGrants": _list_retirable_grants,
    "PutKeyPolicy": _put_key_policy,
    "ReplicateKey": _refuse_for_key("kms:ReplicateKey", "{arn} is not a multi-region primary key."),
    "RotateKeyOnDemand": _rotate_key_on_demand,
    "ScheduleKeyDeletion": _schedule_key_deletion,
    "TagResource": _tag_resource,
    "UntagResource": _untag_resource,
    "UpdateAlias": _update_alias,
    "UpdateKeyDescription": _update_key_description,
}
"""The key administration operations by name."""
