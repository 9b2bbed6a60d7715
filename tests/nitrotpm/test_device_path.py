"""The native path against the stand-in TPM on a real device path (a raw pty)."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import cbor2
import pytest

from attested import Policy, Verifier
from attested.document import Profile, parse_attestation
from attested.errors import AttestationUnavailable, TpmError
from attested.nitrotpm import NitroTpmProvider, open_nitrotpm
from tests.nitrotpm.conftest import PCR4, Source
from tests.nitrotpm.standin import (
    CC_DEFINE,
    CC_GETCAP,
    CC_NSM,
    CC_READ,
    CC_UNDEFINE,
    CC_WRITE,
    HANG,
    PtyTpm,
    StandInTpm,
)

NONCE = bytes(range(32))
USER_DATA = b"user-data for the hypervisor"
PUBLIC_KEY = b"0\x82" + b"\x11" * 290  # shaped like a DER RSA key; any bytes do


def _open(pty: PtyTpm, timeout: float = 20.0) -> NitroTpmProvider:
    return open_nitrotpm("nitrotpm-device", device_path=pty.path, timeout=timeout)


def test_document_carries_the_fields_and_verifies_as_nitrotpm(
    pty_tpm: PtyTpm, tpm: StandInTpm, source: Source
) -> None:
    with _open(pty_tpm) as provider:
        assert provider.backend == "nitrotpm-device"
        document = provider.get_attestation_document(
            nonce=NONCE, user_data=USER_DATA, public_key=PUBLIC_KEY
        )
    verifier = Verifier(trust_root=source.trust_root, profile=Profile.NITROTPM)
    verified = verifier.verify(
        document,
        policy=Policy(pcrs={4: PCR4}, nonce=NONCE, user_data=USER_DATA, public_key=PUBLIC_KEY),
    )
    assert verified.module_id.endswith("-tpm0000000000000000")
    assert tpm.requests == [{"user_data": USER_DATA, "nonce": NONCE, "public_key": PUBLIC_KEY}]
    assert tpm.nv == {}, "the NV index must be undefined afterwards"
    # The request went in in chunks of at most TPM_PT_NV_BUFFER_MAX and came back whole.
    assert tpm.log.count(CC_WRITE) == 1
    assert tpm.log.count(CC_READ) == 8  # 8192 bytes in chunks of 1024
    assert tpm.log[-1] == CC_UNDEFINE


def test_absent_fields_stay_absent_and_small_buffers_mean_more_chunks(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.nv_buffer_max = 128
    with _open(pty_tpm) as provider:
        document = provider.get_attestation_document(public_key=PUBLIC_KEY)
    parsed = parse_attestation(document, profile=Profile.NITROTPM)
    assert parsed.nonce is None
    assert parsed.user_data is None
    assert tpm.requests == [{"user_data": None, "nonce": None, "public_key": PUBLIC_KEY}]
    assert tpm.log.count(CC_WRITE) == 3  # a 300-odd byte request in 128-byte chunks
    assert tpm.log.count(CC_READ) == 64
    assert tpm.nv == {}


def test_handles_in_use_are_skipped_across_pages(pty_tpm: PtyTpm, tpm: StandInTpm) -> None:
    # The stand-in lists handles two at a time, so finding the gap takes several pages.
    tpm.occupied = {0x01000000, 0x01000001, 0x01000002, 0x01000004, 0x01C00002}
    defined: list[int] = []
    answer = tpm.answer

    def spy(command: bytes) -> bytes | None:
        if struct.unpack_from(">I", command, 6)[0] == CC_DEFINE:
            defined.append(struct.unpack_from(">I", command, 10 + 4 + 13 + 2 + 2)[0])
        return answer(command)

    tpm.answer = spy  # type: ignore[method-assign]
    with _open(pty_tpm) as provider:
        provider.get_attestation_document(nonce=NONCE)
    assert defined == [0x01000003]
    assert tpm.nv == {}


def test_an_index_someone_else_defined_first_is_never_undefined(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.steal_next_define = 1  # another process takes the free handle between our commands
    with _open(pty_tpm) as provider:
        provider.get_attestation_document(nonce=NONCE)
    assert tpm.occupied == {0x01000000}, "the other process's index"
    assert tpm.log.count(CC_DEFINE) == 2
    assert tpm.log.count(CC_UNDEFINE) == 1  # ours, 0x01000001, not theirs
    assert tpm.nv == {}


def test_the_vendor_command_failing_is_a_tpm_error_and_the_index_is_undefined(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.faults[CC_NSM] = 0x143  # TPM_RC_COMMAND_CODE: a TPM that does not know the command
    with _open(pty_tpm) as provider, pytest.raises(TpmError) as caught:
        provider.get_attestation_document(nonce=NONCE)
    assert caught.value.command == "TPM2_VENDOR_AWS_NSM_REQUEST"
    assert caught.value.code == 0x143
    assert "TPM_RC_COMMAND_CODE" in str(caught.value)
    assert tpm.nv == {}
    assert tpm.log[-1] == CC_UNDEFINE


def test_a_failed_write_still_undefines(pty_tpm: PtyTpm, tpm: StandInTpm) -> None:
    tpm.faults[CC_WRITE] = 0x146  # TPM_RC_NV_RANGE
    with _open(pty_tpm) as provider, pytest.raises(TpmError, match=r"TPM2_NV_Write.*NV_RANGE"):
        provider.get_attestation_document(nonce=NONCE)
    assert tpm.nv == {}


def test_an_nsm_error_answer_is_unavailable_and_the_index_undefined(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.nsm_answer = lambda fields: {"Error": "InvalidArgument"}
    with (
        _open(pty_tpm) as provider,
        pytest.raises(
            AttestationUnavailable, match="NSM answered with the error 'InvalidArgument'"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)
    assert tpm.nv == {}


def test_a_short_response_is_refused_and_the_index_undefined(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    # Success, with sessions, but no parameterSize or session area.
    tpm.faults[CC_NSM] = struct.pack(">HII", 0x8002, 10, 0)
    with (
        _open(pty_tpm) as provider,
        pytest.raises(
            AttestationUnavailable, match=r"did not answer as a NitroTPM: .*no parameterSize"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)
    assert tpm.nv == {}


def test_an_oversize_response_is_refused_unread_and_the_index_undefined(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.faults[CC_NSM] = struct.pack(">HII", 0x8002, 1 << 20, 0)
    with (
        _open(pty_tpm) as provider,
        pytest.raises(
            AttestationUnavailable, match="says it is 1048576 bytes; accepted are 10 to 4096"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)
    assert tpm.nv == {}


def test_a_hung_device_times_out_and_the_index_is_undefined_on_a_fresh_open(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    tpm.faults[CC_NSM] = HANG
    with _open(pty_tpm, timeout=1.5) as provider:
        started = time.monotonic()
        with pytest.raises(
            AttestationUnavailable, match=r"TPM2_VENDOR_AWS_NSM_REQUEST: .* did not answer within"
        ):
            provider.get_attestation_document(nonce=NONCE)
        assert time.monotonic() - started < 60
    assert tpm.nv == {}
    assert tpm.log[-1] == CC_UNDEFINE


def test_a_document_with_another_nonce_is_refused(
    pty_tpm: PtyTpm, tpm: StandInTpm, source: Source
) -> None:
    def stale(fields: dict[str, bytes | None]) -> object:
        other = dict(fields, nonce=b"\x00" * 32)
        return {"Attestation": {"document": source.get_attestation_document(**other)}}

    tpm.nsm_answer = stale
    with (
        _open(pty_tpm) as provider,
        pytest.raises(
            AttestationUnavailable, match="document whose nonce is not what was asked for"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE, public_key=PUBLIC_KEY)
    assert tpm.nv == {}


def test_an_enclave_document_is_refused(pty_tpm: PtyTpm, tpm: StandInTpm, source: Source) -> None:
    tpm.nsm_answer = lambda fields: {"Attestation": {"document": source.enclave_document(**fields)}}
    with (
        _open(pty_tpm) as provider,
        pytest.raises(
            AttestationUnavailable, match=r"not a NitroTPM attestation document: .*'nitrotpm_pcrs'"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)


def test_another_tpm_is_refused_at_open(pty_tpm: PtyTpm, tpm: StandInTpm) -> None:
    tpm.vendor = b"SW  TPM"
    with pytest.raises(
        AttestationUnavailable, match="reports the vendor 'SW  TPM', not 'NitroTPM'"
    ):
        _open(pty_tpm)


def test_no_device_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(AttestationUnavailable, match=r"no TPM device at .*NitroTPM enabled"):
        open_nitrotpm("nitrotpm-device", device_path=str(tmp_path / "tpm0"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file")
def test_no_permission_says_root_or_tss(tmp_path: Path) -> None:
    device = tmp_path / "tpm0"
    device.write_bytes(b"")
    device.chmod(0)
    with pytest.raises(AttestationUnavailable, match=r"run as root or add .* 'tss' group"):
        open_nitrotpm("nitrotpm-device", device_path=str(device))


def test_requests_from_threads_run_one_at_a_time(pty_tpm: PtyTpm, tpm: StandInTpm) -> None:
    errors: list[BaseException] = []
    with _open(pty_tpm) as provider:

        def ask(i: int) -> None:
            try:
                document = provider.get_attestation_document(nonce=bytes([i]) * 16)
                assert (
                    parse_attestation(document, profile=Profile.NITROTPM).nonce == bytes([i]) * 16
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors
    assert len(tpm.requests) == 4
    assert tpm.nv == {}


def test_arguments_are_checked_before_the_tpm_is_asked(pty_tpm: PtyTpm, tpm: StandInTpm) -> None:
    provider = _open(pty_tpm)
    with pytest.raises(ValueError, match="nonce holds at most 512 bytes"):
        provider.get_attestation_document(nonce=b"n" * 513)
    with pytest.raises(TypeError, match="user_data must be bytes"):
        provider.get_attestation_document(user_data="text")  # type: ignore[arg-type]
    provider.close()
    provider.close()
    with pytest.raises(ValueError, match="closed"):
        provider.get_attestation_document(nonce=NONCE)
    assert "closed" in repr(provider)
    assert tpm.requests == []


def test_the_nsm_request_in_the_index_is_cbor_with_byte_strings(
    pty_tpm: PtyTpm, tpm: StandInTpm, source: Source
) -> None:
    seen: list[bytes] = []

    def capture(fields: dict[str, bytes | None]) -> object:
        (index,) = tpm.nv
        seen.append(bytes(tpm.nv[index]))
        return {"Attestation": {"document": source.get_attestation_document(**fields)}}

    tpm.nsm_answer = capture
    with _open(pty_tpm) as provider:
        provider.get_attestation_document(nonce=NONCE, user_data=b"")
    request = cbor2.loads(seen[0][: len(cbor2.dumps(cbor2.loads(seen[0].rstrip(b"\xff"))))])
    assert request == {"Attestation": {"user_data": b"", "nonce": NONCE, "public_key": None}}


def test_a_device_that_answers_nonsense_at_open_is_unavailable(
    pty_tpm: PtyTpm, tpm: StandInTpm
) -> None:
    # A successful GetCapability whose parameters are two stray bytes.
    tpm.faults[CC_GETCAP] = struct.pack(">HII", 0x8001, 12, 0) + b"\xff\xff"
    with pytest.raises(AttestationUnavailable, match=r"did not answer as a NitroTPM: .*truncated"):
        _open(pty_tpm)
