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
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Self

from cryptography.hazmat.primitives.serialization import Encoding

from attested import pcr
from attested.errors import ConfigurationError
from attested.simulator._document import build_payload, sign_payload
from attested.simulator._pki import LEAF_LIFETIME, CertifiedKey, NitroLikePki, build_pki, build_root
from attested.simulator._state import ROOT_CERT_FILE, load_or_create_root
from attested.trust import TrustRoot
from nsm import _checks
from nsm.errors import InternalError, InvalidIndex, ReadOnlyIndex
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
LEAF_RENEW_BEFORE = timedelta(minutes=10)
"""A signing certificate with less validity left than this is replaced."""
CHAIN_RENEW_BEFORE = LEAF_LIFETIME + timedelta(hours=1)
"""The CA chain is replaced when its first certificate has less than this left, so a
new leaf never outlives its issuers."""
LEAF_BACKDATE = timedelta(minutes=1)
"""Leaves start a minute before they are issued, for verifiers whose clock is behind."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


class SimulatedNsm:
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
        self._clock = clock or _utc_now
        self._instance_id, self._pcrs = _initial_pcrs(pcrs, role_arn, instance_id)
        self._locked = set(range(LOCKED_AT_START))
        self._region = region
        self._enclave_id = f"enc{secrets.token_hex(8)}"
        self.module_id = f"{self._instance_id}-{self._enclave_id}-simulated"
        now = self._now()
        if state_dir is None:
            self._root = build_root(now=now)
            where = "an ephemeral in-memory root"
        else:
            self._root = load_or_create_root(state_dir, now=now)
            where = f"the root in {os.fspath(state_dir)}/{ROOT_CERT_FILE}"
        self._check_root(now, ConfigurationError)
        self._pki: NitroLikePki | None = None
        self._leaf: CertifiedKey | None = None
        self._lock = threading.Lock()
        self._closed = False
        _log.warning(
            "SIMULATED NSM started (%s): its attestation documents are signed by %s and prove "
            "nothing about any enclave; never trust that root in production",
            self.module_id,
            where,
        )

    # -- the PKI ---------------------------------------------------------------------

    @property
    def root_certificate(self) -> bytes:
        """The root certificate, DER."""
        return self._root.der

    @property
    def root_pem(self) -> bytes:
        """The root certificate, PEM (the content of ``state_dir/root.pem``)."""
        return self._root.certificate.public_bytes(Encoding.PEM)

    @property
    def trust_root(self) -> TrustRoot:
        """A :class:`~attested.trust.TrustRoot` for verifying this simulator's documents."""
        return TrustRoot((self._root.certificate,), f"simulated NSM root ({self.module_id})")

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the simulated NSM's clock must return an aware datetime")
        return now.astimezone(UTC)

    def _check_root(self, now: datetime, error: type[Exception]) -> None:
        cert = self._root.certificate
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - CHAIN_RENEW_BEFORE:
            raise error(
                f"the simulated root is valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {now:%Y-%m-%d %H:%M}; "
                "use a new state directory"
            )

    def _signer(self, now: datetime) -> tuple[NitroLikePki, CertifiedKey]:
        """The CA chain and signing certificate for ``now``, renewing them when due."""
        pki = self._pki
        if (
            pki is None
            or pki.not_after() - now < CHAIN_RENEW_BEFORE
            or pki.instance.certificate.not_valid_before_utc > now
        ):
            self._check_root(now, InternalError)
            pki = self._pki = build_pki(
                now=now, instance_id=self._instance_id, region=self._region, root=self._root
            )
            self._leaf = None
            _log.info("simulated NSM: new CA chain valid until %s", pki.not_after())
        leaf = self._leaf
        if (
            leaf is None
            or leaf.certificate.not_valid_after_utc - now < LEAF_RENEW_BEFORE
            or leaf.certificate.not_valid_before_utc > now
        ):
            leaf = self._leaf = pki.issue_leaf(
                enclave_id=self._enclave_id, not_before=now - LEAF_BACKDATE
            )
        return pki, leaf

    # -- the NsmDevice interface -----------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop answering calls. Closing twice is harmless."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SimulatedNsm {self.module_id} {state}>"

    def _open(self) -> None:
        if self._closed:
            raise ValueError("the simulated NSM is closed")

    def _pcr_index(self, index: object) -> int:
        checked = _checks.pcr_index(index)
        if checked >= PCR_COUNT:
            raise InvalidIndex(f"PCR{checked}: the NSM has {PCR_COUNT} PCRs")
        return checked

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
            self._open()
            now = self._now()
            pki, leaf = self._signer(now)
            payload = build_payload(
                module_id=self.module_id,
                timestamp=now,
                pcrs={i: self._pcrs[i] for i in sorted(self._locked)},
                certificate=leaf.der,
                cabundle=pki.cabundle(),
                user_data=fields[0],
                nonce=fields[1],
                public_key=fields[2],
            )
            return sign_payload(payload, leaf.private_key)

    def get_random(self, count: int) -> bytes:
        """``count`` bytes from the operating system's CSPRNG.

        Raises:
            TypeError, ValueError: ``count`` is not an int in ``[0, 1 MiB]``.
        """
        checked = _checks.random_count(count)
        self._open()
        return secrets.token_bytes(checked)

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
