"""A C stand-in for libnsm, compiled during the test run, and a handle to steer it."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("libnsm_stub.c")

__all__ = ["SOURCE", "Stub", "StubUnavailable", "build_stub"]


class StubUnavailable(RuntimeError):
    """The stub cannot be built here (no C compiler)."""


def build_stub(out_dir: Path) -> Path:
    """Compile the stub into ``out_dir/libnsm.so.0`` and return its path.

    It gets no DT_SONAME on purpose: with one, every later ``dlopen("libnsm.so.0")`` in
    the test process would find the stub already loaded, and tests of the search for a
    real libnsm would pass or fail depending on test order.

    Raises:
        StubUnavailable: no ``cc`` on PATH.
        subprocess.CalledProcessError: the compiler failed (a bug in the stub).
    """
    compiler = shutil.which("cc")
    if compiler is None:
        raise StubUnavailable("no C compiler (cc) on PATH to build the libnsm stand-in")
    target = out_dir / "libnsm.so.0"
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(target),
            str(SOURCE),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


class Stub:
    """The stub's control functions (``stub_*``), loaded from the same shared object.

    dlopen returns the same handle for the same path, so this sees the very state
    that nsm/_lib.py's calls change.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        lib = self._lib
        lib.stub_set_document.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.stub_set_module_id.argtypes = [ctypes.c_char_p]
        lib.stub_set_pcr.argtypes = [ctypes.c_uint16, ctypes.c_char_p]
        lib.stub_set_locked_len_override.argtypes = [ctypes.c_int64]
        lib.stub_attestation_capacity.restype = ctypes.c_uint32
        lib.stub_field.argtypes = [
            ctypes.c_int32,
            ctypes.POINTER(ctypes.c_int32),
            ctypes.POINTER(ctypes.c_uint32),
            ctypes.c_char_p,
        ]

    def reset(self) -> None:
        self._lib.stub_reset()

    def set_init_result(self, fd: int) -> None:
        self._lib.stub_set_init_result(fd)

    def fail_next(self, code: int) -> None:
        """The next NSM call returns ``code`` (whatever it is)."""
        self._lib.stub_fail_next(code)

    def set_document(self, document: bytes) -> None:
        self._lib.stub_set_document(document, len(document))

    def set_module_id(self, module_id: bytes) -> None:
        self._lib.stub_set_module_id(module_id)

    def set_digest(self, value: int) -> None:
        self._lib.stub_set_digest(value)

    def set_pcr(self, index: int, value: bytes) -> None:
        assert len(value) == 48
        self._lib.stub_set_pcr(index, value)

    def set_locked_len_override(self, value: int) -> None:
        self._lib.stub_set_locked_len_override(value)

    def set_pcr_report_size(self, size: int) -> None:
        self._lib.stub_set_pcr_report_size(size)

    def set_random_chunk(self, size: int) -> None:
        self._lib.stub_set_random_chunk(size)

    def extend_calls(self) -> int:
        return int(self._lib.stub_extend_calls())

    def exit_calls(self) -> int:
        return int(self._lib.stub_exit_calls())

    def exit_fd(self) -> int:
        return int(self._lib.stub_exit_fd())

    def attestation_capacities(self) -> list[int]:
        """The output capacity libnsm was given, for each attestation call since reset."""
        count = self._lib.stub_attestation_calls()
        return [self._lib.stub_attestation_capacity(i) for i in range(count)]

    def field(self, which: str) -> bytes | None:
        """What the last attestation call received for a field: ``None`` for NULL."""
        index = {"user_data": 0, "nonce": 1, "public_key": 2}[which]
        was_null = ctypes.c_int32()
        length = ctypes.c_uint32()
        data = ctypes.create_string_buffer(4096)
        seen = self._lib.stub_field(index, ctypes.byref(was_null), ctypes.byref(length), data)
        assert seen, "no attestation call was made"
        return None if was_null.value else data.raw[: length.value]
