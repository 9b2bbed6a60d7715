"""The TPM character device: one command written, one whole response read, with a deadline.

:class:`TpmDevice` opens the path (``/dev/tpm0`` by default) ``O_RDWR | O_CLOEXEC |
O_NOCTTY``, writes a command, waits with ``poll`` for the response and reads it until the
size its header announces has arrived (the Linux driver hands it over in one read; other
character devices may need several), refusing a header that announces more than
:data:`~attested.nitrotpm._tpm2.MAX_RESPONSE_SIZE`. A lock keeps to one transaction at a
time. What the commands mean is :mod:`attested.nitrotpm._tpm2`'s business; what to send,
:mod:`attested.nitrotpm._native`'s.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from typing import Self

from attested.errors import AttestationUnavailable, MalformedError
from attested.nitrotpm import _tpm2

__all__ = ["DeviceTimeout", "TpmDevice"]


class DeviceTimeout(AttestationUnavailable):
    """The device did not answer a command in time (internal: the provider re-raises)."""


_PERMISSION_HINT = (
    "the TPM device is readable and writable by root and, on most distributions, the "
    "'tss' group: run as root or add the service's user to that group"
)


class TpmDevice:
    """An open TPM character device.

    Args:
        path: the device (``/dev/tpm0``: the AWS vendor command is sent to the TPM
            directly, not through the kernel's resource manager at ``/dev/tpmrm0``).
        timeout: seconds to wait for each response.

    Raises:
        AttestationUnavailable: the device cannot be opened (the message says why and,
            for a permission error, what to change).
    """

    def __init__(self, path: str, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise AttestationUnavailable(_open_error(path, exc)) from exc

    def transact(self, command: bytes) -> bytes:
        """Send one command and return its whole response (not checked beyond its size).

        Raises:
            DeviceTimeout: no whole response within ``timeout`` seconds.
            MalformedError: the response header announces an impossible size.
            AttestationUnavailable: a read or write failed, or the device is closed.
        """
        with self._lock:
            fd = self._fd
            if fd is None:
                raise AttestationUnavailable(f"the TPM device {self.path} is closed")
            deadline = time.monotonic() + self.timeout
            name = _tpm2.command_name(command)
            try:
                self._write(fd, command, deadline, name)
                return self._read(fd, deadline, name)
            except OSError as exc:
                raise AttestationUnavailable(
                    f"{name} on {self.path} failed: {os.strerror(exc.errno or errno.EIO)}"
                ) from exc

    def _write(self, fd: int, command: bytes, deadline: float, name: str) -> None:
        view = memoryview(command)
        while view:
            self._wait(fd, select.POLLOUT, deadline, name)
            written = os.write(fd, view)
            view = view[written:]

    def _read(self, fd: int, deadline: float, name: str) -> bytes:
        response = b""
        expected = _tpm2.HEADER_SIZE
        while len(response) < expected:
            self._wait(fd, select.POLLIN, deadline, name)
            chunk = os.read(fd, _tpm2.MAX_RESPONSE_SIZE - len(response))
            if not chunk:
                raise MalformedError(
                    f"{name}: {self.path} ended the response after {len(response)} bytes"
                )
            response += chunk
            if expected == _tpm2.HEADER_SIZE and len(response) >= _tpm2.HEADER_SIZE:
                expected = _tpm2.parse_header(response).size
        if len(response) > expected:
            raise MalformedError(
                f"{name}: {self.path} sent {len(response)} bytes for a {expected}-byte response"
            )
        return response

    def _wait(self, fd: int, event: int, deadline: float, name: str) -> None:
        poller = select.poll()
        poller.register(fd, event)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceTimeout(f"{name}: {self.path} did not answer within {self.timeout:g} s")
            ready = poller.poll(max(1, int(left * 1000)))
            if any(flags & (select.POLLERR | select.POLLNVAL) for _, flags in ready):
                raise AttestationUnavailable(f"{name}: {self.path} reported an error")
            if any(flags & (event | select.POLLHUP) for _, flags in ready):
                return

    def close(self) -> None:
        """Close the device. Closing twice is harmless."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"<TpmDevice {self.path!r} {state}>"


def _open_error(path: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open the TPM device {path}: {reason}; {_PERMISSION_HINT}"
    if exc.errno == errno.EBUSY:
        return (
            f"cannot open the TPM device {path}: {reason}; another process holds it "
            "(only one may open /dev/tpm0 at a time: tpm2-abrmd, another nitro-tpm-attest)"
        )
    if exc.errno == errno.ENOENT:
        return (
            f"no TPM device at {path}: is this an EC2 instance with NitroTPM enabled "
            "(an AMI registered with --tpm-support v2.0)?"
        )
    return f"cannot open the TPM device {path}: {reason}"
