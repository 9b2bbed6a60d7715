"""nsm: a binding to the AWS Nitro Secure Module (libnsm or the /dev/nsm ioctl).

Standard library only; importable without the ``attested`` package and on machines
without libnsm (the library is loaded only when a device is opened)::

    import nsm

    with nsm.open_device() as device:
        document = device.get_attestation_document(nonce=nonce)

Every error raised on purpose is an :class:`NsmError`, with one subclass per NSM error
code (see :mod:`nsm.errors`). Arguments that are wrong before any call is made raise
:class:`TypeError` or :class:`ValueError`.
"""

from __future__ import annotations

from nsm.device import (
    BACKENDS,
    DEFAULT_DEVICE_PATH,
    NsmDevice,
    attestation_request_size,
    open_device,
)
from nsm.errors import (
    BufferTooSmall,
    DeviceOpenError,
    InputTooLarge,
    InternalError,
    InvalidArgument,
    InvalidIndex,
    InvalidOperation,
    InvalidResponse,
    LibraryNotFound,
    NsmError,
    ReadOnlyIndex,
)
from nsm.types import (
    REQUEST_MAX_SIZE,
    RESPONSE_MAX_SIZE,
    Description,
    Digest,
    ErrorCode,
    PcrInfo,
)

__all__ = [
    "BACKENDS",
    "BufferTooSmall",
    "DEFAULT_DEVICE_PATH",
    "Description",
    "DeviceOpenError",
    "Digest",
    "ErrorCode",
    "InputTooLarge",
    "InternalError",
    "InvalidArgument",
    "InvalidIndex",
    "InvalidOperation",
    "InvalidResponse",
    "LibraryNotFound",
    "NsmDevice",
    "NsmError",
    "PcrInfo",
    "REQUEST_MAX_SIZE",
    "RESPONSE_MAX_SIZE",
    "ReadOnlyIndex",
    "attestation_request_size",
    "open_device",
]
