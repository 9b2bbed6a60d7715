"""``attested cms decrypt`` in process, with the edgebit vector."""

from __future__ import annotations

import base64
import io
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attested.cli import main
from tests.kms.conftest import CMS, KeyedVector

KEY = str(CMS / "kms_recipient_edgebit_key.pem")
BLOB = str(CMS / "kms_recipient_edgebit.der")


def test_decrypt_to_stdout(
    edgebit: KeyedVector, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["cms", "decrypt", "--key", KEY, BLOB]) == 0
    assert capsysbinary.readouterr().out == edgebit.plaintext


def test_decrypt_base64_from_stdin(
    edgebit: KeyedVector,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    text = base64.encodebytes(edgebit.blob)  # wrapped over lines, as tools print it
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text)))
    assert main(["cms", "decrypt", "--key", KEY, "-"]) == 0
    assert capsysbinary.readouterr().out == edgebit.plaintext


def test_decrypt_with_a_pkcs8_key_to_a_private_file(
    edgebit: KeyedVector, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    pkcs1 = serialization.load_pem_private_key(Path(KEY).read_bytes(), None)
    pkcs8 = tmp_path / "key8.pem"
    pkcs8.write_bytes(
        pkcs1.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "plain.bin"
    out.write_bytes(b"old")
    out.chmod(0o644)
    assert main(["cms", "decrypt", "--key", str(pkcs8), BLOB, "--out", str(out)]) == 0
    assert out.read_bytes() == edgebit.plaintext
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert capsysbinary.readouterr().out == b""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".attested-")] == []


def test_an_envelope_for_another_key_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert main(["cms", "decrypt", "--key", str(other), BLOB]) == 1
    assert "addressed to the key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ("kms_recipient_brody_oaepsha1_nokey.der", "SHA-1"),
        ("kms_recipient_edgebit.json", "CMS"),
    ],
)
def test_what_is_not_a_kms_envelope_is_invalid_input_exit_2(
    vector: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cms", "decrypt", "--key", KEY, str(CMS / vector)]) == 2  # ADR 0075
    err = capsys.readouterr().err
    assert f"{CMS / vector} is not a KMS envelope" in err
    assert reason in err


def test_key_problems_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        serialization.load_pem_private_key(Path(KEY).read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    assert main(["cms", "decrypt", "--key", str(ec_key), BLOB]) == 2
    assert "not an RSA private key" in capsys.readouterr().err
    assert main(["cms", "decrypt", "--key", str(encrypted), BLOB]) == 2
    assert "encrypted" in capsys.readouterr().err
    assert main(["cms", "decrypt", "--key", BLOB, BLOB]) == 2
    assert "not a PEM private key" in capsys.readouterr().err
    assert main(["cms", "decrypt", BLOB]) == 2  # --key is required


def test_io_problems_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cms", "decrypt", "--key", KEY, str(tmp_path / "missing")]) == 3
    assert main(["cms", "decrypt", "--key", str(tmp_path / "missing.pem"), BLOB]) == 3
    out = tmp_path / "no-such-dir" / "plain.bin"
    assert main(["cms", "decrypt", "--key", KEY, BLOB, "--out", str(out)]) == 3
    assert "cannot write" in capsys.readouterr().err
