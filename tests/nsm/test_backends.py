"""Both backends behave the same: libnsm (on the C stand-in) and the ioctl messages.

The ioctl backend's messages go to tests/nsm/wire.py, a Python NSM speaking CBOR via
cbor2 with its state in a SimulatedNsm; only the kernel transport is replaced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import nsm
from attested import pcr
from attested.simulator import SimulatedNsm
from nsm._ioctl import MessageBackend
from nsm.errors import InvalidIndex, ReadOnlyIndex
from tests.nsm.wire import WireNsm


@pytest.fixture(params=["libnsm", "ioctl"])
def any_device(request: pytest.FixtureRequest) -> Iterator[nsm.NsmDevice]:
    if request.param == "libnsm":
        request.getfixturevalue("stub")
        device = nsm.open_device(backend="libnsm")
    else:
        device = nsm.NsmDevice._from_backend(MessageBackend(WireNsm(SimulatedNsm())))
    with device:
        yield device


def test_describe(any_device) -> None:
    description = any_device.describe()
    assert description.max_pcrs == 32
    assert description.locked_pcrs == tuple(range(16))
    assert description.digest is nsm.Digest.SHA384
    assert description.module_id


def test_extend_then_lock(any_device) -> None:
    first = any_device.extend_pcr(16, b"measurement")
    assert first == pcr.extend(pcr.ZERO, b"measurement")
    assert any_device.extend_pcr(16, b"") == pcr.extend(first, b"")
    any_device.lock_pcr(16)
    info = any_device.describe_pcr(16)
    assert info.locked
    assert info.value == pcr.extend(first, b"")
    with pytest.raises(ReadOnlyIndex):
        any_device.extend_pcr(16, b"more")
    assert 16 in any_device.describe().locked_pcrs


def test_boot_pcrs_are_locked(any_device) -> None:
    for index in (0, 4, 15):
        assert any_device.describe_pcr(index).locked
        with pytest.raises(ReadOnlyIndex):
            any_device.extend_pcr(index, b"x")


def test_lock_pcrs(any_device) -> None:
    any_device.lock_pcrs(18)
    assert any_device.describe().locked_pcrs == tuple(range(18))
    with pytest.raises(InvalidIndex):
        any_device.lock_pcrs(33)


@pytest.mark.parametrize(
    "operation",
    [lambda d: d.describe_pcr(32), lambda d: d.extend_pcr(32, b""), lambda d: d.lock_pcr(100)],
)
def test_invalid_index(any_device, operation) -> None:
    with pytest.raises(InvalidIndex):
        operation(any_device)


def test_random(any_device) -> None:
    data = any_device.get_random(600)
    assert len(data) == 600
    assert any_device.get_random(0) == b""


def test_attestation_returns_bytes(any_device) -> None:
    document = any_device.get_attestation_document(nonce=b"n", user_data=b"", public_key=None)
    assert isinstance(document, bytes)


def test_refusals_before_the_call(any_device) -> None:
    with pytest.raises(ValueError, match="65535"):
        any_device.extend_pcr(70000, b"")
    with pytest.raises(TypeError):
        any_device.get_attestation_document(nonce="text")
    with pytest.raises(ValueError, match="4096"):
        any_device.get_attestation_document(public_key=b"k" * 4096)


def test_close(any_device) -> None:
    any_device.close()
    any_device.close()
    with pytest.raises(ValueError, match="closed"):
        any_device.get_random(1)
