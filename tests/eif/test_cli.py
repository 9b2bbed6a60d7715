"""``attested eif describe`` and ``attested pcr``, in process."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from attested.cli import main
from tests.eif.images import SIGNATURE, assemble, build_image, make_signer, measure
from tests.kit import VECTORS

SYNTHETIC = VECTORS / "eif" / "synthetic_eif_unsigned.eif"
UG_PCR3 = (
    "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef"
    "4fc1f1a452e315b9e98f9e312e6921e6"
)
UG_PCR4 = (
    "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812"
    "719327281c401a67a10fcba87ae79ce0"
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_describe_json_mirrors_describe_eif(capsys) -> None:
    status, out, _ = _run(capsys, "eif", "describe", str(SYNTHETIC), "--json")
    assert status == 0
    described = json.loads(out)
    expected = json.loads(SYNTHETIC.with_suffix(".json").read_text())
    subset = expected["expected_describe_eif_subset"]
    assert {k: described[k] for k in subset} == subset
    # describe-eif's key order, then ours.
    assert list(described) == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "CheckCRC",
        "ImageName",
        "ImageVersion",
        "Metadata",
        "Attested",
    ]
    assert described["Attested"]["SectionTableCheck"] is True


def test_describe_text(capsys) -> None:
    status, out, _ = _run(capsys, "eif", "describe", str(SYNTHETIC))
    assert status == 0
    expected = json.loads(SYNTHETIC.with_suffix(".json").read_text())["expected_measurements"]
    assert out.startswith("OK: EIF version 4 (x86_64), 8797 bytes, 6 sections")
    assert expected["PCR0"] in out
    assert "unsigned" in out
    assert "not measured" in out


def test_describe_signed_image(tmp_path: Path, capsys) -> None:
    signer = make_signer(name="Release signing")
    path = tmp_path / "signed.eif"
    path.write_bytes(build_image(signer=signer).data)
    status, out, _ = _run(capsys, "eif", "describe", str(path), "--json")
    assert status == 0
    described = json.loads(out)
    assert described["IsSigned"] is True
    assert described["SignatureCheck"] is True
    assert described["Measurements"]["PCR8"] == signer.pcr8.hex()
    cert = described["SigningCertificate"]
    assert cert["IssuerName"] == {
        "commonName": "Release signing",
        "countryName": "US",
        "organizationName": "attested tests",
    }
    assert cert["Algorithm"] == "ecdsa-with-SHA384"
    assert cert["NotBefore"] == "Jan  1 00:00:00 2026 GMT"
    assert cert["Signature"] == ":".join(f"{b:02X}" for b in signer.certificate.signature)
    assert described["Metadata"]["team"] == "payments"  # CustomMetadata flattened
    assert list(described)[:6] == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "SigningCertificate",
        "CheckCRC",
        "SignatureCheck",
    ]


def test_describe_fails_on_bad_signature_and_crc(tmp_path: Path, capsys) -> None:
    signer, other = make_signer(), make_signer()
    built = build_image(signer=signer)
    forged = build_image(signer=other).sections[-1][1]  # a valid signature, by another key
    path = tmp_path / "forged.eif"
    sections = [*built.sections[:-1], (SIGNATURE, forged)]
    path.write_bytes(assemble(sections, fix_crc=False))
    status, out, _ = _run(capsys, "eif", "describe", str(path), "--json")
    assert status == 1
    described = json.loads(out)
    assert described["CheckCRC"] is False
    assert described["Measurements"]["PCR8"] == other.pcr8.hex()
    status, out, _ = _run(capsys, "eif", "describe", str(path))
    assert status == 1
    assert "CHECKS FAILED" in out
    assert "MISMATCH" in out


def test_describe_reports_table_problems(tmp_path: Path, capsys) -> None:
    built = build_image()
    path = tmp_path / "table.eif"
    path.write_bytes(assemble(built.sections, num_sections=4))
    status, out, _ = _run(capsys, "eif", "describe", str(path))
    assert status == 1
    assert "declares 4 sections, the file holds 5" in out


def test_describe_malformed_and_missing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.eif"
    path.write_bytes(b"MZ" + bytes(600))
    status, out, err = _run(capsys, "eif", "describe", str(path))
    assert (status, out) == (2, "")  # not an EIF: invalid input (ADR 0075)
    assert err.startswith(f"attested eif describe: {path} is not a well-formed EIF:")
    assert "magic at offset 0" in err
    status, out, _ = _run(capsys, "eif", "describe", str(path), "--json")
    assert status == 2
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_input"
    assert "magic" in error["message"]
    status, _, err = _run(capsys, "eif", "describe", str(tmp_path / "absent.eif"))
    assert status == 3
    assert "cannot read EIF" in err


def test_pcr_matches_the_aws_guide(capsys) -> None:
    status, out, _ = _run(capsys, "pcr", "--role-arn", "arn:aws:iam::123456789012:role/Webserver")
    assert status == 0
    assert json.loads(out) == {"PCR": UG_PCR3}
    status, out, _ = _run(capsys, "pcr", "--instance-id", "i-1234567890abcdef0")
    assert status == 0
    assert json.loads(out) == {"PCR": UG_PCR4}
    status, out, _ = _run(capsys, "pcr", "--string", "i-1234567890abcdef0")
    assert json.loads(out) == {"PCR": UG_PCR4}


def test_pcr_of_a_file_and_a_certificate(tmp_path: Path, capsys, monkeypatch) -> None:
    content = bytes(range(256)) * 5000
    path = tmp_path / "blob"
    path.write_bytes(content)
    status, out, _ = _run(capsys, "pcr", "--input", str(path))
    assert status == 0
    assert json.loads(out)["PCR"] == measure(content).hex()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(content)))
    status, out, _ = _run(capsys, "pcr", "--input", "-")
    assert json.loads(out)["PCR"] == measure(content).hex()
    signer = make_signer()
    pem = tmp_path / "cert.pem"
    pem.write_bytes(signer.pem)
    status, out, _ = _run(capsys, "pcr", "--signing-certificate", str(pem))
    assert status == 0
    assert json.loads(out)["PCR"] == signer.pcr8.hex()


@pytest.mark.parametrize(
    ("argv", "status", "needle"),
    [
        (["--role-arn", "arn:aws:iam::123456789012:instance-profile/Web"], 2, "role ARN"),
        (["--instance-id", "enc-1"], 2, "instance id"),
        (["--input", "/nonexistent/file"], 3, "cannot read"),
        (["--signing-cert", "{cert}"], 2, "not a PEM"),
        ([], 2, ""),
    ],
)
def test_pcr_errors(tmp_path: Path, capsys, argv, status, needle) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate")
    argv = [a.replace("{cert}", str(bogus)) for a in argv]
    got, _, err = _run(capsys, "pcr", *argv)
    assert got == status
    assert needle in err
