"""The CMS envelope KMS returns as ``CiphertextForRecipient``, byte for byte. Pure.

KMS answers a request with ``Recipient`` with a BER-encoded CMS ``ContentInfo`` holding an
``EnvelopedData`` (research: ``kms-recipient-cms.md`` section 1). This module writes
exactly that layout::

    30 80                                ContentInfo, indefinite
      06 09 2a864886f70d010703           id-envelopedData
      a0 80                              [0] EXPLICIT, indefinite
        30 80                            EnvelopedData, indefinite
          02 01 02                       version 2
          31 82 ....                     recipientInfos SET (definite; DER inside)
            30 82 ....                   KeyTransRecipientInfo
              02 01 02                   version 2
              80 20 <32 bytes>           rid [0] = SHA-256(DER SubjectPublicKeyInfo)
              30 3c ...                  rsaesOaep, explicit SHA-256 / MGF1-SHA-256 params
              04 82 01 00 <256 bytes>    encryptedKey = RSA-OAEP(CEK)
          30 80                          EncryptedContentInfo, indefinite
            06 09 2a864886f70d010701     id-data
            30 1d 06 09 60864801650304012a 04 10 <IV>    aes-256-cbc, IV as parameters
            a0 80 (04 len chunk)+ 00 00  [0] constructed: OCTET STRINGs of <= 1000 bytes
          00 00
        00 00
      00 00
    00 00

No library writes this (pyca/cryptography's PKCS#7 builder emits DER with
issuerAndSerialNumber recipients and no OAEP), so the few fixed byte strings are written
out here and checked against KMS's real envelopes in the tests.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CHUNK_SIZE", "MAX_ENVELOPE_PLAINTEXT", "build_envelope"]

CHUNK_SIZE = 1000
"""Largest OCTET STRING chunk of the encrypted content (BouncyCastle's CER default)."""
MAX_ENVELOPE_PLAINTEXT = 8192
"""Largest plaintext accepted (KMS's largest is an RSA-4096 PKCS#8 key, about 2.4 KB)."""

_OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
_OID_DATA = bytes.fromhex("06092a864886f70d010701")
# AlgorithmIdentifier { rsaesOaep, RSAES-OAEP-params { hashFunc [0] sha256 NULL,
#   maskGenFunc [1] { mgf1, { sha256 NULL } } } } -- pSourceFunc absent (empty label).
_RSAES_OAEP_SHA256 = bytes.fromhex(
    "303c06092a864886f70d010107302f"
    "a00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
# AlgorithmIdentifier { aes256-CBC, IV OCTET STRING (16) } without the 16 IV bytes.
_AES256_CBC_PREFIX = bytes.fromhex("301d060960864801650304012a0410")
_INDEFINITE_SEQUENCE = b"\x30\x80"
_EOC = b"\x00\x00"


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def build_envelope(
    plaintext: bytes,
    recipient_spki: bytes,
    recipient_key: rsa.RSAPublicKey,
    *,
    cek: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` for an RSA key the way KMS does for ``Recipient``.

    Args:
        plaintext: what KMS would otherwise return in the clear.
        recipient_spki: the DER SubjectPublicKeyInfo exactly as the attestation document
            carries it (its SHA-256 is the recipient identifier).
        recipient_key: the same key, loaded.
        cek: the 32-byte AES content-encryption key (tests only); random when ``None``.
        iv: the 16-byte IV (tests only); random when ``None``.

    Returns:
        The BER ``ContentInfo``.

    Raises:
        ValueError: the plaintext is larger than :data:`MAX_ENVELOPE_PLAINTEXT`, or
            ``cek`` / ``iv`` have the wrong size.
    """
    if len(plaintext) > MAX_ENVELOPE_PLAINTEXT:
        raise ValueError(f"plaintext is larger than {MAX_ENVELOPE_PLAINTEXT} bytes")
    cek = os.urandom(32) if cek is None else cek
    iv = os.urandom(16) if iv is None else iv
    if len(cek) != 32 or len(iv) != 16:
        raise ValueError("cek must be 32 bytes and iv 16 bytes")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    content = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = recipient_key.encrypt(
        cek, OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    recipient_info = _tlv(
        0x30,
        b"\x02\x01\x02"
        + _tlv(0x80, hashlib.sha256(recipient_spki).digest())
        + _RSAES_OAEP_SHA256
        + _tlv(0x04, encrypted_key),
    )
    chunks = b"".join(
        _tlv(0x04, content[i : i + CHUNK_SIZE]) for i in range(0, len(content), CHUNK_SIZE)
    )
    encrypted_content_info = (
        _INDEFINITE_SEQUENCE
        + _OID_DATA
        + _AES256_CBC_PREFIX
        + iv
        + b"\xa0\x80"
        + chunks
        + _EOC
        + _EOC
    )
    enveloped_data = (
        _INDEFINITE_SEQUENCE
        + b"\x02\x01\x02"
        + _tlv(0x31, recipient_info)
        + encrypted_content_info
        + _EOC
    )
    return _INDEFINITE_SEQUENCE + _OID_ENVELOPED_DATA + b"\xa0\x80" + enveloped_data + _EOC + _EOC
