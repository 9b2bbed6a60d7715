"""What every simulated module shares: the root, the CA chain, the signing leaf, the clock.

:class:`SimulatedModule` keeps the simulator's root (in a state directory or in memory),
builds a P-384 chain shaped like AWS's under it (root, regional, zonal, instance, leaf),
renews the 3-hour leaf shortly before it expires and the CAs well before theirs, and
signs document payloads. The NSM and the NitroTPM simulators add their PCR semantics.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Self

from cryptography.hazmat.primitives.serialization import Encoding

from attested.errors import ConfigurationError
from attested.simulator._document import build_payload, sign_payload
from attested.simulator._pki import LEAF_LIFETIME, CertifiedKey, NitroLikePki, build_pki, build_root
from attested.simulator._state import ROOT_CERT_FILE, load_or_create_root
from attested.trust import TrustRoot
from nsm import _checks
from nsm.errors import InternalError, InvalidIndex

__all__ = ["CHAIN_RENEW_BEFORE", "LEAF_BACKDATE", "LEAF_RENEW_BEFORE", "SimulatedModule"]

LEAF_RENEW_BEFORE = timedelta(minutes=10)
"""A signing certificate with less validity left than this is replaced."""
CHAIN_RENEW_BEFORE = LEAF_LIFETIME + timedelta(hours=1)
"""The CA chain is replaced when its first certificate has less than this left, so a
new leaf never outlives its issuers."""
LEAF_BACKDATE = timedelta(minutes=1)
"""Leaves start a minute before they are issued, for verifiers whose clock is behind."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedModule:
    """The signing half of a simulated NSM or NitroTPM (not used on its own).

    Args:
        instance_id: the simulated instance id, in the certificate names.
        leaf_name: what follows the instance id in the signing certificate's name.
        module_id: the documents' ``module_id``.
        state_dir: keep the root there (``None``: an ephemeral root in memory).
        clock: returns the current time as an aware datetime.
        region: the simulated region, in certificate names.

    Raises:
        ConfigurationError: the state directory cannot be used, or its root is not
            valid at the current time.
    """

    pcr_count: int
    """How many PCRs the simulated module has."""
    _called = "the module"
    """What PCR errors call it (``"the NSM"``)."""

    def __init__(
        self,
        *,
        instance_id: str,
        leaf_name: str,
        module_id: str,
        state_dir: str | os.PathLike[str] | None,
        clock: Callable[[], datetime] | None,
        region: str,
    ) -> None:
        self._clock = clock or _utc_now
        self._instance_id = instance_id
        self._leaf_name = leaf_name
        self._region = region
        self.module_id = module_id
        now = self._now()
        if state_dir is None:
            self._root = build_root(now=now)
            self.root_location = "an ephemeral in-memory root"
        else:
            self._root = load_or_create_root(state_dir, now=now)
            self.root_location = f"the root in {os.fspath(state_dir)}/{ROOT_CERT_FILE}"
        self._check_root(now, ConfigurationError)
        self._pki: NitroLikePki | None = None
        self._leaf: CertifiedKey | None = None
        self._lock = threading.Lock()
        self._closed = False

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
        return TrustRoot((self._root.certificate,), f"simulated root ({self.module_id})")

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
        return f"<{type(self).__name__} {self.module_id} {state}>"

    def _open(self) -> None:
        if self._closed:
            raise ValueError(f"the {type(self).__name__} is closed")

    def _pcr_index(self, index: object) -> int:
        """``index`` checked as the NSM checks it, and below :attr:`pcr_count`.

        Raises:
            nsm.errors.InvalidIndex: ``index`` >= :attr:`pcr_count`.
        """
        checked = _checks.pcr_index(index)
        if checked >= self.pcr_count:
            raise InvalidIndex(f"PCR{checked}: {self._called} has {self.pcr_count} PCRs")
        return checked

    def get_random(self, count: int) -> bytes:
        """``count`` bytes from the operating system's CSPRNG.

        Raises:
            TypeError, ValueError: ``count`` is not an int in ``[0, 1 MiB]``, or the
                simulator is closed.
        """
        checked = _checks.random_count(count)
        self._open()
        return secrets.token_bytes(checked)

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the simulator's clock must return an aware datetime")
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
        leaf = self._leaf
        if (
            leaf is None
            or leaf.certificate.not_valid_after_utc - now < LEAF_RENEW_BEFORE
            or leaf.certificate.not_valid_before_utc > now
        ):
            leaf = self._leaf = pki.issue_leaf(
                enclave_id=self._leaf_name, not_before=now - LEAF_BACKDATE
            )
        return pki, leaf

    def _sign(
        self,
        pcr_field: str,
        pcrs: Mapping[int, bytes],
        fields: tuple[bytes | None, bytes | None, bytes | None],
    ) -> bytes:
        """A document with ``pcrs`` under ``pcr_field``; call with ``self._lock`` held.

        Args:
            pcr_field: ``"pcrs"`` (NSM) or ``"nitrotpm_pcrs"`` (NitroTPM).
            pcrs: the PCRs the document carries.
            fields: checked ``(user_data, nonce, public_key)``.
        """
        self._open()
        now = self._now()
        pki, leaf = self._signer(now)
        payload = build_payload(
            module_id=self.module_id,
            timestamp=now,
            pcrs=pcrs,
            pcr_field=pcr_field,
            certificate=leaf.der,
            cabundle=pki.cabundle(),
            user_data=fields[0],
            nonce=fields[1],
            public_key=fields[2],
        )
        return sign_payload(payload, leaf.private_key)
