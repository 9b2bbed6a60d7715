"""Generate a least-privilege KMS key policy for an enclave from its measurements.

The policy has three or four statements:

1. ``KeyAdministration``: the admin role manages the key but holds no cryptographic
   operation and no CreateGrant (a grant is not bound by the PCR conditions).
2. ``EnclaveDescribeKey``: the enclave role may DescribeKey, which carries no
   attestation and so cannot share the attested statement.
3. ``EnclaveAttestedOperations``: the enclave role may run the attested operations only
   with ``StringEqualsIgnoreCase`` on ``kms:RecipientAttestation:ImageSha384`` and
   ``...:PCR<n>``; several measurement sets become lists of accepted values.
4. ``DenyWithoutAttestation`` (optional): everyone is denied those operations when the
   request has no attestation document at all, whatever IAM policies say.

There is no account-root statement: the root principal would let IAM policies grant
Decrypt without attestation. The admin role is therefore the only way to manage the key.

:func:`generate_nitrotpm_policy` writes the same policy for EC2 instances launched from
an Attestable AMI: the instance role in place of the enclave role (``InstanceDescribeKey``,
``InstanceAttestedOperations``) and ``kms:RecipientAttestation:NitroTPMPCR<n>`` conditions:
PCR4 and PCR12 for standard boot, PCR7 for Secure Boot (docs/nitrotpm.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from attested import pcr
from attested._aws import ACCOUNT_ID, IAM_PRINCIPAL_ARN, INSTANCE_ID
from attested.document import Profile
from attested.errors import ConfigurationError, SecurityWarning
from attested.keypolicy._keys import ATTESTED_OPERATIONS, DEBUG_ZEROED_PCRS, IMAGE_KEY, pcr_key
from attested.keypolicy._measurements import MeasurementSet

__all__ = [
    "ADMIN_ACTIONS",
    "DEFAULT_OPERATIONS",
    "DEFAULT_PCRS",
    "NITROTPM_SECURE_BOOT_PCRS",
    "NITROTPM_STANDARD_BOOT_PCRS",
    "generate_nitrotpm_policy",
    "generate_policy",
]

DEFAULT_OPERATIONS = ("kms:Decrypt", "kms:GenerateDataKey")
"""Unsealing and sealing data keys: what most enclave applications need."""

NITROTPM_STANDARD_BOOT_PCRS = (4, 12)
"""NitroTPM PCRs pinned for standard boot: the boot images and the kernel command line."""

NITROTPM_SECURE_BOOT_PCRS = (7,)
"""NitroTPM PCRs pinned for Secure Boot: the Secure Boot policy (your PK, KEK, db)."""

NITROTPM_KEY_PREFIX = "kms:RecipientAttestation:NitroTPMPCR"

DEFAULT_PCRS = (0, 1, 2, 8)
"""Pinned by default when every measurement set has them (PCR8 only for signed images)."""

ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
"""Key management without cryptographic operations or CreateGrant."""

ENCRYPT_ACTIONS = ("kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext")
"""What data producers outside the enclave may do: nothing that returns plaintext."""


def _warn(message: str) -> None:
    warnings.warn(message, SecurityWarning, stacklevel=3)


def _operations(operations: Sequence[str]) -> list[str]:
    by_name = {op.lower(): op for op in ATTESTED_OPERATIONS}
    chosen = set()
    for name in operations:
        full = name if name.lower().startswith("kms:") else f"kms:{name}"
        canonical = by_name.get(full.lower())
        if canonical is None:
            raise ConfigurationError(
                f"{name!r} is not an attested operation: only "
                f"{', '.join(op.removeprefix('kms:') for op in ATTESTED_OPERATIONS)} carry a "
                "Recipient, so PCR conditions on anything else can never be met"
            )
        chosen.add(canonical)
    if not chosen:
        raise ConfigurationError("no operations given")
    if "kms:GenerateRandom" in chosen:
        _warn(
            "GenerateRandom takes no key, so a key policy cannot allow it: grant it in the "
            "enclave role's IAM policy with the same attestation conditions"
        )
    return sorted(chosen)


def _principal(arn: str, *, what: str, account: str, role_only: bool) -> str:
    match = IAM_PRINCIPAL_ARN.fullmatch(arn)
    if match is None or (role_only and match.group(3) != "role"):
        kind = "role" if role_only else "role or user"
        raise ConfigurationError(f"{what} {arn!r:.80} is not an IAM {kind} ARN")
    if match.group(2) != account:
        _warn(f"{what} is in account {match.group(2)}, not the key's account {account}")
    return arn


def _roles(account: str, role: str, admin_role: str, *, what: str) -> tuple[str, str]:
    """Check the account, the role the policy is for (``what``) and the admin role.

    Raises:
        ConfigurationError: a bad account or ARN, or the same role twice.
    """
    if not ACCOUNT_ID.fullmatch(account):
        raise ConfigurationError(f"account {account!r:.40} is not a 12-digit AWS account id")
    checked = _principal(role, what=what, account=account, role_only=True)
    admin = _principal(admin_role, what="admin role", account=account, role_only=False)
    if checked.lower() == admin.lower():
        raise ConfigurationError(
            f"the {what} and the admin role must differ: the admin can rewrite the policy"
        )
    return checked, admin


def _pcr_values(
    measurements: Sequence[MeasurementSet], chosen: Sequence[int]
) -> dict[int, list[bytes]]:
    values: dict[int, list[bytes]] = {}
    for index in chosen:
        for position, measured in enumerate(measurements):
            if index not in measured.pcrs:
                name = measured.source or f"measurement set {position}"
                hint = " (an unsigned image has no PCR8)" if index == 8 else ""
                raise ConfigurationError(f"PCR{index} is not in {name}{hint}")
            value = measured.pcrs[index]
            if value not in values.setdefault(index, []):
                values[index].append(value)
    return values


def _default_pcrs(measurements: Sequence[MeasurementSet]) -> list[int]:
    chosen = []
    for index in DEFAULT_PCRS:
        present = [index in m.pcrs for m in measurements]
        if all(present):
            chosen.append(index)
        elif any(present):
            _warn(
                f"PCR{index} is in some measurement sets but not all, so it is not pinned; "
                "pass pcrs explicitly to decide"
            )
    return chosen


def _check_debug(values: dict[int, list[bytes]], *, allow_debug: bool) -> None:
    zero = sorted(i for i, vs in values.items() if i in DEBUG_ZEROED_PCRS and pcr.ZERO in vs)
    if not zero:
        return
    names = ", ".join(f"PCR{i}" for i in zero)
    if not allow_debug:
        raise ConfigurationError(
            f"{names} all zero: that is a debug-mode enclave, whose memory the parent "
            "instance can read; refusing to admit it (allow_debug=True admits it; on the "
            "command line, --allow-debug)"
        )
    _warn(f"{names} pinned to all zeros: debug-mode enclaves are admitted")


def _condition_value(values: list[bytes]) -> str | list[str]:
    texts = [v.hex() for v in values]
    return texts[0] if len(texts) == 1 else texts


def _pinned_values(
    measurements: Sequence[MeasurementSet],
    *,
    pcrs: Sequence[int] | None,
    role_arn: str | None,
    instance_ids: Sequence[str],
) -> dict[int, list[bytes]]:
    """The accepted values of every pinned PCR, from the sets and the PCR3/PCR4 inputs."""
    if not measurements:
        raise ConfigurationError("no measurements given")
    for position, measured in enumerate(measurements):
        if measured.debug_mode:
            _warn(
                f"{measured.source or f'measurement set {position}'} runs in debug mode: its "
                "attestation carries all-zero PCR0-2, so this policy will not admit it"
            )
    chosen = sorted(set(pcrs)) if pcrs is not None else _default_pcrs(measurements)
    for index in chosen:
        if not 0 <= index <= 31:
            raise ConfigurationError(f"PCR index must be 0..31, got {index}")
    extra: dict[int, list[bytes]] = {}
    if role_arn is not None:
        try:
            extra[3] = [pcr.pcr3_from_role_arn(role_arn)]
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    if instance_ids:
        bad = [i for i in instance_ids if not INSTANCE_ID.fullmatch(i)]
        if bad:
            raise ConfigurationError(f"{bad[0]!r:.40} is not an EC2 instance id (i-...)")
        extra[4] = list(dict.fromkeys(pcr.pcr4_from_instance_id(i) for i in instance_ids))
    values = _pcr_values(measurements, [i for i in chosen if i not in extra])
    for index, given in extra.items():
        if any(index in m.pcrs and m.pcrs[index] not in given for m in measurements):
            raise ConfigurationError(
                f"PCR{index} differs between the measurements and "
                f"{'role_arn' if index == 3 else 'instance_ids'}"
            )
        values[index] = given
    if not values:
        raise ConfigurationError("nothing to pin: no PCR selected")
    return values


def _statements(
    *,
    admin: str,
    enclave: str,
    actions: list[str],
    condition: dict[str, str | list[str]] | list[dict[str, str | list[str]]],
    producers: list[str],
    deny_without_attestation: bool,
    who: str = "Enclave",
    presence_key: str = IMAGE_KEY,
) -> list[dict[str, Any]]:
    """The policy's statements, in the order docs/keypolicy.md describes them.

    ``condition`` may be a list: one attested statement per item (numbered Sids).
    """
    conditions = condition if isinstance(condition, list) else [condition]
    attested = [
        {
            "Sid": f"{who}AttestedOperations" + (str(n + 1) if n else ""),
            "Effect": "Allow",
            "Principal": {"AWS": enclave},
            "Action": actions,
            "Resource": "*",
            "Condition": {"StringEqualsIgnoreCase": item},
        }
        for n, item in enumerate(conditions)
    ]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "KeyAdministration",
            "Effect": "Allow",
            "Principal": {"AWS": admin},
            "Action": list(ADMIN_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": f"{who}DescribeKey",
            "Effect": "Allow",
            "Principal": {"AWS": enclave},
            "Action": "kms:DescribeKey",
            "Resource": "*",
        },
        *attested,
    ]
    if producers:
        statements.append(
            {
                "Sid": "EncryptOnly",
                "Effect": "Allow",
                "Principal": {"AWS": producers[0] if len(producers) == 1 else producers},
                "Action": list(ENCRYPT_ACTIONS),
                "Resource": "*",
            }
        )
    if deny_without_attestation:
        statements.append(
            {
                "Sid": "DenyWithoutAttestation",
                "Effect": "Deny",
                "Principal": "*",
                "Action": actions,
                "Resource": "*",
                "Condition": {"Null": {presence_key: "true"}},
            }
        )
    return statements


def generate_policy(
    *,
    account: str,
    enclave_role: str,
    admin_role: str,
    measurements: Sequence[MeasurementSet],
    operations: Sequence[str] = DEFAULT_OPERATIONS,
    pcrs: Sequence[int] | None = None,
    role_arn: str | None = None,
    instance_ids: Sequence[str] = (),
    encryptors: Sequence[str] = (),
    deny_without_attestation: bool = False,
    allow_debug: bool = False,
) -> dict[str, Any]:
    """Build a key policy that lets only the measured enclave images use the key.

    Args:
        account: the 12-digit account that owns the key.
        enclave_role: ARN of the parent instance's IAM role (the enclave's credentials).
        admin_role: ARN of the role (or user) that administers the key.
        measurements: one or more measurement sets; several (old and new image during a
            rollout) become lists of accepted values. Values combine across sets per
            key, which is harmless while PCR0 is pinned (PCR0 covers PCR1 and PCR2).
        operations: attested operations to allow (``"Decrypt"`` or ``"kms:Decrypt"``).
        pcrs: PCR indexes to pin; by default those of 0, 1, 2 and 8 present in every
            set. PCR0 is pinned through both ``ImageSha384`` and ``PCR0``.
        role_arn: pin PCR3 to this IAM role ARN of the parent instance.
        instance_ids: pin PCR4 to these parent instance ids.
        encryptors: principals (data producers outside the enclave) that may encrypt to
            the key: ``kms:Encrypt`` and ``kms:GenerateDataKeyWithoutPlaintext`` only,
            which never return plaintext and carry no attestation. Never ReEncrypt,
            which decrypts on the caller's behalf.
        deny_without_attestation: add an explicit Deny of the operations, for every
            principal, when the request carries no attestation document.
        allow_debug: Danger: accept all-zero PCR0/1/2/8, the values of a debug-mode
            enclave, whose memory the parent instance can read.

    Returns:
        The policy as a JSON-ready ``dict``; render it with
        :func:`attested.keypolicy.render_policy`.

    Raises:
        ConfigurationError: invalid account or ARNs, an operation that carries no
            attestation, a PCR missing from a set, nothing to pin, or all-zero PCRs
            without ``allow_debug``.

    Warnings:
        SecurityWarning: PCR0 is not pinned; PCRs present in only some sets; debug
        values allowed; a measurement set from a debug-mode enclave; GenerateRandom
        requested; principals from another account.
    """
    enclave, admin = _roles(account, enclave_role, admin_role, what="enclave role")
    actions = _operations(operations)
    producers = [
        _principal(arn, what="encryptor", account=account, role_only=False) for arn in encryptors
    ]
    values = _pinned_values(measurements, pcrs=pcrs, role_arn=role_arn, instance_ids=instance_ids)
    _check_debug(values, allow_debug=allow_debug)
    if 0 not in values:
        _warn(
            "neither ImageSha384 nor PCR0 is pinned: any enclave image matching the other "
            "PCRs is admitted"
            + (" (values also combine across measurement sets)" if len(measurements) > 1 else "")
        )
    condition: dict[str, str | list[str]] = {}
    for index in sorted(values):
        if index == 0:
            condition[IMAGE_KEY] = _condition_value(values[0])
        condition[pcr_key(index)] = _condition_value(values[index])
    statements = _statements(
        admin=admin,
        enclave=enclave,
        actions=actions,
        condition=condition,
        producers=producers,
        deny_without_attestation=deny_without_attestation,
    )
    return {"Version": "2012-10-17", "Statement": statements}


def _nitrotpm_sets(measurements: Sequence[MeasurementSet]) -> None:
    if not measurements:
        raise ConfigurationError("no measurements given")
    for position, measured in enumerate(measurements):
        if measured.profile is not Profile.NITROTPM:
            name = measured.source or f"measurement set {position}"
            raise ConfigurationError(
                f"{name} holds an enclave image's measurements, not an AMI's: a NitroTPM "
                "key policy pins the PCRs of tpm_pcr.json (nitro-tpm-pcr-compute)"
            )


def _standard_boot_conditions(
    measurements: Sequence[MeasurementSet],
) -> list[dict[str, str | list[str]]]:
    """PCR4 and PCR12, one statement per distinct PCR12 so no pair crosses sets."""
    by_command_line: dict[bytes, list[bytes]] = {}
    for position, measured in enumerate(measurements):
        name = measured.source or f"measurement set {position}"
        for index in NITROTPM_STANDARD_BOOT_PCRS:
            if index not in measured.pcrs:
                raise ConfigurationError(
                    f"PCR{index} is not in {name}; standard boot pins PCR4 (the boot images) "
                    "with PCR12 (the kernel command line), since a policy without PCR12 "
                    "admits the image with a tampered command line (GHSA-xrv8-2pf5-f3q7)"
                )
        images = by_command_line.setdefault(measured.pcrs[12], [])
        if measured.pcrs[4] not in images:
            images.append(measured.pcrs[4])
    return [
        {
            f"{NITROTPM_KEY_PREFIX}4": _condition_value(images),
            f"{NITROTPM_KEY_PREFIX}12": _condition_value([command_line]),
        }
        for command_line, images in by_command_line.items()
    ]


def _secure_boot_condition(measurements: Sequence[MeasurementSet]) -> dict[str, str | list[str]]:
    values: list[bytes] = []
    for position, measured in enumerate(measurements):
        name = measured.source or f"measurement set {position}"
        value = measured.pcrs.get(7)
        if value is None:
            raise ConfigurationError(f"PCR7 is not in {name}; Secure Boot pins PCR7")
        if value == pcr.NITROTPM_PCR7_SECURE_BOOT_OFF:
            raise ConfigurationError(
                f"PCR7 in {name} is the value of an instance booted without Secure Boot "
                "(attested.pcr.NITROTPM_PCR7_SECURE_BOOT_OFF): every AMI booted without "
                "Secure Boot has it, so pinning it would admit any AMI. Build the AMI with "
                "Secure Boot (your PK, KEK and db), or pin standard boot (PCR4 and PCR12, "
                "without --secure-boot)"
            )
        if value not in values:
            values.append(value)
    return {f"{NITROTPM_KEY_PREFIX}7": _condition_value(values)}


def generate_nitrotpm_policy(
    *,
    account: str,
    instance_role: str,
    admin_role: str,
    measurements: Sequence[MeasurementSet],
    operations: Sequence[str] = DEFAULT_OPERATIONS,
    secure_boot: bool = False,
    encryptors: Sequence[str] = (),
    deny_without_attestation: bool = False,
) -> dict[str, Any]:
    """Build a key policy that lets only instances of the measured AMIs use the key.

    The statements are the enclave policy's (:func:`generate_policy`) with the instance
    role for the enclave role and NitroTPM conditions, ``StringEqualsIgnoreCase`` as in
    AWS's examples:

    * standard boot (the default): ``NitroTPMPCR4`` (the boot images) with
      ``NitroTPMPCR12`` (the kernel command line; without it a policy admits the image
      booted with a tampered command line, GHSA-xrv8-2pf5-f3q7). Several AMIs become
      lists of PCR4 values; AMIs whose PCR12 differ get one statement each, so no AMI is
      admitted with another's command line.
    * ``secure_boot``: ``NitroTPMPCR7`` (the Secure Boot policy), which stays the same
      across AMIs signed by the same db key.

    Args:
        account: the 12-digit account that owns the key.
        instance_role: ARN of the instances' IAM role (their instance profile's role).
        admin_role: ARN of the role (or user) that administers the key.
        measurements: one or more sets read from ``tpm_pcr.json`` with
            ``Profile.NITROTPM`` (several during a rollout).
        operations: attested operations to allow.
        secure_boot: pin PCR7 instead of PCR4 and PCR12.
        encryptors: principals that may encrypt to the key without attestation
            (``kms:Encrypt`` and ``kms:GenerateDataKeyWithoutPlaintext`` only).
        deny_without_attestation: add an explicit Deny of the operations, for every
            principal, when the request carries no NitroTPM document.

    Returns:
        The policy as a JSON-ready ``dict``.

    Raises:
        ConfigurationError: invalid account or ARNs, an operation that carries no
            attestation, an enclave measurement set, a set without the PCRs to pin, or
            (with ``secure_boot``) a PCR7 equal to the Secure-Boot-off constant.

    Warnings:
        SecurityWarning: GenerateRandom requested; principals from another account.
    """
    instance, admin = _roles(account, instance_role, admin_role, what="instance role")
    actions = _operations(operations)
    producers = [
        _principal(arn, what="encryptor", account=account, role_only=False) for arn in encryptors
    ]
    _nitrotpm_sets(measurements)
    if secure_boot:
        conditions = [_secure_boot_condition(measurements)]
        presence = f"{NITROTPM_KEY_PREFIX}{NITROTPM_SECURE_BOOT_PCRS[0]}"
    else:
        conditions = _standard_boot_conditions(measurements)
        presence = f"{NITROTPM_KEY_PREFIX}{NITROTPM_STANDARD_BOOT_PCRS[0]}"
    statements = _statements(
        admin=admin,
        enclave=instance,
        actions=actions,
        condition=conditions,
        producers=producers,
        deny_without_attestation=deny_without_attestation,
        who="Instance",
        presence_key=presence,
    )
    return {"Version": "2012-10-17", "Statement": statements}
