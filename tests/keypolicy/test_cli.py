"""``attested keypolicy generate`` and ``lint``, in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attested.cli import main
from tests.eif.images import SIGNATURE, assemble, build_image, make_signer
from tests.keypolicy.values import (
    ACCOUNT,
    ADMIN_ROLE,
    CLI_X86,
    ENCLAVE_ROLE,
    UG,
    ZERO,
    build_output,
)

IMAGE = "kms:RecipientAttestation:ImageSha384"
BASE = ["keypolicy", "generate", "--account", ACCOUNT, "--enclave-role", ENCLAVE_ROLE,
        "--admin-role", ADMIN_ROLE]  # fmt: skip


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _condition(text: str) -> dict[str, object]:
    (statement,) = [
        s for s in json.loads(text)["Statement"] if "Condition" in s and s["Effect"] == "Allow"
    ]
    values: dict[str, object] = statement["Condition"]["StringEqualsIgnoreCase"]
    return values


def test_generate_from_a_signed_eif(tmp_path: Path, capsys) -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    path = tmp_path / "app.eif"
    path.write_bytes(built.data)
    status, out, err = _run(capsys, *BASE, "--eif", str(path))
    assert status == 0
    assert err == ""
    values = _condition(out)
    assert values[IMAGE] == built.pcr0.hex()
    assert values["kms:RecipientAttestation:PCR8"] == signer.pcr8.hex()
    assert values["kms:RecipientAttestation:PCR2"] == built.pcr2.hex()


def test_generate_refuses_an_eif_that_fails_its_checks(tmp_path: Path, capsys) -> None:
    signer, other = make_signer(), make_signer()
    built = build_image(signer=signer)
    forged = build_image(signer=other, kernel=b"other").sections[-1][1]
    path = tmp_path / "forged.eif"
    path.write_bytes(assemble([*built.sections[:-1], (SIGNATURE, forged)]))
    status, out, err = _run(capsys, *BASE, "--eif", str(path))
    assert status == 1
    assert out == ""
    assert "signature is invalid" in err
    path.write_bytes(b"garbage")  # not an EIF at all: invalid input (ADR 0075)
    status, _, err = _run(capsys, *BASE, "--eif", str(path))
    assert status == 2
    assert "not a well-formed EIF" in err


def test_generate_combines_sources_and_writes_a_file(tmp_path: Path, capsys) -> None:
    build = tmp_path / "build.json"
    build.write_bytes(build_output(UG, "Sha512_48 { .. }"))
    output = tmp_path / "policy.json"
    pcr_args = [a for i, v in CLI_X86.items() for a in ("--pcr", f"{i}={v}")]
    operations = [
        "--operations",
        "Decrypt,GenerateDataKeyPair",
        "--operations",
        "DeriveSharedSecret",
    ]
    status, out, err = _run(
        capsys, *BASE, "--measurements", str(build), *pcr_args, *operations, "-o", str(output)
    )
    assert status == 0
    assert out == ""
    assert "PCR8 is in some measurement sets but not all" in err
    text = output.read_text()
    assert _condition(text)[IMAGE] == [UG[0], CLI_X86[0]]
    attested = json.loads(text)["Statement"][2]
    assert attested["Action"] == [
        "kms:Decrypt",
        "kms:DeriveSharedSecret",
        "kms:GenerateDataKeyPair",
    ]
    assert main(["keypolicy", "lint", str(output)]) == 0


@pytest.mark.parametrize(
    ("extra", "status", "needle"),
    [
        ([], 2, "give measurements"),
        (["--pcr", f"0={ZERO}", "--pcr", f"1={ZERO}"], 2, "debug-mode enclave"),
        (["--pcr", f"0={UG[0]}", "--pcr", f"0={UG[0]}"], 2, "given twice"),
        (["--pcr", f"0=0x{UG[0]}"], 2, "0x prefix"),
        (["--pcr", f"0={UG[0][:64]}"], 2, "96 hex digits"),
        (["--pcr", f"40={UG[0]}"], 2, "0..31"),
        (["--pcr", f"0={UG[0]}", "--operations", "Sign"], 2, "not an attested operation"),
        (["--pcr", f"0={UG[0]}", "--pcrs", "0,x"], 2, "not a number"),
        (["--measurements", "/nonexistent.json"], 3, "cannot read"),
        (["--eif", "/nonexistent.eif"], 3, "cannot read EIF"),
        (["--pcr", f"0={UG[0]}", "-o", "/nonexistent/dir/p.json"], 3, "cannot write"),
    ],
)
def test_generate_errors(capsys, extra, status, needle) -> None:
    got, out, err = _run(capsys, *BASE, *extra)
    assert got == status
    assert needle in err
    assert out == ""


def test_generate_allow_debug_warns(capsys) -> None:
    status, out, err = _run(capsys, *BASE, "--pcr", f"0={ZERO}", "--allow-debug")
    assert status == 0
    assert "debug-mode enclaves are admitted" in err
    assert _condition(out)[IMAGE] == ZERO


def test_generate_bad_measurements_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"Measurements": {"HashAlgorithm": "Sha256 { ... }", "PCR0": "00"}}')
    status, _, err = _run(capsys, *BASE, "--measurements", str(bad))
    assert status == 2
    assert "is not SHA-384" in err


ROOT_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "Enclave",
            "Effect": "Allow",
            "Principal": {"AWS": ENCLAVE_ROLE},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {IMAGE: "<PCR0>"}},
        },
    ],
}


def test_lint_text_and_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(ROOT_POLICY))
    status, out, _ = _run(capsys, "keypolicy", "lint", str(path))
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(
        "error    unconditional-attested-allow: Sid 'Enable IAM User Permissions': "
    )
    assert lines[-1] == "key policy, 2 statement(s): 2 error(s), 1 warning(s)"
    status, out, _ = _run(capsys, "keypolicy", "lint", str(path), "--json")
    assert status == 1
    report = json.loads(out)
    assert (report["errors"], report["warnings"]) == (2, 1)
    assert [f["rule"] for f in report["findings"]] == [
        "unconditional-attested-allow",
        "pcr-value",
        "case-sensitive-operator",
    ]
    assert report["findings"][1]["statement"] == "Sid 'Enclave'"


def test_lint_accepts_get_key_policy_output_and_warnings_exit_0(tmp_path: Path, capsys) -> None:
    policy = {
        "Statement": [
            ROOT_POLICY["Statement"][1]
            | {"Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR8": UG[8]}}}
        ]
    }
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"Policy": json.dumps(policy), "PolicyName": "default"}))
    status, out, _ = _run(capsys, "keypolicy", "lint", str(path))
    assert status == 0
    assert "warning  image-not-pinned" in out


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        ("not json", 2, "not a policy"),
        ('{"Statement": []}', 2, "empty list"),
        # A policy over 128 KiB (KMS takes 32 KiB); other inputs may be larger.
        ('{"Statement": {}}' + " " * (128 * 1024), 2, "policy is 131089 bytes, more than"),
        (" " * (16 * 1024 * 1024 + 1), 2, "larger than"),
    ],
)
def test_lint_input_errors(tmp_path: Path, capsys, content, status, needle) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    got, _, err = _run(capsys, "keypolicy", "lint", str(path))
    assert got == status
    assert needle in err


def test_lint_unreadable(capsys) -> None:
    status, _, err = _run(capsys, "keypolicy", "lint", "/nonexistent/policy.json")
    assert status == 3
    assert "cannot read" in err


# --- generate --nitrotpm ----------------------------------------------------------------------

INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/app-instance"
NITROTPM = ["keypolicy", "generate", "--nitrotpm", "--account", ACCOUNT,
            "--instance-role", INSTANCE_ROLE, "--admin-role", ADMIN_ROLE]  # fmt: skip
SB_OFF = "98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35"  # noqa: E501


def _tpm_pcr_json(path: Path, **pcrs: str) -> str:
    values = pcrs or {"PCR4": UG[0], "PCR7": SB_OFF, "PCR12": ZERO}
    path.write_text(json.dumps({"Measurements": {"HashAlgorithm": "SHA384", **values}}))
    return str(path)


def test_generate_nitrotpm_standard_boot_and_secure_boot(tmp_path: Path, capsys) -> None:
    measurements = _tpm_pcr_json(tmp_path / "tpm_pcr.json")
    status, out, err = _run(capsys, *NITROTPM, "--measurements", measurements)
    assert (status, err) == (0, "")
    assert _condition(out) == {
        "kms:RecipientAttestation:NitroTPMPCR4": UG[0],
        "kms:RecipientAttestation:NitroTPMPCR12": ZERO,
    }
    signed = _tpm_pcr_json(tmp_path / "signed.json", PCR4=UG[0], PCR7=UG[1], PCR12=ZERO)
    status, out, err = _run(capsys, *NITROTPM, "--measurements", signed, "--secure-boot")
    assert (status, err) == (0, "")
    assert _condition(out) == {"kms:RecipientAttestation:NitroTPMPCR7": UG[1]}
    # Two files for a rollout, and --pcr as one more set.
    new = _tpm_pcr_json(tmp_path / "new.json", PCR4=UG[2], PCR12=ZERO)
    status, out, _ = _run(
        capsys, *NITROTPM, "--measurements", measurements, "--measurements", new,
        "--pcr", f"4={UG[8]}", "--pcr", f"12={ZERO}",
    )  # fmt: skip
    assert status == 0
    assert _condition(out)["kms:RecipientAttestation:NitroTPMPCR4"] == [UG[0], UG[2], UG[8]]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--secure-boot"], "booted without Secure Boot"),
        (["--eif", "x.eif"], "--eif is for enclave keys, not with --nitrotpm"),
        (["--allow-debug"], "--allow-debug is for enclave keys"),
        (["--pcrs", "4"], "--pcrs is for enclave keys"),
        (["--enclave-role", ENCLAVE_ROLE], "(use --instance-role)"),
        (["--pcr", f"24={UG[0]}"], "a NitroTPM has PCR0 to PCR23"),
    ],
)
def test_generate_nitrotpm_refusals(tmp_path: Path, capsys, argv: list[str], needle: str) -> None:
    measurements = _tpm_pcr_json(tmp_path / "tpm_pcr.json")
    status, out, err = _run(capsys, *NITROTPM, "--measurements", measurements, *argv)
    assert (status, out) == (2, "")
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_generate_kind_flags_need_their_kind(tmp_path: Path, capsys) -> None:
    measurements = _tpm_pcr_json(tmp_path / "tpm_pcr.json")
    without_role = [a for a in NITROTPM if a not in ("--instance-role", INSTANCE_ROLE)]
    status, _, err = _run(capsys, *without_role, "--measurements", measurements)
    assert status == 2
    assert "--nitrotpm needs --instance-role" in err
    status, _, err = _run(capsys, *BASE, "--pcr", f"0={UG[0]}", "--secure-boot")
    assert status == 2
    assert "--secure-boot is for NitroTPM keys: add --nitrotpm" in err
    no_role = [a for a in BASE if a not in ("--enclave-role", ENCLAVE_ROLE)]
    status, _, err = _run(capsys, *no_role, "--pcr", f"0={UG[0]}")
    assert status == 2
    assert "--enclave-role" in err


def test_generate_names_the_other_tools_output(tmp_path: Path, capsys) -> None:
    tpm = _tpm_pcr_json(tmp_path / "tpm_pcr.json")
    status, _, err = _run(capsys, *BASE, "--measurements", tpm)
    assert status == 2
    assert "nitro-tpm-pcr-compute's output" in err
    cli = tmp_path / "nitro-cli.json"
    cli.write_bytes(build_output(UG))
    status, _, err = _run(capsys, *NITROTPM, "--measurements", str(cli))
    assert status == 2
    assert "nitro-cli's output" in err
