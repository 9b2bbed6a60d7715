"""The NSM through the kernel's ioctl on ``/dev/nsm``: no libnsm, and no ctypes.

The driver (mainline Linux >= 6.8 ``drivers/misc/nsm.c``, and AWS's older out-of-tree
module) takes one ioctl, ``NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw)``, where::

    struct nsm_iovec { __u64 addr; __u64 len; };
    struct nsm_raw   { struct nsm_iovec request; struct nsm_iovec response; };  /* 32 bytes */

The request is at most 4096 bytes of CBOR, the response buffer is 12288 bytes (what
libnsm passes), and on return the driver overwrites ``response.len`` with the length of
the reply, silently truncated to the buffer. An NSM-level error is a normal reply
(``{"Error": ...}``), not an ioctl failure.

Buffers are :class:`array.array` objects, whose address :meth:`array.array.buffer_info`
gives without ctypes; both arrays stay referenced by locals until the ioctl returns,
and neither is resized while the kernel holds its address. The ``_IOWR`` number uses
the generic Linux encoding, which is what x86_64 and aarch64 (the Nitro platforms) use.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import struct
from typing import Protocol

from nsm import _messages
from nsm._checks import request_fits
from nsm.errors import DeviceOpenError, InputTooLarge, InternalError, InvalidResponse
from nsm.types import RESPONSE_MAX_SIZE, Description

__all__ = [
    "IoctlTransport",
    "MessageBackend",
    "NSM_IOCTL_RAW",
    "Transport",
]

_IOC_WRITE = 1
_IOC_READ = 2
_NSM_MAGIC = 0x0A
_RAW = struct.Struct("=QQQQ")  # request.addr, request.len, response.addr, response.len


def _iowr(type_: int, number: int, size: int) -> int:
    return (_IOC_READ | _IOC_WRITE) << 30 | size << 16 | type_ << 8 | number


NSM_IOCTL_RAW = _iowr(_NSM_MAGIC, 0, _RAW.size)
"""``_IOWR(0x0A, 0, 32)`` = 0xC0200A00."""


class Transport(Protocol):
    """Moves one request to the NSM and brings its reply back."""

    def exchange(self, request: bytes) -> bytes:
        """Send ``request`` (CBOR) and return the reply (CBOR)."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class IoctlTransport:
    """An open NSM device file and its one ioctl."""

    def __init__(self, device_path: str) -> None:
        self.device_path = device_path
        try:
            self._fd = os.open(device_path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceOpenError(
                f"cannot open the NSM device {device_path!r}: {exc.strerror or exc} (is this "
                "running inside a Nitro enclave whose kernel has the nsm driver?)"
            ) from exc

    def exchange(self, request: bytes) -> bytes:
        """One ``NSM_IOCTL_RAW`` round trip.

        Raises:
            InputTooLarge: the driver refused the request's size (``EMSGSIZE``).
            InternalError: any other ioctl failure; the :class:`OSError` is the cause.
            InvalidResponse: the driver reported more bytes than the buffer holds.
        """
        request_buffer = array.array("B", request)
        response_buffer = array.array("B", bytes(RESPONSE_MAX_SIZE))
        request_address, _ = request_buffer.buffer_info()
        response_address, _ = response_buffer.buffer_info()
        raw = bytearray(
            _RAW.pack(request_address, len(request), response_address, RESPONSE_MAX_SIZE)
        )
        try:
            fcntl.ioctl(self._fd, NSM_IOCTL_RAW, raw, True)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise InputTooLarge(
                    f"the NSM driver refused a {len(request)}-byte request"
                ) from exc
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise InternalError(
                f"ioctl NSM_IOCTL_RAW on {self.device_path!r} failed with {name} "
                f"({exc.strerror}); is it an NSM device?"
            ) from exc
        *_, received = _RAW.unpack(raw)
        if received > RESPONSE_MAX_SIZE:
            raise InvalidResponse(f"the NSM driver reported a {received}-byte reply")
        return response_buffer[:received].tobytes()

    def close(self) -> None:
        """Close the device file."""
        os.close(self._fd)


class MessageBackend:
    """NSM operations as CBOR messages over a :class:`Transport`."""

    def __init__(self, transport: Transport, *, name: str = "ioctl") -> None:
        self._transport = transport
        self.name = name

    def _exchange(self, request: bytes, what: str) -> bytes:
        request_fits(len(request), what)
        return self._transport.exchange(request)

    def close(self) -> None:
        """Close the transport."""
        self._transport.close()

    def get_attestation_document(
        self, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
    ) -> bytes:
        """``Attestation``; ``None`` fields are sent as CBOR null."""
        request = _messages.attestation(user_data=user_data, nonce=nonce, public_key=public_key)
        return _messages.attestation_reply(self._exchange(request, "Attestation"))

    def get_random(self, count: int) -> bytes:
        """``GetRandom`` until ``count`` bytes are collected."""
        chunks = []
        remaining = count
        while remaining:
            chunk = _messages.get_random_reply(self._exchange(_messages.get_random(), "GetRandom"))
            if not chunk:
                raise InvalidResponse("NSM answered GetRandom with no bytes")
            chunks.append(chunk[:remaining])
            remaining -= len(chunks[-1])
        return b"".join(chunks)

    def describe(self) -> Description:
        """``DescribeNSM``."""
        reply = self._exchange(_messages.describe_nsm(), "DescribeNSM")
        return _messages.describe_nsm_reply(reply)

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        """``DescribePCR``: ``(locked, value)``."""
        reply = self._exchange(_messages.describe_pcr(index), "DescribePCR")
        return _messages.describe_pcr_reply(reply)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """``ExtendPCR``: the new value."""
        reply = self._exchange(_messages.extend_pcr(index, data), "ExtendPCR")
        return _messages.extend_pcr_reply(reply)

    def lock_pcr(self, index: int) -> None:
        """``LockPCR``."""
        _messages.lock_reply(self._exchange(_messages.lock_pcr(index), "LockPCR"), "LockPCR")

    def lock_pcrs(self, range_: int) -> None:
        """``LockPCRs``: lock ``[0, range_)``."""
        _messages.lock_reply(self._exchange(_messages.lock_pcrs(range_), "LockPCRs"), "LockPCRs")
