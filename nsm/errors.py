"""Exceptions of the NSM binding: one class per NSM error code.

::

    NsmError                   .code: ErrorCode | None
    ├── InvalidArgument        INVALID_ARGUMENT
    ├── InvalidIndex           INVALID_INDEX (PCR index beyond the NSM's PCRs)
    ├── InvalidResponse        INVALID_RESPONSE (unexpected or malformed reply)
    ├── ReadOnlyIndex          READ_ONLY_INDEX (the PCR is locked)
    ├── InvalidOperation       INVALID_OPERATION
    ├── BufferTooSmall         BUFFER_TOO_SMALL (the answer did not fit our largest buffer)
    ├── InputTooLarge          INPUT_TOO_LARGE (request over 4096 bytes, ioctl EMSGSIZE)
    ├── InternalError          INTERNAL_ERROR (and OS errors from the ioctl)
    ├── LibraryNotFound        libnsm could not be loaded (code None)
    └── DeviceOpenError        the NSM device could not be opened (code None)

Arguments the binding can tell are wrong before calling the NSM (wrong type, an index
that does not fit ``uint16_t``, a request over 4096 bytes) raise :class:`TypeError` or
:class:`ValueError` instead: that is a bug in the caller, and retrying will not help.
"""

from __future__ import annotations

from typing import ClassVar

from nsm.types import ErrorCode

__all__ = [
    "BufferTooSmall",
    "DeviceOpenError",
    "InputTooLarge",
    "InternalError",
    "InvalidArgument",
    "InvalidIndex",
    "InvalidOperation",
    "InvalidResponse",
    "LibraryNotFound",
    "NsmError",
    "ReadOnlyIndex",
    "error_for_code",
]


class NsmError(Exception):
    """Base class of every error the NSM binding raises on purpose.

    Attributes:
        code: the NSM error code, or ``None`` for errors outside the NSM protocol
            (library or device missing).
    """

    code: ClassVar[ErrorCode | None] = None


class InvalidArgument(NsmError):
    """The NSM (or libnsm) refused an argument."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidIndex(NsmError):
    """The PCR index is beyond the NSM's PCRs (32 on Nitro)."""

    code = ErrorCode.INVALID_INDEX


class InvalidResponse(NsmError):
    """The NSM's reply was malformed or not the one the request asks for."""

    code = ErrorCode.INVALID_RESPONSE


class ReadOnlyIndex(NsmError):
    """The PCR is locked and cannot be extended."""

    code = ErrorCode.READ_ONLY_INDEX


class InvalidOperation(NsmError):
    """The NSM refused the operation."""

    code = ErrorCode.INVALID_OPERATION


class BufferTooSmall(NsmError):
    """The answer did not fit even the largest output buffer the binding allows."""

    code = ErrorCode.BUFFER_TOO_SMALL


class InputTooLarge(NsmError):
    """The request was too large for the NSM."""

    code = ErrorCode.INPUT_TOO_LARGE


class InternalError(NsmError):
    """The NSM or the driver failed (the OS error, if any, is the ``__cause__``)."""

    code = ErrorCode.INTERNAL_ERROR


class LibraryNotFound(NsmError):
    """libnsm could not be loaded.

    Attributes:
        tried: every location tried, in order, each with the loader's reason.
    """

    def __init__(self, message: str, *, tried: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tried = tried


class DeviceOpenError(NsmError):
    """The NSM device could not be opened (not inside an enclave, or no permission)."""


_BY_CODE: dict[ErrorCode, type[NsmError]] = {
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.INVALID_INDEX: InvalidIndex,
    ErrorCode.INVALID_RESPONSE: InvalidResponse,
    ErrorCode.READ_ONLY_INDEX: ReadOnlyIndex,
    ErrorCode.INVALID_OPERATION: InvalidOperation,
    ErrorCode.BUFFER_TOO_SMALL: BufferTooSmall,
    ErrorCode.INPUT_TOO_LARGE: InputTooLarge,
    ErrorCode.INTERNAL_ERROR: InternalError,
}


def error_for_code(code: ErrorCode, message: str) -> NsmError:
    """The exception for an NSM error code.

    Args:
        code: any code but ``SUCCESS``.
        message: what was being done, for the exception's text.

    Returns:
        An instance of the matching subclass (not raised).

    Raises:
        ValueError: ``code`` is ``SUCCESS``.
    """
    if code is ErrorCode.SUCCESS:
        raise ValueError("SUCCESS is not an error")
    return _BY_CODE[code](f"{message}: {code.name}")
