"""The libnsm backend: nsm/_lib.py's real ctypes calls into the compiled stand-in."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import cbor2
import pytest

import nsm
from attested import pcr
from nsm import _lib
from nsm.errors import (
    BufferTooSmall,
    DeviceOpenError,
    InternalError,
    InvalidIndex,
    InvalidOperation,
    InvalidResponse,
    LibraryNotFound,
    NsmError,
    ReadOnlyIndex,
)
from nsm.types import REQUEST_MAX_SIZE, Digest, ErrorCode

ERROR_CODES = [c for c in ErrorCode if c is not ErrorCode.SUCCESS]


# -- NsmDescription layout -------------------------------------------------------------


def test_description_struct_matches_the_abi() -> None:
    # Values from the research notes (nsm-lib v0.5.1, x86_64/aarch64); the stub's C
    # _Static_asserts check the same numbers from the compiler's side.
    struct = _lib._NsmDescription
    assert ctypes.sizeof(struct) == 252
    assert ctypes.alignment(struct) == 4
    offsets = {name: getattr(struct, name).offset for name, _ in struct._fields_}
    assert offsets == {
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


def test_describe_reads_every_field_the_library_filled(device, stub) -> None:
    description = device.describe()
    assert description == nsm.Description(
        version=(1, 2, 3),
        module_id="i-0stub0000000000000-enc0000000000000001",
        max_pcrs=32,
        locked_pcrs=tuple(range(16)),
        digest=Digest.SHA384,
    )
    device.lock_pcr(20)
    stub.set_digest(Digest.SHA512)
    description = device.describe()
    assert description.locked_pcrs == (*range(16), 20)
    assert description.digest is Digest.SHA512


def test_describe_reads_a_module_id_truncated_to_99_bytes(device, stub) -> None:
    stub.set_module_id(b"m" * 120)
    assert device.describe().module_id == "m" * 99


@pytest.mark.parametrize(
    "break_it",
    [
        lambda stub: stub.set_digest(7),
        lambda stub: stub.set_locked_len_override(65),
        lambda stub: stub.set_module_id(b"\xff\xfe"),
    ],
    ids=["unknown digest", "locked_pcrs_len beyond the array", "module id not UTF-8"],
)
def test_describe_refuses_values_outside_the_struct(device, stub, break_it) -> None:
    break_it(stub)
    with pytest.raises(InvalidResponse):
        device.describe()


# -- attestation: NULL versus empty, field order, output buffer ------------------------


@pytest.mark.parametrize("field", ["user_data", "nonce", "public_key"])
def test_none_is_a_null_pointer_and_empty_is_not(device, stub, field) -> None:
    device.get_attestation_document(**{field: None})
    assert stub.field(field) is None
    device.get_attestation_document(**{field: b""})
    assert stub.field(field) == b""
    device.get_attestation_document(**{field: bytearray(b"\x00\x01")})
    assert stub.field(field) == b"\x00\x01"


def test_fields_reach_the_library_in_its_order(device, stub) -> None:
    stub.set_document(b"\x84document")
    document = device.get_attestation_document(
        public_key=b"P" * 1000, nonce=b"N" * 40, user_data=b"U" * 512
    )
    assert document == b"\x84document"
    assert stub.field("user_data") == b"U" * 512
    assert stub.field("nonce") == b"N" * 40
    assert stub.field("public_key") == b"P" * 1000


def test_fields_are_keyword_only(device) -> None:
    with pytest.raises(TypeError):
        device.get_attestation_document(b"user data")


@pytest.mark.parametrize(
    ("size", "capacities"),
    [
        (0, [8192]),
        (4700, [8192]),
        (8192, [8192]),
        (8193, [8192, 16384]),
        (12262, [8192, 16384]),
        (16384, [8192, 16384]),
    ],
)
def test_a_document_too_big_for_the_buffer_is_fetched_again(device, stub, size, capacities):
    document = bytes(i % 251 for i in range(size))
    stub.set_document(document)
    assert device.get_attestation_document(nonce=b"n") == document
    assert stub.attestation_capacities() == capacities


def test_a_document_too_big_for_the_largest_buffer_is_an_error(device, stub) -> None:
    stub.set_document(b"\x00" * 16385)
    with pytest.raises(BufferTooSmall):
        device.get_attestation_document()
    assert stub.attestation_capacities() == [8192, 16384]


def test_request_size_is_checked_exactly_before_the_call(device, stub) -> None:
    def request(user_data: bytes) -> bytes:
        return cbor2.dumps(
            {"Attestation": {"user_data": user_data, "nonce": None, "public_key": None}}
        )

    largest = REQUEST_MAX_SIZE - len(request(b"")) - 2  # a 2-byte head past 23 bytes
    assert len(request(b"x" * largest)) == REQUEST_MAX_SIZE
    assert nsm.attestation_request_size(user_data=b"x" * largest) == REQUEST_MAX_SIZE
    device.get_attestation_document(user_data=b"x" * largest)
    assert stub.field("user_data") == b"x" * largest
    with pytest.raises(ValueError, match="4097 bytes"):
        device.get_attestation_document(user_data=b"x" * (largest + 1))
    assert len(stub.attestation_capacities()) == 1  # the refused one never reached libnsm


@pytest.mark.parametrize(
    "fields",
    [{"user_data": "text"}, {"nonce": 5}, {"public_key": [1, 2]}],
)
def test_fields_must_be_bytes(device, fields) -> None:
    with pytest.raises(TypeError):
        device.get_attestation_document(**fields)


# -- error codes -----------------------------------------------------------------------


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
def test_every_error_code_raises_its_own_class(device, stub, code) -> None:
    stub.fail_next(code)
    with pytest.raises(NsmError) as raised:
        device.lock_pcr(20)
    assert type(raised.value) is nsm.errors._BY_CODE[code]
    assert raised.value.code is code
    device.lock_pcr(20)  # the stub failed once only


def test_each_error_class_is_distinct_and_exported() -> None:
    classes = [nsm.errors._BY_CODE[c] for c in ERROR_CODES]
    assert len(set(classes)) == len(ERROR_CODES)
    assert all(getattr(nsm, cls.__name__) is cls for cls in classes)


OPERATIONS = {
    "attestation": lambda d: d.get_attestation_document(),
    "random": lambda d: d.get_random(8),
    "describe": lambda d: d.describe(),
    "describe_pcr": lambda d: d.describe_pcr(1),
    "extend_pcr": lambda d: d.extend_pcr(16, b"x"),
    "lock_pcr": lambda d: d.lock_pcr(16),
    "lock_pcrs": lambda d: d.lock_pcrs(16),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_every_function_checks_its_result(device, stub, operation) -> None:
    stub.fail_next(ErrorCode.INVALID_OPERATION)
    with pytest.raises(InvalidOperation):
        operation(device)


def test_an_unknown_result_code_is_an_invalid_response(device, stub) -> None:
    stub.fail_next(42)
    with pytest.raises(InvalidResponse, match="42"):
        device.lock_pcr(16)


def test_buffer_too_small_from_attestation_is_retried(device, stub) -> None:
    stub.set_document(b"doc")
    stub.fail_next(ErrorCode.BUFFER_TOO_SMALL)
    assert device.get_attestation_document() == b"doc"
    assert stub.attestation_capacities() == [8192, 16384]


# -- PCRs ------------------------------------------------------------------------------


def test_extend_hashes_the_old_value_and_the_raw_data(device) -> None:
    expected = pcr.ZERO
    for data in (b"", b"a", bytes(range(256)) * 15):
        expected = pcr.extend(expected, data)
        assert device.extend_pcr(16, data) == expected
    info = device.describe_pcr(16)
    assert info == nsm.PcrInfo(index=16, locked=False, value=expected)


def test_describe_pcr_reads_the_value_and_the_lock(device, stub) -> None:
    stub.set_pcr(3, b"\x33" * 48)
    assert device.describe_pcr(3) == nsm.PcrInfo(index=3, locked=True, value=b"\x33" * 48)


def test_locked_pcrs_are_read_only(device) -> None:
    with pytest.raises(ReadOnlyIndex):
        device.extend_pcr(15, b"x")
    device.extend_pcr(17, b"x")
    device.lock_pcr(17)
    assert device.describe_pcr(17).locked
    with pytest.raises(ReadOnlyIndex):
        device.extend_pcr(17, b"x")


def test_lock_pcrs_locks_a_prefix(device) -> None:
    device.lock_pcrs(20)
    assert device.describe().locked_pcrs == tuple(range(20))
    assert not device.describe_pcr(20).locked
    with pytest.raises(InvalidIndex):
        device.lock_pcrs(33)


@pytest.mark.parametrize(
    "operation",
    [
        lambda d: d.describe_pcr(32),
        lambda d: d.extend_pcr(40, b""),
        lambda d: d.lock_pcr(65535),
    ],
)
def test_indexes_beyond_the_nsm_are_its_invalid_index(device, operation) -> None:
    with pytest.raises(InvalidIndex):
        operation(device)


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda d: d.describe_pcr(65536), ValueError),
        (lambda d: d.extend_pcr(-1, b""), ValueError),
        (lambda d: d.lock_pcr(True), TypeError),
        (lambda d: d.lock_pcrs("3"), TypeError),
        (lambda d: d.extend_pcr(16, "text"), TypeError),
        (lambda d: d.extend_pcr(16, b"x" * 4096), ValueError),
        (lambda d: d.get_random(-1), ValueError),
        (lambda d: d.get_random(1.0), TypeError),
    ],
)
def test_arguments_the_abi_cannot_carry_are_refused_before_the_call(
    device, stub, operation, error
) -> None:
    stub.fail_next(ErrorCode.INTERNAL_ERROR)  # consumed by the first call that is made
    with pytest.raises(error):
        operation(device)
    with pytest.raises(InternalError):
        device.lock_pcr(16)  # so the refused operation made no call


def test_extend_is_never_retried_when_the_value_does_not_fit(device, stub) -> None:
    stub.set_pcr_report_size(65)
    with pytest.raises(BufferTooSmall, match="was extended"):
        device.extend_pcr(16, b"once")
    assert stub.extend_calls() == 1
    stub.set_pcr_report_size(48)
    assert device.describe_pcr(16).value == pcr.extend(pcr.ZERO, b"once")


# -- random ----------------------------------------------------------------------------


def test_get_random_collects_across_calls(device, stub) -> None:
    assert device.get_random(600) == bytes(i % 256 for i in range(600))  # 256 + 256 + 88
    assert device.get_random(0) == b""


def test_get_random_stops_when_the_library_returns_nothing(device, stub) -> None:
    stub.set_random_chunk(0)
    with pytest.raises(InvalidResponse):
        device.get_random(10)


# -- lifecycle and loading -------------------------------------------------------------


def test_close_is_idempotent_and_closes_the_fd_once(stub) -> None:
    device = nsm.open_device(backend="libnsm")
    assert device.backend == "libnsm"
    assert "open" in repr(device)
    device.close()
    device.close()
    assert device.closed
    assert stub.exit_calls() == 1
    assert stub.exit_fd() == 7
    with pytest.raises(ValueError, match="closed"):
        device.describe()


def test_context_manager_closes(stub) -> None:
    with nsm.NsmDevice(backend="libnsm") as device:
        device.describe()
    assert device.closed
    assert stub.exit_calls() == 1


def test_auto_prefers_libnsm(stub) -> None:
    with nsm.open_device() as device:
        assert device.backend == "libnsm"


def test_init_failure_is_a_device_open_error(stub) -> None:
    stub.set_init_result(-1)
    with pytest.raises(DeviceOpenError, match="Nitro enclave"):
        nsm.open_device(backend="libnsm")
    assert stub.exit_calls() == 0


def test_an_explicit_library_path_that_fails_is_not_silently_replaced(
    tmp_path, monkeypatch
) -> None:
    missing = tmp_path / "libnsm.so.0"
    monkeypatch.setenv("NSM_LIB_PATH", str(missing))
    for backend in ("libnsm", "auto"):
        with pytest.raises(LibraryNotFound) as raised:
            nsm.open_device(backend=backend)
        assert raised.value.tried[0].startswith(str(missing))
        assert "NSM_LIB_PATH" in str(raised.value)


def test_a_library_without_the_nsm_functions_is_refused(monkeypatch) -> None:
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no libc found to load")
    monkeypatch.setenv("NSM_LIB_PATH", libc)
    with pytest.raises(LibraryNotFound, match="nsm_lib_init"):
        nsm.open_device(backend="libnsm")


def test_without_configuration_the_soname_then_find_library_are_tried() -> None:
    try:
        ctypes.CDLL(_lib.SONAME)
    except OSError:
        pass
    else:
        pytest.skip("this machine has a real libnsm")
    with pytest.raises(LibraryNotFound) as raised:
        nsm.open_device(backend="libnsm")
    tried = raised.value.tried
    assert tried[0].startswith("libnsm.so.0: ")
    found = ctypes.util.find_library("nsm")
    if found is None:
        assert tried[1:] == ("ctypes.util.find_library('nsm'): nothing found",)
    else:
        assert tried[1].startswith(found)
    assert "ioctl" in str(raised.value)  # the message names the alternative


def test_loading_is_shared_between_threads(stub) -> None:
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(_lib.load_library())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_one_device_can_be_shared_between_threads(device) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                device.extend_pcr(18, b"x")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    expected = pcr.ZERO
    for _ in range(200):
        expected = pcr.extend(expected, b"x")
    assert device.describe_pcr(18).value == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"backend": "cffi"}, {"backend": "libnsm", "device_path": "/dev/other"}, {"device_path": ""}],
)
def test_bad_configuration_is_a_value_error(kwargs) -> None:
    with pytest.raises(ValueError, match=r"backend|device_path"):
        nsm.open_device(**kwargs)


def test_internal_error_class_is_the_one_for_code_8() -> None:
    assert InternalError.code is ErrorCode.INTERNAL_ERROR
