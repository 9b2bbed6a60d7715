"""The `attested verify` / `inspect` / `demo` contract, run in-process."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from attested.cli import main
from tests.kit import PCR0, PCR8, T0, VECTORS, Kit, sidecar

MARLIN = VECTORS / "attestation" / "real_attestation_marlin.cbor"
NITRITE = VECTORS / "attestation" / "real_attestation_nitrite.cbor"
MARLIN_PCR0 = sidecar(MARLIN)["decoded_by_helper"]["pcrs_hex"]["0"]

CONTRACT_KEYS = {
    "verified",
    "module_id",
    "timestamp",
    "digest",
    "pcrs",
    "public_key",
    "user_data",
    "nonce",
    "certificate",
    "failures",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status, out, _ = run(capsys, *argv, "--json")
    return status, json.loads(out)


@pytest.fixture
def kit_files(kit: Kit, tmp_path: Path) -> tuple[Path, Path]:
    doc = tmp_path / "doc.cbor"
    doc.write_bytes(kit.document(kit.payload(nonce=b"\x01\x02", user_data=b"")))
    root = tmp_path / "root.pem"
    root.write_bytes(kit.pki.root.certificate.public_bytes(Encoding.PEM))
    return doc, root


def test_verify_real_document_at_its_time(capsys) -> None:
    status, out = run_json(
        capsys, "verify", str(MARLIN), "--at-document-time", "--pcr", f"0={MARLIN_PCR0.upper()}"
    )
    expected = sidecar(MARLIN)["decoded_by_helper"]
    assert status == 0
    assert set(out) >= CONTRACT_KEYS
    assert out["verified"] is True
    assert out["failures"] == []
    assert out["module_id"] == expected["module_id"]
    assert out["timestamp"] == "2024-12-13T07:37:58.960Z"
    assert out["digest"] == "SHA384"
    assert out["pcrs"] == {k: v for k, v in out["pcrs"].items() if k.isdigit()}
    assert out["pcrs"]["0"] == MARLIN_PCR0
    assert out["public_key"] == expected["public_key"]["hex"]
    assert out["user_data"] is None
    assert out["nonce"] is None
    assert out["certificate"]["subject"] == expected["leaf_cert"]["subject"]
    assert out["certificate"]["not_after"] == "2024-12-13T08:57:45Z"
    assert out["time_source"] == "document"


def test_verify_real_document_now_fails_with_the_chain_named(capsys) -> None:
    status, out, _ = run(capsys, "verify", str(MARLIN), "--pcr", f"0={MARLIN_PCR0}")
    assert status == 1
    assert out.startswith("NOT VERIFIED: 1 check failed")
    assert "chain: cabundle[1]" in out
    assert "expired" in out


def test_every_failing_check_is_named(capsys) -> None:
    status, out = run_json(
        capsys,
        "verify",
        str(NITRITE),
        "--pcr",
        f"0={MARLIN_PCR0}",
        "--nonce",
        "00",
        "--user-data",
        "00",
    )
    assert status == 1
    assert out["failures"][0].startswith("chain: ")
    assert [f.split(":")[1].strip() for f in out["failures"][1:]] == [
        "pcr0",
        "debug_mode",
        "nonce",
        "user_data",
    ]


def test_debug_document_needs_allow_debug(capsys) -> None:
    status, out = run_json(capsys, "verify", str(NITRITE), "--at-document-time")
    assert status == 1
    assert out["failures"] == [
        "policy: debug_mode: expected a production enclave (non-zero PCR0), "
        "got all-zero PCR0 (debug-mode enclave)"
    ]
    status, out = run_json(capsys, "verify", str(NITRITE), "--at-document-time", "--allow-debug")
    assert status == 0
    assert "--allow-debug: debug-mode enclaves are accepted" in out["notes"]


def test_base64_on_stdin(capsys, monkeypatch) -> None:
    encoded = base64.encodebytes(MARLIN.read_bytes())  # wrapped over lines
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(encoded)))
    status, out = run_json(capsys, "verify", "-", "--at-document-time", "--pcr", f"0={MARLIN_PCR0}")
    assert status == 0
    assert out["verified"] is True


def test_simulated_document_with_its_own_root(capsys, kit_files) -> None:
    doc, root = kit_files
    at = T0.isoformat().replace("+00:00", "Z")
    args = ["verify", str(doc), "--at", at, "--pcr", f"0={PCR0.hex()}", "--pcr", f"8={PCR8.hex()}"]
    status, out = run_json(capsys, *args, "--root", str(root), "--nonce", "0102")
    assert status == 0
    assert out["nonce"] == "0102"
    assert out["user_data"] == ""
    status, out = run_json(capsys, *args)
    assert status == 1
    assert out["failures"] == [
        "chain: cabundle[0] is not the trust root (AWS Nitro Enclaves Root-G1)"
    ]


def test_max_age(capsys, kit_files) -> None:
    doc, root = kit_files
    base = ["verify", str(doc), "--root", str(root), "--pcr", f"0={PCR0.hex()}", "--max-age", "60"]
    assert run_json(capsys, *base, "--at", "2026-03-01T12:01:00Z")[0] == 0
    status, out = run_json(capsys, *base, "--at", "2026-03-01T12:01:01+00:00")
    assert status == 1
    assert out["failures"][0].startswith("policy: max_age")


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "DOC", "--pcr", "0"],
        ["verify", "DOC", "--pcr", "x=00"],
        ["verify", "DOC", "--pcr", "32=" + "00" * 48],
        ["verify", "DOC", "--pcr", "0=0x" + "aa" * 48],
        ["verify", "DOC", "--pcr", "0=" + "aa" * 40],
        ["verify", "DOC", "--pcr", "0=" + "zz" * 48],
        ["verify", "DOC", "--pcr", "0=" + "aa" * 48, "--pcr", "0=" + "bb" * 48],
        ["verify", "DOC", "--pcr", "0=" + "00" * 48],
        ["verify", "DOC", "--at", "2026-01-01T00:00:00"],
        ["verify", "DOC", "--at", "yesterday"],
        ["verify", "DOC", "--at", "2026-01-01T00:00:00Z", "--at-document-time"],
        ["verify", "DOC", "--at-document-time", "--max-age", "5"],
        ["verify", "DOC", "--max-age", "-1"],
        ["verify", "DOC", "--nonce", "abc"],
        ["verify"],
        ["inspect"],
        ["nonsense"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys, argv) -> None:
    argv = [str(MARLIN) if a == "DOC" else a for a in argv]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err


def test_io_errors_exit_3(capsys, tmp_path) -> None:
    status, _, err = run(capsys, "verify", str(tmp_path / "missing.cbor"))
    assert status == 3
    assert "cannot read attestation document" in err
    status, _, err = run(capsys, "verify", str(MARLIN), "--root", str(tmp_path / "missing.pem"))
    assert status == 3
    (tmp_path / "bad.pem").write_text("not a certificate")
    status, _, err = run(capsys, "verify", str(MARLIN), "--root", str(tmp_path / "bad.pem"))
    assert status == 2
    assert "not a PEM certificate" in err


def test_a_malformed_document_is_invalid_input_exit_2(capsys, tmp_path) -> None:
    # ADR 0075: 1 is "judged, and the answer is no"; what is not an attestation
    # document at all cannot be judged, like a file that is not a policy for lint.
    bad = tmp_path / "bad.cbor"
    bad.write_bytes(b"\x84\x40\xa0\x40\x40")
    for command in ("verify", "inspect"):
        status, out, err = run(capsys, command, str(bad), "--json")
        assert status == 2
        error = json.loads(out)["error"]
        assert error["code"] == "invalid_input"
        assert error["message"].startswith(f"{bad} is not an attestation document:")
        assert err == f"attested {command}: {error['message']}\n"
        status, out, err = run(capsys, command, str(bad))
        assert (status, out) == (2, "")
        assert "NOT VERIFIED" not in err


def test_an_eif_given_to_inspect_or_verify_is_named_as_such(capsys) -> None:
    eif = VECTORS / "eif" / "synthetic_eif_unsigned.eif"
    for command in ("inspect", "verify"):
        status, out, err = run(capsys, command, str(eif))
        assert (status, out) == (2, "")
        assert err == (
            f"attested {command}: {eif} is an Enclave Image File (EIF), not an attestation "
            f"document; 'attested eif describe {eif}' reads EIFs\n"
        )


def test_inspect_says_nothing_was_verified(capsys) -> None:
    status, out = run_json(capsys, "inspect", str(NITRITE))
    assert status == 0
    assert set(out) >= CONTRACT_KEYS
    assert out["verified"] is False
    assert out["note"] == "inspected only: nothing was verified"
    assert out["public_key"] == ""
    assert out["nonce"] == sidecar(NITRITE)["decoded_by_helper"]["nonce"]["hex"]
    status, text, _ = run(capsys, "inspect", str(NITRITE))
    assert status == 0
    assert text.startswith("NOT VERIFIED (inspected only")


def test_demo_runs_on_embedded_data(capsys) -> None:
    status, out, _ = run(capsys, "demo", "--offline")
    assert status == 0
    assert "refused, as it must be" in out
    assert "VERIFIED at 2024-12-13T07:37:58.960Z" in out
    assert "refused: pcr0" in out


def test_version_and_help(capsys) -> None:
    assert run(capsys, "--version")[0] == 0
    assert run(capsys, "verify", "--help")[0] == 0
