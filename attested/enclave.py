"""Where an enclave application gets its attestation documents: :func:`open_provider`.

>>> with open_provider() as provider:                                  # doctest: +SKIP
...     document = provider.get_attestation_document(public_key=der, nonce=nonce)

Backends:

``"auto"`` (default)
    The real NSM: libnsm if it can be loaded, otherwise the ``/dev/nsm`` ioctl. It
    **never** falls back to the simulator: outside an enclave it fails.
``"libnsm"``, ``"ioctl"``
    The real NSM through that backend only (see :mod:`nsm.device`).
``"simulated"``
    :class:`attested.simulator.SimulatedNsm`, keeping its root in ``state_dir``.
    **Danger**: its documents prove nothing; see :mod:`attested.simulator`.
``"simulated-nitrotpm"``
    :class:`attested.simulator.SimulatedNitroTpm`: an EC2 instance's NitroTPM documents
    (verify them with ``Profile.NITROTPM``), from the same simulated root. Same danger.

Errors from the NSM (``nsm.NsmError``, a missing library or device) reach the caller as
:class:`~attested.errors.AttestationUnavailable`, whose message says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Self

import nsm
from attested.errors import AttestationUnavailable

if TYPE_CHECKING:  # the simulator is development code: loaded only when chosen
    from attested.simulator import SimulatedNitroTpm, SimulatedNsm

__all__ = ["NsmProvider", "PROVIDER_BACKENDS", "open_provider"]

PROVIDER_BACKENDS = ("auto", "libnsm", "ioctl", "simulated", "simulated-nitrotpm")


class NsmProvider:
    """An :class:`~attested.provider.AttestationProvider` over an NSM or the simulator.

    Attributes:
        device: the underlying :class:`nsm.NsmDevice` or
            :class:`~attested.simulator.SimulatedNsm`, for PCR and random calls (these
            raise ``nsm`` errors unchanged).
    """

    def __init__(self, device: nsm.NsmDevice | SimulatedNsm | SimulatedNitroTpm) -> None:
        self.device = device

    @property
    def backend(self) -> str:
        """``"libnsm"``, ``"ioctl"``, ``"simulated"`` or ``"simulated-nitrotpm"``."""
        return self.device.backend

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Return a fresh attestation document carrying the given fields.

        Args:
            user_data: ``None`` leaves the field absent, ``b""`` makes it empty.
            nonce: same convention.
            public_key: same convention (DER ``SubjectPublicKeyInfo`` for KMS).

        Returns:
            The COSE_Sign1 document (not verified here).

        Raises:
            TypeError, ValueError: bad arguments (a request over 4096 bytes included),
                or the provider is closed.
            AttestationUnavailable: the NSM refused or failed.
        """
        try:
            return self.device.get_attestation_document(
                user_data=user_data, nonce=nonce, public_key=public_key
            )
        except nsm.NsmError as exc:
            raise AttestationUnavailable(
                f"the NSM ({self.backend}) gave no attestation document: {exc}"
            ) from exc

    def close(self) -> None:
        """Close the device. Closing twice is harmless."""
        self.device.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NsmProvider {self.device!r}>"


def open_provider(
    backend: str = "auto",
    *,
    device_path: str = nsm.DEFAULT_DEVICE_PATH,
    state_dir: str | os.PathLike[str] | None = None,
    pcrs: Mapping[int, bytes] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> NsmProvider:
    """Open the source of attestation documents named by ``backend``.

    Args:
        backend: one of :data:`PROVIDER_BACKENDS`.
        device_path: the NSM device, for ``"ioctl"`` (and ``"auto"``).
        state_dir: for the simulated backends: the state directory holding the shared
            root (``None``: an ephemeral root). Not allowed with other backends.
        pcrs: for ``"simulated"``: PCR 0-15 values; for ``"simulated-nitrotpm"``: the
            PCR 0-23 values after boot. Not allowed with other backends.
        clock: for the simulated backends: the clock. Not allowed with other backends.

    Returns:
        An open provider; close it (or use it as a context manager) when done.

    Raises:
        ValueError: unknown backend, or simulator options given to a real backend.
        AttestationUnavailable: the library or device is missing (the message says
            what to install or configure).
        ConfigurationError: the simulator's state directory cannot be used.
    """
    if backend not in PROVIDER_BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(PROVIDER_BACKENDS)}; got {backend!r:.40}"
        )
    if backend == "simulated":
        from attested.simulator import SimulatedNsm  # development code, chosen on purpose

        return NsmProvider(SimulatedNsm(state_dir=state_dir, pcrs=pcrs, clock=clock))
    if backend == "simulated-nitrotpm":
        from attested.simulator import SimulatedNitroTpm  # development code, chosen on purpose

        return NsmProvider(SimulatedNitroTpm(state_dir=state_dir, pcrs=pcrs, clock=clock))
    if state_dir is not None or pcrs is not None or clock is not None:
        raise ValueError("state_dir, pcrs and clock apply to the simulated backends only")
    try:
        return NsmProvider(nsm.open_device(backend=backend, device_path=device_path))
    except nsm.LibraryNotFound as exc:
        raise AttestationUnavailable(
            f"{exc}. Outside an enclave, use backend='simulated' for development."
        ) from exc
    except nsm.DeviceOpenError as exc:
        raise AttestationUnavailable(
            f"{exc}. Outside an enclave, use backend='simulated' (with a state directory) "
            "for development; it is never chosen automatically."
        ) from exc
