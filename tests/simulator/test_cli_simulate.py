"""``attested simulate attest``, checked by ``attested verify`` (both in-process)."""

from __future__ import annotations

import cbor2
import pytest

from attested import pcr
from attested.cli import main
from attested.simulator import DEFAULT_IMAGE_PCRS

PCR0 = "ab" * 48
ROLE = "arn:aws:iam::123456789012:role/Webserver"


def test_simulated_document_passes_verify_with_the_state_root(tmp_path, capsys) -> None:
    state, doc, key = tmp_path / "state", tmp_path / "doc.cbor", tmp_path / "key.der"
    key.write_bytes(b"\x30\x82" + b"k" * 300)
    status = main(
        [
            "simulate",
            "attest",
            "--state",
            str(state),
            "--pcr",
            f"0={PCR0}",
            "--pcr",
            f"8={'08' * 48}",
            "--role-arn",
            ROLE,
            "--nonce",
            "00ff",
            "--user-data",
            "",
            "--public-key-file",
            str(key),
            "--out",
            str(doc),
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    assert "SIMULATED" in err
    assert f"--root {state / 'root.pem'}" in err

    verify = [
        "verify",
        str(doc),
        "--root",
        str(state / "root.pem"),
        "--pcr",
        f"0={PCR0}",
        "--pcr",
        f"3={pcr.pcr3_from_role_arn(ROLE).hex()}",
        "--pcr",
        f"8={'08' * 48}",
        "--nonce",
        "00ff",
        "--user-data",
        "",
        "--public-key",
        key.read_bytes().hex(),
    ]
    assert main(verify) == 0
    assert capsys.readouterr().out.startswith("VERIFIED")

    # The same document against the AWS root, or with another PCR0: refused.
    assert main(verify[:2] + verify[4:]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out
    assert main([*verify[:5], f"0={'cd' * 48}"]) == 1


def test_the_state_is_reused(tmp_path, capsys) -> None:
    state = tmp_path / "state"
    for name in ("one", "two"):
        assert (
            main(["simulate", "attest", "--state", str(state), "--out", str(tmp_path / name)]) == 0
        )
    capsys.readouterr()
    for name in ("one", "two"):
        assert main(["verify", str(tmp_path / name), "--root", str(state / "root.pem")]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_IMAGE_PCRS[0].hex() in out


def test_out_dash_writes_the_document_to_stdout(tmp_path, capsysbinary) -> None:
    assert (
        main(["simulate", "attest", "--state", str(tmp_path), "--nonce", "01", "--out", "-"]) == 0
    )
    document = capsysbinary.readouterr().out
    fields = cbor2.loads(cbor2.loads(document)[2])
    assert fields["nonce"] == b"\x01"
    assert fields["user_data"] is None


@pytest.mark.parametrize(
    "extra",
    [
        ["--pcr", f"16={PCR0}"],  # not a boot PCR
        ["--pcr", f"0={'ab' * 32}"],  # not 48 bytes
        ["--pcr", f"0={PCR0}", "--pcr", f"0={PCR0}"],
        ["--pcr", "0=xyz"],
        ["--role-arn", "not-an-arn"],
        ["--instance-id", "i-1", "--pcr", f"4={PCR0}"],
        ["--user-data", "00" * 5000],  # over the NSM's 4096-byte request
        ["--nonce", "0x01"],
    ],
)
def test_usage_errors(tmp_path, capsys, extra) -> None:
    argv = ["simulate", "attest", "--state", str(tmp_path / "s"), "--out", str(tmp_path / "d")]
    assert main(argv + extra) == 2
    assert not (tmp_path / "d").exists()


def test_missing_arguments_are_usage_errors(tmp_path, capsys) -> None:
    assert main(["simulate", "attest", "--state", str(tmp_path)]) == 2
    assert main(["simulate"]) == 2


@pytest.mark.parametrize(
    "change",
    [
        lambda tmp: ["--state", str(tmp / "file"), "--out", str(tmp / "d")],
        lambda tmp: ["--state", str(tmp / "s"), "--out", str(tmp / "no" / "d")],
        lambda tmp: [
            "--state",
            str(tmp / "s"),
            "--out",
            str(tmp / "d"),
            "--public-key-file",
            str(tmp / "none"),
        ],
    ],
    ids=["state is a file", "output directory missing", "public key file missing"],
)
def test_environment_errors(tmp_path, capsys, change) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["simulate", "attest", *change(tmp_path)]) == 3
    assert capsys.readouterr().err.startswith("attested simulate attest:")


def test_the_expiry_is_printed_and_is_at_most_3_hours_away(tmp_path, capsys) -> None:
    import re
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC)
    out = tmp_path / "doc.cbor"
    assert main(["simulate", "attest", "--state", str(tmp_path / "s"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    match = re.search(r"valid until (\S+) \(3 hours at most, as on Nitro hardware\)", err)
    assert match is not None, err
    until = datetime.fromisoformat(match[1].replace("Z", "+00:00"))
    assert before + timedelta(hours=2) < until <= datetime.now(UTC) + timedelta(hours=3)
