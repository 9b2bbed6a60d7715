"""A simulated Nitro Secure Module with the same interface as :class:`nsm.NsmDevice`.

**Danger**: a simulated document proves nothing about any enclave. It is signed by a
root generated on this machine, and anyone who can read that root's key can make one
with any PCRs. Verifiers pinned to the AWS Nitro root refuse it, as they must. Use it
to develop and test code that asks for, or checks, attestation documents; never
configure a production relying party or KMS key policy to trust its root.

What is simulated faithfully: 32 SHA-384 PCRs, 0-15 locked from the start; extension
as ``SHA384(old || data)``; the NSM's errors (``InvalidIndex`` for an index >= 32,
``ReadOnlyIndex`` for a locked PCR); documents laid out like the NSM's (untagged
COSE_Sign1, ES384, payload keys in the real order, null for absent fields, every
locked PCR), signed by a P-384 chain shaped like AWS's (root, regional, zonal,
instance, leaf) with a 3-hour leaf that is reused and renewed shortly before it
expires, and CAs renewed well before they expire.

What is not: the hardware, the hypervisor's isolation, and the link between PCR3/PCR4
and a real parent instance. The module id always ends in ``-simulated``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime

from attested import pcr
from attested.simulator._module import SimulatedModule
from nsm import _checks
from nsm.errors import InvalidIndex, ReadOnlyIndex
from nsm.types import Description, Digest, PcrInfo

__all__ = ["DEFAULT_IMAGE_PCRS", "DEFAULT_INSTANCE_ID", "SimulatedNsm"]

_log = logging.getLogger(__name__)

DEFAULT_INSTANCE_ID = "i-0simulated0000000"
PCR_COUNT = 32
LOCKED_AT_START = 16
DEFAULT_IMAGE_PCRS = tuple(
    pcr.measure(f"attested simulated enclave image, PCR{i}".encode()) for i in range(3)
)
"""PCR0-2 when none are given: fixed, non-zero (all-zero would mean a debug-mode enclave)."""


def _initial_pcrs(
    pcrs: Mapping[int, bytes] | None, role_arn: str | None, instance_id: str | None
) -> tuple[str, list[bytes]]:
    values = [pcr.ZERO] * PCR_COUNT
    values[0:3] = DEFAULT_IMAGE_PCRS
    given: dict[object, object] = {key: value for key, value in (pcrs or {}).items()}
    for index, value in given.items():
        if not isinstance(index, int) or not 0 <= index < LOCKED_AT_START:
            raise ValueError(f"initial PCR values are for PCRs 0-15 (locked at start), not {index}")
        if not isinstance(value, bytes) or len(value) != pcr.PCR_SIZE:
            raise ValueError(f"PCR{index} must be {pcr.PCR_SIZE} bytes")
        values[index] = value
    if role_arn is not None:
        if 3 in given:
            raise ValueError("give PCR3 either as a value or as role_arn, not both")
        values[3] = pcr.pcr3_from_role_arn(role_arn)
    if instance_id is not None and 4 in given:
        raise ValueError("give PCR4 either as a value or as instance_id, not both")
    instance = instance_id or DEFAULT_INSTANCE_ID
    if 4 not in given:
        values[4] = pcr.pcr4_from_instance_id(instance)
    return instance, values


class SimulatedNsm(SimulatedModule):
    """A simulated NSM: :class:`nsm.NsmDevice`'s interface, documents from a test PKI.

    Every instance logs a warning when it starts. Read the module docstring's danger
    note before using one.

    Args:
        pcrs: values for PCRs 0-15 (48 bytes each). Unspecified ones are zero, except
            PCR0-2 (:data:`DEFAULT_IMAGE_PCRS`, so that the default does not look like a
            debug-mode enclave) and PCR4, derived from the instance id as on hardware.
        role_arn: sets PCR3 from the parent's IAM role ARN
            (:func:`attested.pcr.pcr3_from_role_arn`).
        instance_id: the simulated parent instance id; sets PCR4
            (:func:`attested.pcr.pcr4_from_instance_id`) and names in the certificates.
        state_dir: keep the root in this directory (see :mod:`attested.simulator`), so
            that other processes can verify with ``state_dir/root.pem``. ``None`` keeps an
            ephemeral root in memory (get it from :attr:`trust_root`).
        clock: returns the current time as an aware datetime; inject one to test
            certificate renewal without waiting.
        region: the simulated region, used in certificate names.

    Raises:
        ValueError: bad PCR values, or a PCR given twice (as a value and as an ARN or id).
        ConfigurationError: the state directory cannot be used, or its root is not
            valid at the current time.
    """

    backend = "simulated"
    pcr_count = PCR_COUNT
    _called = "the NSM"

    def __init__(
        self,
        *,
        pcrs: Mapping[int, bytes] | None = None,
        role_arn: str | None = None,
        instance_id: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        region: str = "sim-1",
    ) -> None:
        instance, self._pcrs = _initial_pcrs(pcrs, role_arn, instance_id)
        self._locked = set(range(LOCKED_AT_START))
        self._enclave_id = f"enc{secrets.token_hex(8)}"
        super().__init__(
            instance_id=instance,
            leaf_name=self._enclave_id,
            module_id=f"{instance}-{self._enclave_id}-simulated",
            state_dir=state_dir,
            clock=clock,
            region=region,
        )
        _log.warning(
            "SIMULATED NSM started (%s): its attestation documents are signed by %s and prove "
            "nothing about any enclave; never trust that root in production",
            self.module_id,
            self.root_location,
        )

    # -- the NsmDevice interface -----------------------------------------------------

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A document signed by the simulated chain, carrying every locked PCR.

        Args:
            user_data: ``None`` leaves the field null, ``b""`` makes it empty.
            nonce: same convention.
            public_key: same convention.

        Returns:
            The COSE_Sign1 document.

        Raises:
            TypeError, ValueError: as :meth:`nsm.NsmDevice.get_attestation_document`, or
                the simulator is closed.
            nsm.errors.InternalError: the simulated root is no longer valid.
        """
        fields = _checks.attestation_arguments(user_data, nonce, public_key)
        with self._lock:
            return self._sign("pcrs", {i: self._pcrs[i] for i in sorted(self._locked)}, fields)

    def describe(self) -> Description:
        """Version 1.0.0, this module id, 32 PCRs, the locked ones, SHA-384."""
        with self._lock:
            self._open()
            return Description(
                version=(1, 0, 0),
                module_id=self.module_id,
                max_pcrs=PCR_COUNT,
                locked_pcrs=tuple(sorted(self._locked)),
                digest=Digest.SHA384,
            )

    def describe_pcr(self, index: int) -> PcrInfo:
        """One PCR's value and lock state.

        Raises:
            TypeError, ValueError: ``index`` does not fit ``uint16_t``.
            nsm.errors.InvalidIndex: ``index`` >= 32.
        """
        checked = self._pcr_index(index)
        with self._lock:
            self._open()
            return PcrInfo(index=checked, locked=checked in self._locked, value=self._pcrs[checked])

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR: ``SHA384(old || data)``.

        Returns:
            The new value.

        Raises:
            TypeError, ValueError: as :meth:`nsm.NsmDevice.extend_pcr`.
            nsm.errors.InvalidIndex: ``index`` >= 32.
            nsm.errors.ReadOnlyIndex: the PCR is locked.
        """
        checked_index, checked_data = _checks.extend_arguments(index, data)
        checked_index = self._pcr_index(checked_index)
        with self._lock:
            self._open()
            if checked_index in self._locked:
                raise ReadOnlyIndex(f"PCR{checked_index} is locked")
            value = pcr.extend(self._pcrs[checked_index], checked_data)
            self._pcrs[checked_index] = value
            return value

    def lock_pcr(self, index: int) -> None:
        """Lock one PCR (locking a locked PCR is accepted).

        Raises:
            nsm.errors.InvalidIndex: ``index`` >= 32.
        """
        checked = self._pcr_index(index)
        with self._lock:
            self._open()
            self._locked.add(checked)

    def lock_pcrs(self, count: int) -> None:
        """Lock PCRs ``0`` to ``count - 1``.

        Raises:
            nsm.errors.InvalidIndex: ``count`` > 32.
        """
        checked = _checks.pcr_index(count, name="count")
        if checked > PCR_COUNT:
            raise InvalidIndex(f"cannot lock {checked} PCRs: the NSM has {PCR_COUNT}")
        with self._lock:
            self._open()
            self._locked.update(range(checked))
