"""attested.enclave.open_provider over the binding: NSM failures become AttestationUnavailable."""

from __future__ import annotations

import pytest

import nsm
from attested import AttestationProvider, AttestationUnavailable
from attested.enclave import open_provider
from nsm.types import ErrorCode


def test_libnsm_provider(stub) -> None:
    stub.set_document(b"\x84doc")
    with open_provider("libnsm") as provider:
        assert isinstance(provider, AttestationProvider)
        assert provider.backend == "libnsm"
        assert provider.get_attestation_document(nonce=b"") == b"\x84doc"
        assert stub.field("nonce") == b""
        assert stub.field("user_data") is None
    assert stub.exit_calls() == 1


def test_nsm_errors_during_use_are_unavailable(stub) -> None:
    with open_provider("libnsm") as provider:
        stub.fail_next(ErrorCode.INTERNAL_ERROR)
        with pytest.raises(AttestationUnavailable) as raised:
            provider.get_attestation_document()
        assert isinstance(raised.value.__cause__, nsm.InternalError)
        with pytest.raises(ValueError, match="4096"):  # misuse is not "unavailable"
            provider.get_attestation_document(user_data=b"x" * 5000)


def test_no_device_is_unavailable_with_advice(stub) -> None:
    stub.set_init_result(-1)
    with pytest.raises(AttestationUnavailable, match="simulated") as raised:
        open_provider("libnsm")
    assert isinstance(raised.value.__cause__, nsm.DeviceOpenError)


def test_no_library_is_unavailable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NSM_LIB_PATH", str(tmp_path / "missing.so"))
    with pytest.raises(AttestationUnavailable) as raised:
        open_provider()
    assert isinstance(raised.value.__cause__, nsm.LibraryNotFound)


def test_ioctl_on_a_non_nsm_device_is_unavailable() -> None:
    with (
        open_provider("ioctl", device_path="/dev/null") as provider,
        pytest.raises(AttestationUnavailable, match="ENOTTY"),
    ):
        provider.get_attestation_document()


def test_simulated_provider(tmp_path) -> None:
    with open_provider("simulated", state_dir=tmp_path / "state") as provider:
        assert provider.backend == "simulated"
        assert provider.get_attestation_document()[:1] == b"\x84"
    assert (tmp_path / "state" / "root.pem").exists()


@pytest.mark.parametrize(
    ("backend", "kwargs"),
    [
        ("simulator", {}),
        ("auto", {"state_dir": "/tmp/x"}),
        ("ioctl", {"pcrs": {}}),
        ("libnsm", {"clock": lambda: None}),
    ],
)
def test_misconfiguration_is_a_value_error(backend, kwargs) -> None:
    with pytest.raises(ValueError, match="backend"):
        open_provider(backend, **kwargs)
