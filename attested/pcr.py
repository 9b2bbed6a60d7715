"""PCR arithmetic, as the NSM, ``nitro-cli`` and the AWS user guide compute it.

* The NSM extends a PCR with raw data: ``new = SHA384(old || data)``.
* Image measurements (PCR0/1/2 over EIF sections, ``nitro-cli pcr --input``) and PCR8
  (the signing certificate's DER) extend an all-zero PCR with the SHA-384 of the content:
  ``SHA384(zeros48 || SHA384(content))``: :func:`measure`.
* PCR3 (the parent's IAM role ARN) and PCR4 (the parent's instance id) extend an all-zero
  PCR with the raw UTF-8 string, with no inner hash: :func:`from_string`.

A debug-mode enclave reports all-zero PCR0, PCR1 and PCR2.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "PCR_SIZE",
    "ZERO",
    "extend",
    "from_string",
    "is_debug_pcr0",
    "measure",
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
