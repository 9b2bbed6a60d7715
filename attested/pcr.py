"""PCR arithmetic, as the NSM, ``nitro-cli`` and the AWS user guide compute it.

* The NSM extends a PCR with raw data: ``new = SHA384(old || data)``.
* Image measurements (PCR0/1/2 over EIF sections, ``nitro-cli pcr --input``) and PCR8
  (the signing certificate's DER) extend an all-zero PCR with the SHA-384 of the content:
  ``SHA384(zeros48 || SHA384(content))``: :func:`measure`.
* PCR3 (the parent's IAM role ARN) and PCR4 (the parent's instance id) extend an all-zero
  PCR with the raw UTF-8 string, with no inner hash: :func:`from_string`.

A debug-mode enclave reports all-zero PCR0, PCR1 and PCR2.

NitroTPM (EC2 instances, docs/nitrotpm.md) measures with the same SHA-384 extend, as the
TCG PC Client firmware profile says: :func:`nitrotpm_pcr7` computes the Secure Boot policy
PCR as ``nitro-tpm-pcr-compute`` does, and :data:`NITROTPM_PCR7_SECURE_BOOT_OFF` is its
value for an instance booted without Secure Boot (checked against real documents).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

__all__ = [
    "NITROTPM_PCR7_SECURE_BOOT_OFF",
    "PCR_SIZE",
    "ZERO",
    "extend",
    "from_string",
    "is_debug_pcr0",
    "measure",
    "nitrotpm_pcr7",
    "pcr3_from_role_arn",
    "pcr4_from_instance_id",
    "pcr8_from_certificate",
]

PCR_SIZE = 48
ZERO = bytes(PCR_SIZE)
"""An all-zero SHA-384 PCR, the value of every PCR before its first extension."""


def extend(pcr: bytes, data: bytes) -> bytes:
    """Extend ``pcr`` with raw ``data``: ``SHA384(pcr || data)``, as the NSM does."""
    if len(pcr) != PCR_SIZE:
        raise ValueError(f"a SHA-384 PCR is {PCR_SIZE} bytes, got {len(pcr)}")
    return hashlib.sha384(pcr + data).digest()


def measure(content: bytes) -> bytes:
    """The PCR value for measured content: ``SHA384(zeros48 || SHA384(content))``."""
    return extend(ZERO, hashlib.sha384(content).digest())


def from_string(text: str) -> bytes:
    """The PCR value for a string extended raw: ``SHA384(zeros48 || utf8(text))``."""
    return extend(ZERO, text.encode("utf-8"))


def pcr3_from_role_arn(role_arn: str) -> bytes:
    """PCR3: the IAM role ARN of the parent instance's instance profile role.

    Use the role ARN (``arn:aws:iam::ACCOUNT:role/[path/]NAME``), not the instance
    profile ARN nor an ``sts assumed-role`` ARN.
    """
    if not role_arn.startswith("arn:") or ":role/" not in role_arn:
        raise ValueError(f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return from_string(role_arn)


def pcr4_from_instance_id(instance_id: str) -> bytes:
    """PCR4: the parent instance's id (``i-...``)."""
    if not instance_id.startswith("i-"):
        raise ValueError(f"{instance_id!r} is not an EC2 instance id (i-...)")
    return from_string(instance_id)


def pcr8_from_certificate(certificate_der: bytes) -> bytes:
    """PCR8: the EIF signing certificate, measured over its DER encoding."""
    return measure(certificate_der)


def is_debug_pcr0(pcr0: bytes) -> bool:
    """Whether a PCR0 value is the all-zero value of a debug-mode enclave."""
    return not any(pcr0)


_EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
_EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")


def _uefi_variable(guid: uuid.UUID, name: str, data: bytes) -> bytes:
    """The digest of a UEFI_VARIABLE_DATA event (TCG PC Client firmware profile)."""
    return hashlib.sha384(
        guid.bytes_le
        + len(name).to_bytes(8, "little")
        + len(data).to_bytes(8, "little")
        + name.encode("utf-16-le")
        + data
    ).digest()


def nitrotpm_pcr7(
    *,
    pk: bytes = b"",
    kek: bytes = b"",
    db: bytes = b"",
    dbx: bytes = b"",
    authorities: Sequence[bytes] = (),
) -> bytes:
    """NitroTPM PCR7 (Secure Boot policy) for the given UEFI variables.

    The same events as AWS's ``nitro-tpm-pcr-compute`` 1.1 (TCG PC Client PCR[7]): the
    ``SecureBoot``, ``PK``, ``KEK``, ``db`` and ``dbx`` variables, a separator, then with
    Secure Boot on each ``db`` entry that verified a boot image. As in that tool, Secure
    Boot is on exactly when a platform key is set (UEFI leaves setup mode).

    Args:
        pk: the PK variable (an EFI signature list), empty for none.
        kek: the KEK variable.
        db: the db variable.
        dbx: the dbx variable.
        authorities: the EFI_SIGNATURE_DATA (owner GUID then the certificate) of each db
            entry that verified an image, in boot order, each once; Secure Boot only.

    Returns:
        The 48-byte PCR7 value.

    Raises:
        ValueError: ``authorities`` given without a platform key.
    """
    secure_boot = bool(pk)
    if authorities and not secure_boot:
        raise ValueError("authorities are measured only with Secure Boot on (a PK set)")
    pcr = ZERO
    for guid, name, data in (
        (_EFI_GLOBAL_VARIABLE, "SecureBoot", bytes([secure_boot])),
        (_EFI_GLOBAL_VARIABLE, "PK", pk),
        (_EFI_GLOBAL_VARIABLE, "KEK", kek),
        (_EFI_IMAGE_SECURITY_DATABASE, "db", db),
        (_EFI_IMAGE_SECURITY_DATABASE, "dbx", dbx),
    ):
        pcr = extend(pcr, _uefi_variable(guid, name, data))
    pcr = extend(pcr, hashlib.sha384(bytes(4)).digest())  # EV_SEPARATOR
    for authority in authorities:
        pcr = extend(pcr, _uefi_variable(_EFI_IMAGE_SECURITY_DATABASE, "db", authority))
    return pcr


NITROTPM_PCR7_SECURE_BOOT_OFF = nitrotpm_pcr7()
"""NitroTPM PCR7 of an instance booted without Secure Boot (empty PK, KEK, db, dbx).

Every such instance has this value, whatever AMI it runs, so a key policy or a
:class:`~attested.policy.Policy` that pins it identifies no AMI.
"""
