"""The native path: the NSM request through an NV index and the AWS vendor command.

What ``nitro-tpm-attest`` and lockboot/vaportpm do (docs/nitrotpm.md, "Getting the
document"): find a free NV index in the owner range, define it (8192 bytes, empty auth
value), write the CBOR request into it in chunks of ``TPM_PT_NV_BUFFER_MAX``, send
``TPM2_VENDOR_AWS_NSM_REQUEST`` naming it, read the response back in chunks, and undefine
the index: **always**, also when a step fails (on a fresh open of the device when the
first one stopped answering). An index this code did not define (``TPM_RC_NV_DEFINED``
because another process took the handle first) is never undefined.

The device is opened for one request and closed after it, so ``/dev/tpm0`` (which one
process at a time may hold) is not kept from other tools between requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from attested.errors import AttestationUnavailable, AttestedError, MalformedError, TpmError
from attested.nitrotpm import _tpm2
from attested.nitrotpm._device import TpmDevice

log = logging.getLogger("attested.nitrotpm")

NV_SIZE = 8192
"""The NV index's size: what ``nitro-tpm-attest`` defines (a document is about 5 KiB)."""
MAX_CHUNK = 1024
"""The largest NV read or write, whatever ``TPM_PT_NV_BUFFER_MAX`` says (the Linux driver
takes commands of at most 4096 bytes)."""
_DEFINE_ATTEMPTS = 3

Opener = Callable[[], TpmDevice]


class NativeNitroTpm:
    """Gets NSM responses from a NitroTPM through its device.

    Args:
        open_device: opens the device afresh (called once per request, and once more to
            clean up after a device that stopped answering).
        path: the device path, for messages.
    """

    def __init__(self, open_device: Opener, path: str) -> None:
        self._open = open_device
        self.path = path
        self._lock = threading.Lock()

    def check(self) -> None:
        """Check that the device is a NitroTPM (its vendor string), then close it.

        Raises:
            AttestationUnavailable: it cannot be opened, does not answer, or is another TPM.
        """
        with self._lock, self._open() as device:
            try:
                self._check_vendor(device)
            except MalformedError as exc:
                raise AttestationUnavailable(
                    f"the TPM at {self.path} did not answer as a NitroTPM: {exc}"
                ) from exc

    def _check_vendor(self, device: TpmDevice) -> None:
        properties = _properties(device, _tpm2.TPM_PT_VENDOR_STRING_1, 2)
        vendor = _tpm2.vendor_string(properties)
        if vendor != "NitroTPM":
            raise AttestationUnavailable(
                f"the TPM at {self.path} reports the vendor {vendor!r:.20}, not 'NitroTPM': "
                "NitroTPM attestation documents come only from an EC2 instance's NitroTPM"
            )

    def exchange(self, request: bytes) -> bytes:
        """Send one NSM request (CBOR) and return the NV index's contents afterwards.

        Raises:
            AttestationUnavailable: a TPM command failed (:class:`TpmError`), the device
                did not answer in time, or could not be used.
            MalformedError: the device's answers are not TPM responses.
        """
        if len(request) > NV_SIZE:
            raise ValueError(f"an NSM request holds at most {NV_SIZE} bytes")
        with self._lock:
            device = self._open()
            try:
                return self._exchange(device, request)
            finally:
                device.close()

    def _exchange(self, device: TpmDevice, request: bytes) -> bytes:
        self._check_vendor(device)
        buffer_max = _properties(device, _tpm2.TPM_PT_NV_BUFFER_MAX, 1).get(
            _tpm2.TPM_PT_NV_BUFFER_MAX, 0
        )
        if buffer_max <= 0:
            raise AttestationUnavailable(f"the TPM at {self.path} reports no TPM_PT_NV_BUFFER_MAX")
        chunk = min(buffer_max, MAX_CHUNK)
        index = self._define(device)
        try:
            for offset in range(0, len(request), chunk):
                _call(device, _tpm2.nv_write(index, request[offset : offset + chunk], offset))
            _call(device, _tpm2.nsm_request(index))
            response = b""
            for offset in range(0, NV_SIZE, chunk):
                size = min(chunk, NV_SIZE - offset)
                command = _tpm2.nv_read(index, size, offset)
                response += _tpm2.parse_nv_read(_call(device, command), size)
        except TpmError:
            self._undefine(device, index)  # the TPM answered: the device is in step
            raise
        except BaseException:
            # A timeout, a broken answer, an I/O error: the device may still be busy with
            # the command or hold the rest of an answer. Undefine on a fresh open.
            device.close()
            self._undefine_fresh(index)
            raise
        self._undefine(device, index)
        return response

    def _define(self, device: TpmDevice) -> int:
        for _ in range(_DEFINE_ATTEMPTS):
            index = _free_index(device, self.path)
            try:
                _call(device, _tpm2.nv_define_space(index, NV_SIZE))
            except TpmError as exc:
                if exc.code == _tpm2.TPM_RC_NV_DEFINED:
                    continue  # another process took it between the two commands
                raise
            return index
        raise AttestationUnavailable(
            f"could not define an NV index on {self.path}: another process kept taking "
            "the free handle first"
        )

    def _undefine(self, device: TpmDevice, index: int) -> None:
        try:
            _call(device, _tpm2.nv_undefine_space(index))
        except AttestedError as exc:
            log.warning(
                "could not undefine NV index 0x%08x on %s (undefine it by hand: "
                "tpm2_nvundefine 0x%08x): %s",
                index,
                self.path,
                index,
                exc,
            )

    def _undefine_fresh(self, index: int) -> None:
        try:
            device = self._open()
        except AttestedError as exc:
            log.warning(
                "could not reopen %s to undefine NV index 0x%08x: %s", self.path, index, exc
            )
            return
        with device:
            self._undefine(device, index)

    def __repr__(self) -> str:
        return f"<NativeNitroTpm {self.path!r}>"


def _call(device: TpmDevice, command: bytes) -> bytes:
    return _tpm2.parse_response(device.transact(command), command)


def _properties(device: TpmDevice, first: int, count: int) -> dict[int, int]:
    command = _tpm2.get_capability(_tpm2.TPM_CAP_TPM_PROPERTIES, first, count)
    properties, _more = _tpm2.parse_properties(_call(device, command))
    return properties


def _free_index(device: TpmDevice, path: str) -> int:
    """The lowest NV index handle in the owner range that no one has defined."""
    used: set[int] = set()
    start = _tpm2.NV_INDEX_FIRST
    for _ in range(64):  # at most 64 pages of handles
        command = _tpm2.get_capability(_tpm2.TPM_CAP_HANDLES, start, 64)
        handles, more = _tpm2.parse_handles(_call(device, command))
        used.update(h for h in handles if _tpm2.NV_INDEX_FIRST <= h <= _tpm2.NV_INDEX_LAST)
        if not more or not handles or max(handles) >= _tpm2.NV_INDEX_LAST:
            break
        start = max(handles) + 1
    for candidate in range(_tpm2.NV_INDEX_FIRST, _tpm2.NV_INDEX_LAST + 1):
        if candidate not in used:
            return candidate
    raise AttestationUnavailable(f"no free NV index handle on {path}")  # pragma: no cover
