"""The C boundary: the only module that imports :mod:`ctypes`.

It declares libnsm's ABI (aws-nitro-enclaves-nsm-api ``nsm-lib/src/lib.rs``, v0.5.1),
finds and loads the library lazily, and implements the libnsm backend of
:class:`nsm.NsmDevice` on top of it. Importing this module does not load libnsm.

Where the library is looked for, in order:

1. ``$NSM_LIB_PATH``, if set (and then nowhere else: an explicit setting that does not
   work is an error, never a silent fallback);
2. the soname ``libnsm.so.0`` (what ``make install`` of nsm-lib installs), through the
   dynamic loader's usual search;
3. whatever :func:`ctypes.util.find_library` finds for ``nsm``.

libnsm's output-buffer rule (``nsm_get_raw_from_vec``): it copies ``min(capacity,
size)`` bytes, and when the output did not fit it returns ``BUFFER_TOO_SMALL`` *without*
saying how much room was needed. Attestation documents are therefore asked for with an
8 KiB buffer and retried once with 16 KiB (a document can never exceed the NSM's 12288
byte response). ``nsm_extend_pcr`` is never retried: the extension has already happened
when the copy fails, and a retry would extend the PCR a second time.

ctypes buffers are locals of the function that makes the call, referenced until the
call returns; nothing is freed behind libnsm's back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import Any

from nsm.errors import (
    BufferTooSmall,
    DeviceOpenError,
    InvalidResponse,
    LibraryNotFound,
    error_for_code,
)
from nsm.types import Description, Digest, ErrorCode

__all__ = [
    "ENV_VAR",
    "LibnsmBackend",
    "Library",
    "SONAME",
    "load_library",
]

ENV_VAR = "NSM_LIB_PATH"
SONAME = "libnsm.so.0"

# Output buffers (see the module docstring).
ATTESTATION_BUFFER = 8192
ATTESTATION_BUFFER_MAX = 16384
PCR_BUFFER = 64  # the largest digest the NSM knows (SHA-512)
RANDOM_CHUNK = 4096

# cbindgen maps Rust's usize to uintptr_t (usize_is_size_t is not set).
_c_uintptr = ctypes.c_uint64 if ctypes.sizeof(ctypes.c_void_p) == 8 else ctypes.c_uint32
_u8_p = ctypes.POINTER(ctypes.c_uint8)
_u32_p = ctypes.POINTER(ctypes.c_uint32)
_c_error_code = ctypes.c_int  # a #[repr(C)] enum is a C int


class _NsmDescription(ctypes.Structure):
    """``NsmDescription`` as cbindgen emits it (``#[repr(C)]``)."""

    _fields_ = (
        ("version_major", ctypes.c_uint16),
        ("version_minor", ctypes.c_uint16),
        ("version_patch", ctypes.c_uint16),
        ("module_id", ctypes.c_uint8 * 100),
        ("module_id_len", ctypes.c_uint32),
        ("max_pcrs", ctypes.c_uint16),
        ("locked_pcrs", ctypes.c_uint16 * 64),
        ("locked_pcrs_len", ctypes.c_uint32),
        ("digest", ctypes.c_int),
    )


DESCRIPTION_SIZE = 252
DESCRIPTION_OFFSETS = {
    "version_major": 0,
    "version_minor": 2,
    "version_patch": 4,
    "module_id": 6,
    "module_id_len": 108,
    "max_pcrs": 112,
    "locked_pcrs": 114,
    "locked_pcrs_len": 244,
    "digest": 248,
}


def _check_layout() -> None:
    offsets = {name: getattr(_NsmDescription, name).offset for name in DESCRIPTION_OFFSETS}
    if ctypes.sizeof(_NsmDescription) != DESCRIPTION_SIZE or offsets != DESCRIPTION_OFFSETS:
        raise ImportError(
            "nsm: this platform lays out NsmDescription differently from libnsm's ABI "
            f"(size {ctypes.sizeof(_NsmDescription)}, offsets {offsets}); refusing to load"
        )


_check_layout()

# name -> (argtypes, restype), exactly as nsm.h declares them.
_PROTOTYPES: dict[str, tuple[list[Any], Any]] = {
    "nsm_lib_init": ([], ctypes.c_int32),
    "nsm_lib_exit": ([ctypes.c_int32], None),
    "nsm_extend_pcr": (
        [ctypes.c_int32, ctypes.c_uint16, _u8_p, ctypes.c_uint32, _u8_p, _u32_p],
        _c_error_code,
    ),
    "nsm_describe_pcr": (
        [ctypes.c_int32, ctypes.c_uint16, ctypes.POINTER(ctypes.c_bool), _u8_p, _u32_p],
        _c_error_code,
    ),
    "nsm_lock_pcr": ([ctypes.c_int32, ctypes.c_uint16], _c_error_code),
    "nsm_lock_pcrs": ([ctypes.c_int32, ctypes.c_uint16], _c_error_code),
    "nsm_get_description": (
        [ctypes.c_int32, ctypes.POINTER(_NsmDescription)],
        _c_error_code,
    ),
    "nsm_get_attestation_doc": (
        [
            ctypes.c_int32,
            _u8_p,  # user_data (NULL: absent)
            ctypes.c_uint32,
            _u8_p,  # nonce (NULL: absent)
            ctypes.c_uint32,
            _u8_p,  # public_key (NULL: absent)
            ctypes.c_uint32,
            _u8_p,  # att_doc_data (out)
            _u32_p,  # att_doc_len (in: capacity, out: bytes copied)
        ],
        _c_error_code,
    ),
    "nsm_get_random": ([ctypes.c_int32, _u8_p, ctypes.POINTER(_c_uintptr)], _c_error_code),
}


class Library:
    """A loaded libnsm with every prototype declared.

    Attributes:
        path: what was passed to the loader.
    """

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path
        missing = [name for name in _PROTOTYPES if not hasattr(cdll, name)]
        if missing:
            raise LibraryNotFound(
                f"{path} is not libnsm: it lacks {', '.join(missing)}",
                tried=(f"{path}: missing {', '.join(missing)}",),
            )
        for name, (argtypes, restype) in _PROTOTYPES.items():
            function = getattr(cdll, name)
            function.argtypes = argtypes
            function.restype = restype
        self.nsm_lib_init: Callable[[], int] = cdll.nsm_lib_init
        self.nsm_lib_exit: Callable[[int], None] = cdll.nsm_lib_exit
        self.nsm_extend_pcr: Callable[..., int] = cdll.nsm_extend_pcr
        self.nsm_describe_pcr: Callable[..., int] = cdll.nsm_describe_pcr
        self.nsm_lock_pcr: Callable[[int, int], int] = cdll.nsm_lock_pcr
        self.nsm_lock_pcrs: Callable[[int, int], int] = cdll.nsm_lock_pcrs
        self.nsm_get_description: Callable[..., int] = cdll.nsm_get_description
        self.nsm_get_attestation_doc: Callable[..., int] = cdll.nsm_get_attestation_doc
        self.nsm_get_random: Callable[..., int] = cdll.nsm_get_random


_load_lock = threading.Lock()
_loaded: dict[str | None, Library | LibraryNotFound] = {}


def load_library() -> Library:
    """Load libnsm once per value of ``$NSM_LIB_PATH`` (thread-safe).

    Returns:
        The library, with its prototypes declared.

    Raises:
        LibraryNotFound: no candidate could be loaded; ``tried`` lists each with its
            reason. The failure is remembered, so later calls fail fast.
    """
    configured = os.environ.get(ENV_VAR) or None
    with _load_lock:
        result = _loaded.get(configured)
        if result is None:
            try:
                result = _load(configured)
            except LibraryNotFound as exc:
                result = exc
            _loaded[configured] = result
    if isinstance(result, LibraryNotFound):
        raise LibraryNotFound(str(result), tried=result.tried)
    return result


def _load(configured: str | None) -> Library:
    tried: list[str] = []

    def attempt(candidate: str) -> Library | None:
        try:
            return Library(ctypes.CDLL(candidate), candidate)
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
        except LibraryNotFound as exc:
            tried.extend(exc.tried)
        return None

    if configured is not None:
        library = attempt(configured)
    else:
        library = attempt(SONAME)
        if library is None:
            # Asked only once the soname failed: find_library may run ldconfig.
            found = ctypes.util.find_library("nsm")
            if found is None:
                tried.append("ctypes.util.find_library('nsm'): nothing found")
            elif found != SONAME:
                library = attempt(found)
    if library is not None:
        return library
    if configured is not None:
        hint = f"check ${ENV_VAR} ({configured!r})"
    else:
        hint = (
            "install libnsm (aws-nitro-enclaves-nsm-api, nsm-lib) in the enclave image, "
            f"set ${ENV_VAR} to its path, or use the 'ioctl' backend, which needs no library"
        )
    raise LibraryNotFound(
        f"libnsm could not be loaded ({'; '.join(tried)}); {hint}", tried=tuple(tried)
    )


def _check(code: int, what: str) -> None:
    if code == ErrorCode.SUCCESS:
        return
    try:
        error = ErrorCode(code)
    except ValueError:
        raise InvalidResponse(f"libnsm {what}: unknown error code {code}") from None
    raise error_for_code(error, f"libnsm {what}")


def _input(data: bytes | None) -> ctypes.Array[ctypes.c_uint8] | None:
    """A buffer holding ``data`` (never NULL, even when empty), or ``None`` for NULL."""
    if data is None:
        return None
    # One spare byte so that b"" still gets a real, non-NULL pointer: libnsm reads
    # NULL as "field absent" and a non-NULL pointer with length 0 as "empty".
    return (ctypes.c_uint8 * (len(data) + 1)).from_buffer_copy(data + b"\0")


class LibnsmBackend:
    """The NSM through libnsm. Owns the file descriptor ``nsm_lib_init`` returns.

    Not thread-safe on its own: :class:`nsm.NsmDevice` serialises calls.
    """

    name = "libnsm"

    def __init__(self, library: Library | None = None) -> None:
        self._lib = library if library is not None else load_library()
        fd = self._lib.nsm_lib_init()
        if fd < 0:
            raise DeviceOpenError(
                f"nsm_lib_init() could not open the NSM device (returned {fd}): is this "
                "running inside a Nitro enclave, with /dev/nsm present?"
            )
        self._fd = fd

    def close(self) -> None:
        """Close the device (``nsm_lib_exit``)."""
        self._lib.nsm_lib_exit(self._fd)

    def _output(
        self,
        what: str,
        call: Callable[[ctypes.Array[ctypes.c_uint8], Any], int],
        size: int,
        max_size: int,
    ) -> bytes:
        """Call with an output buffer, retrying with a larger one while it is too small."""
        while True:
            buffer = (ctypes.c_uint8 * size)()
            length = ctypes.c_uint32(size)
            code = call(buffer, ctypes.byref(length))
            if code == ErrorCode.BUFFER_TOO_SMALL:
                if size < max_size:
                    size = min(size * 2, max_size)
                    continue
                raise BufferTooSmall(f"libnsm {what}: the answer did not fit {size} bytes")
            _check(code, what)
            if length.value > size:
                raise InvalidResponse(f"libnsm {what}: reported {length.value} bytes in {size}")
            return ctypes.string_at(buffer, length.value)

    def get_attestation_document(
        self, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
    ) -> bytes:
        """``nsm_get_attestation_doc``; ``None`` becomes a NULL pointer."""
        user_buf, nonce_buf, key_buf = _input(user_data), _input(nonce), _input(public_key)
        return self._output(
            "nsm_get_attestation_doc",
            lambda out, out_len: self._lib.nsm_get_attestation_doc(
                self._fd,
                user_buf,
                0 if user_data is None else len(user_data),
                nonce_buf,
                0 if nonce is None else len(nonce),
                key_buf,
                0 if public_key is None else len(public_key),
                out,
                out_len,
            ),
            ATTESTATION_BUFFER,
            ATTESTATION_BUFFER_MAX,
        )

    def get_random(self, count: int) -> bytes:
        """``nsm_get_random`` until ``count`` bytes are collected (each call gives <= 256)."""
        chunks = []
        remaining = count
        while remaining:
            size = min(remaining, RANDOM_CHUNK)
            buffer = (ctypes.c_uint8 * size)()
            length = _c_uintptr(size)
            _check(
                self._lib.nsm_get_random(self._fd, buffer, ctypes.byref(length)), "nsm_get_random"
            )
            if not 0 < length.value <= size:
                raise InvalidResponse(f"libnsm nsm_get_random: returned {length.value} bytes")
            chunks.append(ctypes.string_at(buffer, length.value))
            remaining -= length.value
        return b"".join(chunks)

    def describe(self) -> Description:
        """``nsm_get_description``."""
        raw = _NsmDescription()
        _check(self._lib.nsm_get_description(self._fd, ctypes.byref(raw)), "nsm_get_description")
        if raw.module_id_len >= len(raw.module_id) or raw.locked_pcrs_len > len(raw.locked_pcrs):
            raise InvalidResponse("libnsm nsm_get_description: lengths beyond the arrays")
        try:
            module_id = bytes(raw.module_id[: raw.module_id_len]).decode("utf-8")
            digest = Digest(raw.digest)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidResponse(f"libnsm nsm_get_description: {exc}") from exc
        return Description(
            version=(raw.version_major, raw.version_minor, raw.version_patch),
            module_id=module_id,
            max_pcrs=raw.max_pcrs,
            locked_pcrs=tuple(raw.locked_pcrs[: raw.locked_pcrs_len]),
            digest=digest,
        )

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        """``nsm_describe_pcr``: ``(locked, value)``."""
        lock = ctypes.c_bool(False)
        value = self._output(
            "nsm_describe_pcr",
            lambda out, out_len: self._lib.nsm_describe_pcr(
                self._fd, index, ctypes.byref(lock), out, out_len
            ),
            PCR_BUFFER,
            PCR_BUFFER,
        )
        return lock.value, value

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """``nsm_extend_pcr``: the new value. Never retried (see the module docstring)."""
        data_buf = _input(data)
        try:
            return self._output(
                "nsm_extend_pcr",
                lambda out, out_len: self._lib.nsm_extend_pcr(
                    self._fd, index, data_buf, len(data), out, out_len
                ),
                PCR_BUFFER,
                PCR_BUFFER,
            )
        except BufferTooSmall as exc:
            raise BufferTooSmall(
                f"PCR{index} was extended, but its new value did not fit {PCR_BUFFER} bytes"
            ) from exc

    def lock_pcr(self, index: int) -> None:
        """``nsm_lock_pcr``."""
        _check(self._lib.nsm_lock_pcr(self._fd, index), "nsm_lock_pcr")

    def lock_pcrs(self, range_: int) -> None:
        """``nsm_lock_pcrs``: lock ``[0, range_)``."""
        _check(self._lib.nsm_lock_pcrs(self._fd, range_), "nsm_lock_pcrs")
