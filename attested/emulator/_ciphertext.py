"""The emulator's own symmetric ciphertext format. Pure (randomness can be injected).

Real KMS ciphertext blobs are opaque and undocumented; this format is ours, and only this
emulator can open it. Layout (version 1)::

    offset  size  field
    0       1     version = 0x01
    1       16    key id (the key's UUID, 16 raw bytes): Decrypt needs no KeyId
    17      12    AES-GCM nonce (random)
    29      n+16  AES-256-GCM(plaintext) || 16-byte tag

The associated data is ``b"attested-kms-emulator/1" || bytes 0..16 || canonical(context)``
so the version, the key id and the encryption context are all authenticated: a changed
byte, another key or another context fails as one uniform error. The canonical context
encoding is ``u16 count || (u16 len || key || u16 len || value)*`` over UTF-8, sorted by
the key's UTF-8 bytes.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attested.errors import MalformedError

__all__ = [
    "MAX_CIPHERTEXT_SIZE",
    "MAX_CONTEXT_SIZE",
    "OVERHEAD",
    "SealedBlob",
    "canonical_context",
    "open_blob",
    "parse_blob",
    "seal",
]

VERSION = 1
_AAD_LABEL = b"attested-kms-emulator/1"
_HEADER = 1 + 16
_NONCE = 12
_TAG = 16
OVERHEAD = _HEADER + _NONCE + _TAG
"""Bytes a ciphertext adds to its plaintext."""
MAX_CIPHERTEXT_SIZE = 6144
"""KMS's ``CiphertextType`` maximum."""
MAX_CONTEXT_SIZE = 8192
"""Largest canonical encryption context accepted, in bytes."""
_INVALID = "ciphertext is not valid for this emulator, key and encryption context"


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedBlob:
    """A parsed, not yet authenticated, ciphertext.

    Attributes:
        key_id: the UUID of the key it names.
        header: bytes 0..16 (version and key id), authenticated as associated data.
        nonce: the AES-GCM nonce.
        body: ciphertext and tag.
    """

    key_id: str
    header: bytes
    nonce: bytes
    body: bytes


def canonical_context(context: Mapping[str, str]) -> bytes:
    """The canonical encoding of an encryption context (bound as associated data).

    Raises:
        ValueError: the encoding would be larger than :data:`MAX_CONTEXT_SIZE` or a
            string is not encodable as UTF-8.
    """
    items = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items())
    out = [struct.pack(">H", len(items))]
    size = 2
    for key, value in items:
        size += 4 + len(key) + len(value)
        if size > MAX_CONTEXT_SIZE:
            raise ValueError(f"encryption context is larger than {MAX_CONTEXT_SIZE} bytes")
        out.append(struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value)
    return b"".join(out)


def seal(
    key: bytes,
    key_id: str,
    plaintext: bytes,
    context: Mapping[str, str],
    *,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` under a 32-byte key, binding the key id and the context.

    Args:
        key: the key material (32 bytes).
        key_id: the key's UUID (text form).
        plaintext: at most ``MAX_CIPHERTEXT_SIZE - OVERHEAD`` bytes.
        context: the encryption context.
        nonce: a 12-byte nonce (tests only); random when ``None``.

    Raises:
        ValueError: wrong key or nonce size, a plaintext too large, a bad key id or context.
    """
    if len(key) != 32:
        raise ValueError("key material must be 32 bytes")
    if len(plaintext) > MAX_CIPHERTEXT_SIZE - OVERHEAD:
        raise ValueError("plaintext is too large for a ciphertext blob")
    nonce = os.urandom(_NONCE) if nonce is None else nonce
    if len(nonce) != _NONCE:
        raise ValueError("nonce must be 12 bytes")
    header = bytes([VERSION]) + uuid.UUID(key_id).bytes
    aad = _AAD_LABEL + header + canonical_context(context)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def parse_blob(blob: bytes) -> SealedBlob:
    """Split a ciphertext into its fields, checking only sizes and the version.

    Raises:
        MalformedError: the blob is too short, too long, or of an unknown version.
    """
    if not isinstance(blob, bytes):
        raise TypeError("blob must be bytes")
    if not OVERHEAD < len(blob) <= MAX_CIPHERTEXT_SIZE or blob[0] != VERSION:
        raise MalformedError(_INVALID)
    return SealedBlob(
        key_id=str(uuid.UUID(bytes=blob[1:_HEADER])),
        header=blob[:_HEADER],
        nonce=blob[_HEADER : _HEADER + _NONCE],
        body=blob[_HEADER + _NONCE :],
    )


def open_blob(key: bytes, blob: SealedBlob, context: Mapping[str, str]) -> bytes:
    """Authenticate and decrypt a parsed ciphertext.

    Raises:
        MalformedError: the key, the context or any byte of the blob is wrong (one
            uniform message whatever the cause).
    """
    try:
        aad = _AAD_LABEL + blob.header + canonical_context(context)
        return AESGCM(key).decrypt(blob.nonce, blob.body, aad)
    except (InvalidTag, ValueError) as exc:
        raise MalformedError(_INVALID) from exc
