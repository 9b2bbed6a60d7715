"""The ioctl backend: the ioctl itself, its errors, and its messages over a wire fake."""

from __future__ import annotations

import errno
import os

import cbor2
import pytest

import nsm
from attested import Policy, Verifier
from attested.simulator import SimulatedNsm
from nsm._ioctl import NSM_IOCTL_RAW, IoctlTransport, MessageBackend
from nsm.errors import DeviceOpenError, InternalError, InvalidResponse, ReadOnlyIndex
from tests.nsm.wire import WireNsm


def test_ioctl_number_is_iowr_0x0a_0_32() -> None:
    assert NSM_IOCTL_RAW == 0xC0200A00 == 3223325184


def test_ioctl_on_a_device_that_is_not_the_nsm_is_an_internal_error() -> None:
    transport = IoctlTransport("/dev/null")
    try:
        with pytest.raises(InternalError, match="ENOTTY") as raised:
            transport.exchange(b"\x6bDescribeNSM")
        assert isinstance(raised.value.__cause__, OSError)
        assert raised.value.__cause__.errno == errno.ENOTTY
    finally:
        transport.close()


def test_a_device_path_selects_the_ioctl_backend() -> None:
    with nsm.open_device(device_path="/dev/null") as device:
        assert device.backend == "ioctl"
        with pytest.raises(InternalError):
            device.describe()


@pytest.mark.parametrize("path", ["/nonexistent/nsm", "/"])
def test_a_device_that_cannot_be_opened(path) -> None:
    with pytest.raises(DeviceOpenError) as raised:
        nsm.open_device(backend="ioctl", device_path=path)
    assert isinstance(raised.value.__cause__, OSError)


def test_auto_without_libnsm_or_device_fails_to_open() -> None:
    if os.path.exists("/dev/nsm"):
        pytest.skip("this machine has an NSM")
    try:
        nsm._lib.load_library()
    except nsm.LibraryNotFound:
        pass
    else:
        pytest.skip("this machine has libnsm")
    with pytest.raises(DeviceOpenError, match="/dev/nsm"):
        nsm.open_device()


@pytest.fixture
def wire() -> WireNsm:
    return WireNsm(SimulatedNsm())


@pytest.fixture
def device(wire):
    with nsm.NsmDevice._from_backend(MessageBackend(wire)) as opened:
        yield opened


def test_none_is_null_and_empty_is_an_empty_string(device, wire) -> None:
    device.get_attestation_document(user_data=b"", nonce=None, public_key=b"\x01")
    assert wire.requests[-1] == {
        "Attestation": {"user_data": b"", "nonce": None, "public_key": b"\x01"}
    }
    assert list(wire.requests[-1]["Attestation"]) == ["user_data", "nonce", "public_key"]


def test_documents_over_the_wire_verify_against_the_simulated_root(device, wire) -> None:
    document = device.get_attestation_document(nonce=b"fresh")
    policy = Policy(pcrs={0: device.describe_pcr(0).value}, nonce=b"fresh")
    verified = Verifier(trust_root=wire.simulator.trust_root).verify(document, policy=policy)
    assert verified.document.nonce == b"fresh"


def test_errors_come_back_as_error_replies(device, wire) -> None:
    with pytest.raises(ReadOnlyIndex):
        device.extend_pcr(2, b"x")
    assert wire.requests[-1] == {"ExtendPCR": {"index": 2, "data": b"x"}}


def test_random_is_collected_from_several_requests(wire, device) -> None:
    wire.random_chunk = 100
    assert len(device.get_random(250)) == 250
    assert wire.requests.count("GetRandom") == 3
    wire.random_chunk = 0
    with pytest.raises(InvalidResponse):
        device.get_random(1)


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"\xa1",
        cbor2.dumps({"DescribePCR": {"lock": False, "data": b""}}),
        cbor2.dumps({"Error": "Teapot"}),
    ],
)
def test_bad_replies_are_invalid_responses(device, wire, reply) -> None:
    wire.override = reply
    with pytest.raises(InvalidResponse):
        device.extend_pcr(16, b"x")


def test_the_backend_itself_refuses_oversized_requests(wire) -> None:
    backend = MessageBackend(wire)
    with pytest.raises(ValueError, match="4096"):
        backend.extend_pcr(16, b"x" * 4096)
    assert wire.requests == []


def test_close_closes_the_transport_once(wire) -> None:
    device = nsm.NsmDevice._from_backend(MessageBackend(wire))
    device.close()
    device.close()
    assert wire.closed == 1
