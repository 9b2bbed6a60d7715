"""The tool path: a stand-in ``nitro-tpm-attest`` script, run as the real one would be."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from attested.document import Profile, parse_attestation
from attested.errors import AttestationUnavailable
from attested.nitrotpm import open_nitrotpm
from tests.nitrotpm.conftest import Source
from tests.nitrotpm.standin import PtyTpm, write_tool

NONCE = b"\x5a" * 32
USER_DATA = b"tool user data"
PUBLIC_KEY = b"0\x82" + b"\x22" * 290


def _seen(tool: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tool.parent / "plan.seen").read_text())
    return result


def test_the_document_comes_back_checked_and_no_value_is_in_argv(
    tmp_path: Path, source: Source
) -> None:
    document = source.get_attestation_document(
        nonce=NONCE, user_data=USER_DATA, public_key=PUBLIC_KEY
    )
    tool = write_tool(tmp_path / "bin", "ok", document)
    with open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider:
        assert provider.backend == "nitrotpm-tool"
        got = provider.get_attestation_document(
            nonce=NONCE, user_data=USER_DATA, public_key=PUBLIC_KEY
        )
    assert got == document
    seen = _seen(tool)
    argv = seen["argv"]
    assert isinstance(argv, list)
    assert argv[0::2] == ["--user-data", "--nonce", "--public-key"]
    for value in (NONCE, USER_DATA, PUBLIC_KEY):
        for form in (value.hex(), value.decode("latin-1")):
            assert all(form not in arg for arg in argv)
    assert seen["fields"] == {
        "--user-data": USER_DATA.hex(),
        "--nonce": NONCE.hex(),
        "--public-key": PUBLIC_KEY.hex(),
    }
    assert set(seen["modes"].values()) == {"0o600"}
    assert seen["dir_mode"] == "0o700"
    env = seen["env"]
    assert isinstance(env, dict)
    assert set(env) <= {"PATH", "LC_ALL", "LC_CTYPE", "TPM_DEVICE"}
    assert "TPM_DEVICE" not in env  # the default device: the tool's own default
    assert not Path(argv[1]).parent.exists(), "the private directory is removed"


def test_absent_fields_are_not_passed(tmp_path: Path, source: Source) -> None:
    tool = write_tool(tmp_path / "bin", "ok", source.get_attestation_document(nonce=NONCE))
    with open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider:
        provider.get_attestation_document(nonce=NONCE)
    assert _seen(tool)["argv"][0::2] == ["--nonce"]


def test_a_device_path_is_passed_as_tpm_device(tmp_path: Path, source: Source) -> None:
    tool = write_tool(tmp_path / "bin", "ok", source.get_attestation_document(nonce=NONCE))
    with open_nitrotpm("nitrotpm", tool_path=str(tool), device_path="/dev/tpm1") as provider:
        provider.get_attestation_document(nonce=NONCE)
    assert _seen(tool)["env"]["TPM_DEVICE"] == "/dev/tpm1"


def test_nitrotpm_prefers_the_tool_on_path(
    tmp_path: Path, source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = write_tool(tmp_path / "bin", "ok", source.get_attestation_document(nonce=NONCE))
    monkeypatch.setenv("PATH", str(tool.parent))
    with open_nitrotpm("nitrotpm", device_path=str(tmp_path / "no-tpm")) as provider:
        assert provider.backend == "nitrotpm-tool"
        assert provider.path == str(tool)
        provider.get_attestation_document(nonce=NONCE)


def test_nitrotpm_takes_the_device_without_the_tool(
    tmp_path: Path, pty_tpm: PtyTpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with open_nitrotpm("nitrotpm", device_path=pty_tpm.path) as provider:
        assert provider.backend == "nitrotpm-device"
        provider.get_attestation_document(nonce=NONCE)
    with pytest.raises(AttestationUnavailable, match=r"no TPM device.*not on PATH either"):
        open_nitrotpm("nitrotpm", device_path=str(tmp_path / "tpm0"))


def test_nitrotpm_tool_without_the_tool_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        AttestationUnavailable, match=r"not on PATH: install it .*aws-nitro-tpm-tools"
    ):
        open_nitrotpm("nitrotpm-tool")
    with pytest.raises(AttestationUnavailable, match="is not an executable file"):
        open_nitrotpm("nitrotpm-tool", tool_path=str(tmp_path / "nitro-tpm-attest"))


def test_a_failing_tool_is_reported_with_a_short_clean_stderr(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "bin", "fail")
    with (
        open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider,
        pytest.raises(
            AttestationUnavailable, match=r"exited with status 1; it said: Error: TPM error"
        ) as caught,
    ):
        provider.get_attestation_document(nonce=NONCE)
    assert "\x1b" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_hung_tool_is_killed_at_the_deadline(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "bin", "hang")
    with open_nitrotpm("nitrotpm-tool", tool_path=str(tool), timeout=2) as provider:
        started = time.monotonic()
        with pytest.raises(AttestationUnavailable, match="did not finish within 2 s"):
            provider.get_attestation_document(nonce=NONCE)
        assert time.monotonic() - started < 60


def test_garbage_on_stdout_is_not_a_document(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "bin", "garbage")
    with (
        open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider,
        pytest.raises(
            AttestationUnavailable,
            match="nitrotpm-tool path returned something that is not a NitroTPM",
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)


def test_too_much_output_is_refused(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "bin", "flood")
    with (
        open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider,
        pytest.raises(AttestationUnavailable, match="wrote over 16384 bytes to stdout"),
    ):
        provider.get_attestation_document(nonce=NONCE)


def test_an_enclave_document_is_refused(tmp_path: Path, source: Source) -> None:
    tool = write_tool(tmp_path / "bin", "ok", source.enclave_document(nonce=NONCE))
    with (
        open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider,
        pytest.raises(
            AttestationUnavailable, match=r"not a NitroTPM attestation document.*'nitrotpm_pcrs'"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE)


@pytest.mark.parametrize(
    ("document_fields", "differ"),
    [
        ({"nonce": b"\x00" * 32, "public_key": PUBLIC_KEY}, "nonce is"),
        ({"nonce": NONCE}, "public_key is"),
        ({"nonce": NONCE, "public_key": PUBLIC_KEY, "user_data": b"x"}, "user_data is"),
        ({"public_key": b"other", "user_data": b"x"}, "nonce, user_data, public_key are"),
    ],
)
def test_a_document_with_other_fields_is_refused_naming_them(
    tmp_path: Path, source: Source, document_fields: dict[str, bytes], differ: str
) -> None:
    tool = write_tool(tmp_path / "bin", "ok", source.get_attestation_document(**document_fields))
    with (
        open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider,
        pytest.raises(
            AttestationUnavailable, match=f"document whose {differ} not what was asked for"
        ),
    ):
        provider.get_attestation_document(nonce=NONCE, public_key=PUBLIC_KEY)


def test_empty_and_absent_fields_are_the_same_request(tmp_path: Path, source: Source) -> None:
    # A document with user_data null answers a request with user_data b"" (and the
    # reverse): neither carries anything.
    document = source.get_attestation_document(nonce=NONCE, user_data=None)
    tool = write_tool(tmp_path / "bin", "ok", document)
    with open_nitrotpm("nitrotpm-tool", tool_path=str(tool)) as provider:
        got = provider.get_attestation_document(nonce=NONCE, user_data=b"")
    assert parse_attestation(got, profile=Profile.NITROTPM).user_data is None
    assert os.path.exists(tool)
