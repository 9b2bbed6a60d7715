"""The CiphertextForRecipient writer against KMS's real envelopes and independent readers."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from attested.emulator._cms_writer import CHUNK_SIZE, build_envelope
from tests.emulator.conftest import Enclave
from tests.emulator.envelope import open_envelope, parse, split
from tests.kit import VECTORS

CMS = VECTORS / "cms"


def _edgebit() -> tuple[bytes, dict[str, str], object]:
    meta = json.loads((CMS / "kms_recipient_edgebit.json").read_text())
    key = load_pem_private_key((CMS / "kms_recipient_edgebit_key.pem").read_bytes(), None)
    return (CMS / "kms_recipient_edgebit.der").read_bytes(), meta, key


def test_identical_to_a_real_kms_envelope_except_the_oaep_block() -> None:
    real, meta, key = _edgebit()
    public = key.public_key()  # type: ignore[attr-defined]
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ours = build_envelope(
        bytes.fromhex(meta["expected_plaintext_hex"]),
        spki,
        public,
        cek=bytes.fromhex(meta["content_encryption_key_hex"]),
        iv=bytes.fromhex(meta["iv_hex"]),
    )
    # encryptedKey (RSA-OAEP, randomised) sits at bytes 131..387 of the 493-byte vector.
    assert len(ours) == len(real) == 493
    assert ours[:131] == real[:131]
    assert ours[387:] == real[387:]
    assert ours[127:131] == b"\x04\x82\x01\x00"


@pytest.mark.parametrize(
    "name", ["kms_recipient_sdkc_constructed_nokey.der", "kms_recipient_edgebit.der"]
)
def test_same_shape_as_every_real_constructed_envelope(name: str, enclave: Enclave) -> None:
    real = split((CMS / name).read_bytes())
    ours_blob = build_envelope(b"k" * 32, enclave.spki, enclave.key.public_key())
    ours = split(ours_blob)
    assert ours.key_algorithm == real.key_algorithm
    assert len(ours.rid) == len(real.rid) == 32
    assert len(ours.encrypted_key) == len(real.encrypted_key) == 256
    assert [len(c) for c in ours.chunks] == [len(c) for c in real.chunks] == [48]
    # Same nesting and tags everywhere, with indefinite lengths where KMS uses them.
    assert _shape(parse(ours_blob)[0]) == _shape(parse((CMS / name).read_bytes())[0])


def _shape(node: object) -> object:
    return (node.tag, node.indefinite, [_shape(c) for c in node.children])  # type: ignore[attr-defined]


def test_rid_is_sha256_of_the_spki_and_it_opens(enclave: Enclave) -> None:
    blob = build_envelope(b"secret", enclave.spki, enclave.key.public_key())
    assert split(blob).rid == hashlib.sha256(enclave.spki).digest()
    assert open_envelope(blob, enclave.key) == b"secret"


@pytest.mark.parametrize("size", [0, 1, 15, 16, 999, 1000, 1008, 2400, 4096])
def test_content_is_chunked_at_1000_bytes(size: int, enclave: Enclave) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob = build_envelope(plaintext, enclave.spki, enclave.key.public_key())
    chunks = split(blob).chunks
    padded = (size // 16 + 1) * 16
    assert sum(map(len, chunks)) == padded
    assert all(len(c) == CHUNK_SIZE for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= CHUNK_SIZE
    assert open_envelope(blob, enclave.key) == plaintext


def test_refuses_oversized_plaintext_and_bad_injected_values(enclave: Enclave) -> None:
    public = enclave.key.public_key()
    with pytest.raises(ValueError, match="larger"):
        build_envelope(bytes(8193), enclave.spki, public)
    with pytest.raises(ValueError, match="cek"):
        build_envelope(b"x", enclave.spki, public, cek=bytes(16))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("size", [32, 2500])
def test_openssl_cms_decrypt_opens_it(size: int, enclave: Enclave, tmp_path: Path) -> None:
    plaintext = bytes((i * 7) % 251 for i in range(size))
    (tmp_path / "env.der").write_bytes(
        build_envelope(plaintext, enclave.spki, enclave.key.public_key())
    )
    (tmp_path / "key.pem").write_bytes(
        enclave.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    result = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-in", "env.der", "-inkey", "key.pem"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout == plaintext
