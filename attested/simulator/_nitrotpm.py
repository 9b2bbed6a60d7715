"""A simulated NitroTPM: an EC2 instance's attestation documents, for development.

**Danger**: a simulated document proves nothing about any instance. It is signed by the
simulator's root (the same root as :class:`~attested.simulator.SimulatedNsm`'s), which
verifiers pinned to the AWS Nitro root refuse, as they must.

What is simulated: 24 SHA-384 PCRs with TPM semantics: every PCR reads zero at boot
except PCR17-22 (the dynamic-launch PCRs, all ``ff`` until a dynamic launch resets
them), the boot measurements (``pcrs``) are in place when the instance starts, and
afterwards PCRs only change by extension, ``SHA384(old || data)``; a new instance is a
new boot. Documents are laid out like NitroTPM's: ``nitrotpm_pcrs`` with all 24 PCRs,
``module_id`` ``i-<instance>-tpm0000000000000000``, the rest as an enclave's document.

What is not: the TPM itself (its other commands, the NV index the real request goes
through, Secure Boot) and the link between the PCRs and a real AMI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType

from attested import pcr
from attested.simulator._module import SimulatedModule
from nsm import _checks
from nsm.types import PcrInfo

__all__ = ["DEFAULT_NITROTPM_PCRS", "SimulatedNitroTpm"]

_log = logging.getLogger(__name__)

NITROTPM_PCR_COUNT = 24
DYNAMIC_LAUNCH_PCRS = range(17, 23)
"""PCRs that read all ``ff`` from boot until a dynamic launch (none on EC2)."""
DEFAULT_NITROTPM_INSTANCE_ID = "i-0simulated0000000"
DEFAULT_NITROTPM_PCRS: Mapping[int, bytes] = MappingProxyType(
    {
        0: pcr.measure(b"attested simulated NitroTPM firmware, PCR0"),
        1: pcr.measure(b"attested simulated NitroTPM firmware, PCR1"),
        4: pcr.measure(b"attested simulated Attestable AMI, PCR4"),
        7: pcr.NITROTPM_PCR7_SECURE_BOOT_OFF,
        12: pcr.ZERO,
    }
)
"""The boot measurements when none are given: AWS-firmware-like PCR0/1, a fixed simulated
AMI in PCR4, Secure Boot off (PCR7) and the UKI's own command line (PCR12 zero)."""


def _boot_pcrs(pcrs: Mapping[int, bytes] | None) -> list[bytes]:
    values = [
        b"\xff" * pcr.PCR_SIZE if i in DYNAMIC_LAUNCH_PCRS else pcr.ZERO
        for i in range(NITROTPM_PCR_COUNT)
    ]
    chosen = DEFAULT_NITROTPM_PCRS if pcrs is None else pcrs
    given: dict[object, object] = {key: value for key, value in chosen.items()}
    for index, value in given.items():
        if not isinstance(index, int) or not 0 <= index < NITROTPM_PCR_COUNT:
            raise ValueError(f"a NitroTPM has PCRs 0-{NITROTPM_PCR_COUNT - 1}, not {index}")
        if not isinstance(value, bytes) or len(value) != pcr.PCR_SIZE:
            raise ValueError(f"PCR{index} must be {pcr.PCR_SIZE} bytes")
        values[index] = value
    return values


class SimulatedNitroTpm(SimulatedModule):
    """A simulated NitroTPM on a simulated EC2 instance (read the module's danger note).

    Args:
        pcrs: the PCR values after boot, 48 bytes each, any of 0-23; ``None`` gives
            :data:`DEFAULT_NITROTPM_PCRS`. PCRs not given read as at boot.
        instance_id: the simulated instance id (in ``module_id`` and the certificates).
        state_dir: keep the root in this directory (shared with the simulated NSM), so
            that other processes (the KMS emulator) can trust ``state_dir/root.pem``.
        clock: returns the current time as an aware datetime.
        region: the simulated region, used in certificate names.

    Raises:
        ValueError: a PCR index outside 0-23 or a value that is not 48 bytes.
        ConfigurationError: the state directory cannot be used.
    """

    backend = "simulated-nitrotpm"
    pcr_count = NITROTPM_PCR_COUNT
    _called = "a NitroTPM"

    def __init__(
        self,
        *,
        pcrs: Mapping[int, bytes] | None = None,
        instance_id: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        region: str = "sim-1",
    ) -> None:
        self._pcrs = _boot_pcrs(pcrs)
        instance = instance_id or DEFAULT_NITROTPM_INSTANCE_ID
        super().__init__(
            instance_id=instance,
            leaf_name="tpm0000000000000000",
            module_id=f"{instance}-tpm0000000000000000",
            state_dir=state_dir,
            clock=clock,
            region=region,
        )
        _log.warning(
            "SIMULATED NitroTPM started (%s): its attestation documents are signed by %s and "
            "prove nothing about any instance; never trust that root in production",
            self.module_id,
            self.root_location,
        )

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A NitroTPM document signed by the simulated chain, carrying all 24 PCRs.

        Args:
            user_data: ``None`` leaves the field null, ``b""`` makes it empty.
            nonce: same convention.
            public_key: same convention.

        Raises:
            TypeError, ValueError: bad arguments, or the simulator is closed.
            nsm.errors.InternalError: the simulated root is no longer valid.
        """
        fields = _checks.attestation_arguments(user_data, nonce, public_key)
        with self._lock:
            return self._sign("nitrotpm_pcrs", dict(enumerate(self._pcrs)), fields)

    def describe_pcr(self, index: int) -> PcrInfo:
        """One PCR's value (TPM PCRs have no lock: ``locked`` is always false).

        Raises:
            nsm.errors.InvalidIndex: ``index`` >= 24.
        """
        checked = self._pcr_index(index)
        with self._lock:
            self._open()
            return PcrInfo(index=checked, locked=False, value=self._pcrs[checked])

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR: ``SHA384(old || data)``; the new value.

        Raises:
            TypeError, ValueError: bad arguments, or the simulator is closed.
            nsm.errors.InvalidIndex: ``index`` >= 24.
        """
        checked_index, checked_data = _checks.extend_arguments(index, data)
        checked_index = self._pcr_index(checked_index)
        with self._lock:
            self._open()
            value = pcr.extend(self._pcrs[checked_index], checked_data)
            self._pcrs[checked_index] = value
            return value
