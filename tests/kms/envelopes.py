"""A test-only builder of KMS-shaped CMS envelopes, and ways to break them.

It writes what KMS (BouncyCastle's streaming generator) writes: indefinite lengths on
the outer five levels, DER inside recipientInfos and the AlgorithmIdentifiers, and the
ciphertext as a constructed [0] of OCTET STRING chunks (or the primitive form). Each
argument changes exactly one thing, so tests can build one broken envelope per rule.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
OID_DATA = bytes.fromhex("06092a864886f70d010701")
OID_RSAES_OAEP = bytes.fromhex("06092a864886f70d010107")
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")
OID_AES128_CBC = bytes.fromhex("0609608648016503040102")
SHA256_ID = bytes.fromhex("300d06096086480165030402010500")
SHA256_ID_NO_NULL = bytes.fromhex("300b0609608648016503040201")
SHA1_ID = bytes.fromhex("300906052b0e03021a0500")


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """A definite-length element."""
    return bytes([tag]) + length(len(content)) + content


def indef(tag: int, *children: bytes) -> bytes:
    """An indefinite-length constructed element."""
    return bytes([tag, 0x80]) + b"".join(children) + b"\x00\x00"


def oaep_params(hash_id: bytes = SHA256_ID, mgf_hash_id: bytes = SHA256_ID) -> bytes:
    mgf = tlv(0x30, bytes.fromhex("06092a864886f70d010108") + mgf_hash_id)
    return tlv(0x30, tlv(0xA0, hash_id) + tlv(0xA1, mgf))


OAEP_SHA256 = oaep_params()


def spki(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def pkcs7(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def encrypt_content(cek: bytes, iv: bytes, padded: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def chunked(ciphertext: bytes, size: int) -> list[bytes]:
    return [ciphertext[i : i + size] for i in range(0, len(ciphertext), size)] or [b""]


def build(
    plaintext: bytes,
    public_key: rsa.RSAPublicKey,
    *,
    cek: bytes | None = None,
    iv: bytes | None = None,
    key_id: bytes | None = None,
    wrapped_key: bytes | None = None,
    oaep_hash: hashes.HashAlgorithm | None = None,
    kea: bytes | None = None,
    cipher_oid: bytes = OID_AES256_CBC,
    iv_element: bytes | None = None,
    padded: bytes | None = None,
    ciphertext: bytes | None = None,
    content: str = "chunks",
    chunk_size: int = 1000,
    definite: bool = False,
    enveloped_version: bytes = b"\x02\x01\x02",
    ri_version: bytes = b"\x02\x01\x02",
    rid: bytes | None = None,
    recipients: list[bytes] | None = None,
    extra_in_enveloped: bytes = b"",
    before_recipients: bytes = b"",
    content_type: bytes = OID_ENVELOPED_DATA,
    inner_type: bytes = OID_DATA,
    trailing: bytes = b"",
) -> bytes:
    """An envelope of ``plaintext`` for ``public_key``; every keyword changes one thing.

    ``content`` is ``"chunks"`` (constructed indefinite [0] of OCTET STRINGs),
    ``"primitive"`` (80 len ct), ``"definite-chunks"`` (constructed definite [0]),
    ``"nested"`` (chunks inside a constructed OCTET STRING) or ``"absent"``.
    """
    cek = os.urandom(32) if cek is None else cek
    iv = os.urandom(16) if iv is None else iv
    algorithm = oaep_hash or hashes.SHA256()
    if wrapped_key is None:
        wrapped_key = public_key.encrypt(
            cek, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
        )
    if key_id is None:
        key_id = hashlib.sha256(spki(public_key)).digest()
    if ciphertext is None:
        ciphertext = encrypt_content(cek, iv, pkcs7(plaintext) if padded is None else padded)

    kea = tlv(0x30, OID_RSAES_OAEP + OAEP_SHA256) if kea is None else kea
    ktri = tlv(
        0x30,
        ri_version + (tlv(0x80, key_id) if rid is None else rid) + kea + tlv(0x04, wrapped_key),
    )
    recipient_set = tlv(0x31, b"".join(recipients) if recipients is not None else ktri)
    cea = tlv(0x30, cipher_oid + (tlv(0x04, iv) if iv_element is None else iv_element))
    chunks = [tlv(0x04, c) for c in chunked(ciphertext, chunk_size)]
    if content == "chunks":
        encrypted = indef(0xA0, *chunks)
    elif content == "primitive":
        encrypted = tlv(0x80, ciphertext)
    elif content == "definite-chunks":
        encrypted = tlv(0xA0, b"".join(chunks))
    elif content == "nested":
        encrypted = indef(0xA0, indef(0x24, *chunks[:1]), *chunks[1:])
    elif content == "absent":
        encrypted = b""
    else:
        raise ValueError(content)
    if definite:
        eci = tlv(0x30, inner_type + cea + encrypted)
        enveloped = tlv(
            0x30,
            enveloped_version + before_recipients + recipient_set + eci + extra_in_enveloped,
        )
        return tlv(0x30, content_type + tlv(0xA0, enveloped)) + trailing
    eci = indef(0x30, inner_type, cea, encrypted)
    enveloped = indef(
        0x30, enveloped_version, before_recipients, recipient_set, eci, extra_in_enveloped
    )
    return indef(0x30, content_type, indef(0xA0, enveloped)) + trailing
