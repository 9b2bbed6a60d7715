"""The NSM device: typed calls over libnsm or the raw ``/dev/nsm`` ioctl.

>>> with nsm.open_device() as device:                                  # doctest: +SKIP
...     document = device.get_attestation_document(nonce=nonce, public_key=der)

Two backends answer the same calls the same way:

``"libnsm"``
    AWS's library (``libnsm.so.0``, located as :mod:`nsm._lib` describes), through
    ctypes. It always opens ``/dev/nsm``.
``"ioctl"``
    The kernel driver's one ioctl, with the NSM's CBOR messages encoded here; needs
    neither libnsm nor anything outside the standard library.
``"auto"`` (the default)
    libnsm if it can be loaded, otherwise the ioctl. An explicit ``$NSM_LIB_PATH`` that
    does not load is an error, not a reason to fall back; a non-default ``device_path``
    selects the ioctl (libnsm cannot open another path).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, TypeVar

from nsm import _checks, _messages
from nsm._ioctl import IoctlTransport, MessageBackend
from nsm._lib import ENV_VAR, LibnsmBackend, load_library
from nsm.errors import LibraryNotFound
from nsm.types import Description, PcrInfo

__all__ = [
    "BACKENDS",
    "DEFAULT_DEVICE_PATH",
    "NsmDevice",
    "attestation_request_size",
    "open_device",
]

_log = logging.getLogger(__name__)

DEFAULT_DEVICE_PATH = "/dev/nsm"
BACKENDS = ("auto", "libnsm", "ioctl")

_T = TypeVar("_T")


class _Backend(Protocol):
    name: str

    def close(self) -> None: ...
    def get_attestation_document(
        self, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
    ) -> bytes: ...
    def get_random(self, count: int) -> bytes: ...
    def describe(self) -> Description: ...
    def describe_pcr(self, index: int) -> tuple[bool, bytes]: ...
    def extend_pcr(self, index: int, data: bytes) -> bytes: ...
    def lock_pcr(self, index: int) -> None: ...
    def lock_pcrs(self, range_: int) -> None: ...


def _open_backend(backend: str, device_path: str) -> _Backend:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r:.40}")
    if not device_path:
        raise ValueError("device_path must be a non-empty path")
    if backend == "libnsm":
        if device_path != DEFAULT_DEVICE_PATH:
            raise ValueError(
                f"libnsm always opens {DEFAULT_DEVICE_PATH}; device_path needs the ioctl backend"
            )
        return LibnsmBackend()
    if backend == "auto" and device_path == DEFAULT_DEVICE_PATH:
        try:
            library = load_library()
        except LibraryNotFound:
            if os.environ.get(ENV_VAR):
                raise
            _log.debug("libnsm not found; using the /dev/nsm ioctl")
        else:
            return LibnsmBackend(library)
    return MessageBackend(IoctlTransport(device_path))


class NsmDevice:
    """An open NSM: a context manager owning the device's file descriptor.

    Calls on one device are serialised (the driver handles one request at a time
    anyway), so a device may be shared between threads; :meth:`close` waits for a
    call in progress, and later calls raise :class:`ValueError`.

    Args:
        backend: ``"auto"``, ``"libnsm"`` or ``"ioctl"`` (see :mod:`nsm.device`).
        device_path: the NSM device file, for the ioctl backend.

    Raises:
        ValueError: unknown backend, or ``device_path`` given to libnsm.
        nsm.errors.LibraryNotFound: libnsm was asked for (or configured with
            ``$NSM_LIB_PATH``) and could not be loaded.
        nsm.errors.DeviceOpenError: the device could not be opened.
    """

    def __init__(self, *, backend: str = "auto", device_path: str = DEFAULT_DEVICE_PATH) -> None:
        self._backend: _Backend = _open_backend(backend, device_path)
        self._lock = threading.Lock()
        self._closed = False
        _log.debug("NSM device opened with the %s backend", self._backend.name)

    @classmethod
    def _from_backend(cls, backend: _Backend) -> NsmDevice:
        """A device over an already open backend (tests drive fakes of the NSM this way)."""
        device = cls.__new__(cls)
        device._backend = backend
        device._lock = threading.Lock()
        device._closed = False
        return device

    @property
    def backend(self) -> str:
        """Which backend this device uses: ``"libnsm"`` or ``"ioctl"``."""
        return self._backend.name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the device. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<NsmDevice backend={self._backend.name} {state}>"

    def _call(self, function: Callable[[], _T]) -> _T:
        with self._lock:
            if self._closed:
                raise ValueError("the NSM device is closed")
            return function()

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Ask the NSM for a signed attestation document.

        Keyword-only on purpose: the three fields are all bytes, and AWS's own C++ test
        passes them to libnsm in the wrong order.

        Args:
            user_data: application data to include; ``None`` leaves the field absent
                (CBOR null), ``b""`` includes it empty.
            nonce: a caller's nonce, same convention.
            public_key: a public key (DER) for the relying party to encrypt to, same
                convention.

        Returns:
            The COSE_Sign1 document, as the NSM produced it. It is not verified here.

        Raises:
            TypeError: a field is not bytes-like or ``None``.
            ValueError: the request would exceed the NSM's 4096 bytes (see
                :func:`attestation_request_size`), or the device is closed.
            nsm.errors.NsmError: the NSM refused or failed.
        """
        fields = _checks.attestation_arguments(user_data, nonce, public_key)
        return self._call(lambda: self._backend.get_attestation_document(*fields))

    def get_random(self, count: int) -> bytes:
        """Return ``count`` random bytes from the NSM's hardware source.

        Args:
            count: how many bytes, up to 1 MiB (the NSM gives 256 per request).

        Returns:
            Exactly ``count`` bytes.

        Raises:
            TypeError, ValueError: ``count`` is not an int in range.
            nsm.errors.NsmError: the NSM refused or failed.
        """
        checked = _checks.random_count(count)
        if checked == 0:
            return b""
        return self._call(lambda: self._backend.get_random(checked))

    def describe(self) -> Description:
        """Describe the NSM: version, module id, PCR count, locked PCRs, digest.

        Raises:
            nsm.errors.NsmError: the NSM refused or failed.
        """
        return self._call(self._backend.describe)

    def describe_pcr(self, index: int) -> PcrInfo:
        """Read one PCR and whether it is locked.

        Args:
            index: the PCR index.

        Raises:
            TypeError, ValueError: ``index`` does not fit ``uint16_t``.
            nsm.errors.InvalidIndex: the NSM has no such PCR.
            nsm.errors.NsmError: the NSM refused or failed otherwise.
        """
        checked = _checks.pcr_index(index)
        locked, value = self._call(lambda: self._backend.describe_pcr(checked))
        return PcrInfo(index=checked, locked=locked, value=value)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR with ``data``: ``new = SHA384(old || data)``.

        Args:
            index: the PCR index (16-31 are the ones left unlocked at boot).
            data: raw bytes, hashed by the NSM together with the old value.

        Returns:
            The PCR's new value.

        Raises:
            TypeError, ValueError: wrong types, index out of ``uint16_t``, or a request
                over 4096 bytes.
            nsm.errors.ReadOnlyIndex: the PCR is locked.
            nsm.errors.InvalidIndex: the NSM has no such PCR.
            nsm.errors.NsmError: the NSM refused or failed otherwise.
        """
        checked_index, checked_data = _checks.extend_arguments(index, data)
        return self._call(lambda: self._backend.extend_pcr(checked_index, checked_data))

    def lock_pcr(self, index: int) -> None:
        """Lock one PCR against further extension until the enclave ends.

        Raises:
            TypeError, ValueError: ``index`` does not fit ``uint16_t``.
            nsm.errors.InvalidIndex: the NSM has no such PCR.
            nsm.errors.NsmError: the NSM refused or failed otherwise.
        """
        checked = _checks.pcr_index(index)
        self._call(lambda: self._backend.lock_pcr(checked))

    def lock_pcrs(self, count: int) -> None:
        """Lock PCRs ``0`` to ``count - 1``.

        Raises:
            TypeError, ValueError: ``count`` does not fit ``uint16_t``.
            nsm.errors.InvalidIndex: ``count`` is beyond the NSM's PCRs.
            nsm.errors.NsmError: the NSM refused or failed otherwise.
        """
        checked = _checks.pcr_index(count, name="count")
        self._call(lambda: self._backend.lock_pcrs(checked))


def open_device(*, backend: str = "auto", device_path: str = DEFAULT_DEVICE_PATH) -> NsmDevice:
    """Open the NSM; the same as :class:`NsmDevice` with the same arguments.

    Args:
        backend: ``"auto"``, ``"libnsm"`` or ``"ioctl"``.
        device_path: the NSM device file, for the ioctl backend.

    Returns:
        An open device; use it as a context manager or call :meth:`NsmDevice.close`.

    Raises:
        ValueError: unknown backend, or ``device_path`` given to libnsm.
        nsm.errors.LibraryNotFound: libnsm was needed and could not be loaded.
        nsm.errors.DeviceOpenError: the device could not be opened.
    """
    return NsmDevice(backend=backend, device_path=device_path)


def attestation_request_size(
    *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
) -> int:
    """The exact size in bytes of the CBOR request for these fields.

    The NSM refuses requests over 4096 bytes (:data:`nsm.types.REQUEST_MAX_SIZE`); the
    three fields together may take about 4040 bytes.

    Raises:
        TypeError: a field is not bytes-like or ``None``.
    """
    return _messages.attestation_size(
        user_data=_checks.optional_bytes(user_data, "user_data"),
        nonce=_checks.optional_bytes(nonce, "nonce"),
        public_key=_checks.optional_bytes(public_key, "public_key"),
    )
