"""A strict reader for KMS ``CiphertextForRecipient``: CMS EnvelopedData in BER.

KMS answers a request that carries ``Recipient`` with a CMS (RFC 5652) ContentInfo
holding EnvelopedData, encoded in BER by a BouncyCastle-style streaming generator::

    ContentInfo (indefinite) {
      contentType id-envelopedData
      [0] EXPLICIT (indefinite) EnvelopedData (indefinite) {
        version 2
        recipientInfos SET { KeyTransRecipientInfo {
          version 2
          rid [0] IMPLICIT SubjectKeyIdentifier   -- SHA-256 of our DER SubjectPublicKeyInfo
          keyEncryptionAlgorithm rsaesOaep { hashFunc [0] sha256, maskGenFunc [1] mgf1(sha256) }
          encryptedKey OCTET STRING               -- RSA-OAEP(AES-256 content key)
        } }
        encryptedContentInfo (indefinite) {
          id-data, aes256-CBC { IV OCTET STRING (16) },
          encryptedContent [0] IMPLICIT OCTET STRING   -- primitive, or constructed chunks
        }
      }
    }

Why our own reader (see ``docs/adr/0010-cms-envelope-reader.md``): ``cryptography``'s
PKCS#7 functions reject BER and subjectKeyIdentifier recipients; pyasn1 cannot decode
these blobs (indefinite-length ``ANY``), and asn1crypto silently accepts extra
elements, two recipients and BER-illegal integers.

What this module accepts, on purpose and no more:

* BER lengths, definite or indefinite, for every constructed element; minimal length
  octets only (KMS never sends others); single-octet tags only.
* ``encryptedContent`` primitive (``80 len``) or constructed (``a0``) with OCTET STRING
  chunks, nested constructed OCTET STRINGs too; chunks are concatenated.
* Exactly one KeyTransRecipientInfo v2 with a 32-byte subjectKeyIdentifier.
* RSAES-OAEP with explicit SHA-256 and MGF1-SHA-256 (NULL or absent hash parameters, an
  explicit empty-label pSourceFunc); the SHA-1 defaults are refused.
* AES-256-CBC with a 16-byte IV. AES-128/192 are refused: KMS only sends AES-256, and
  accepting weaker variants would only widen what a forged envelope may use.
* No originatorInfo, no unprotectedAttrs, nothing after the structure.

After parsing, :func:`open_envelope` unwraps the content key and decrypts; every failure
from there on raises :class:`~attested.errors.EnvelopeDecryptionError` with one message.

The envelope is **not authenticated**: anyone who saw the attestation document (it holds
our public key) can make a well-formed envelope. Only TLS to KMS, terminated inside the
enclave, authenticates what KMS answered.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested.errors import EnvelopeDecryptionError, EnvelopeNotForRecipient, MalformedEnvelope

__all__ = [
    "MAX_DEPTH",
    "MAX_ENVELOPE_SIZE",
    "Envelope",
    "decrypt_envelope",
    "key_id_of",
    "parse_envelope",
]

MAX_ENVELOPE_SIZE = 64 * 1024
"""Largest envelope read. KMS's model caps CiphertextForRecipient at 6144 bytes."""

MAX_DEPTH = 12
"""Deepest nesting of constructed elements (real envelopes: 7)."""

_MAX_NODES = 512
"""Most elements in one envelope (real envelopes: about 30)."""

_MAX_LENGTH_OCTETS = 3  # 3 octets already say 16 MiB, far above MAX_ENVELOPE_SIZE

UNWRAP_FAILED = (
    "the envelope could not be decrypted with this recipient key "
    "(a different key, or a corrupted or forged envelope)"
)

# Tags (the whole identifier octet: class, constructed bit, number).
_EOC = 0x00
_INTEGER = 0x02
_OCTET_STRING = 0x04
_NULL = 0x05
_OID = 0x06
_SEQUENCE = 0x30
_SET = 0x31
_OCTET_STRING_CONSTRUCTED = 0x24
_CTX0_PRIMITIVE = 0x80
_CTX0 = 0xA0
_CTX1 = 0xA1
_CTX2 = 0xA2
_CONSTRUCTED = 0x20

# Object identifiers, as their DER content octets (compared byte for byte, which also
# refuses non-minimal encodings of the same number).
_OID_ENVELOPED_DATA = bytes.fromhex("2a864886f70d010703")  # 1.2.840.113549.1.7.3
_OID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1
_OID_RSAES_OAEP = bytes.fromhex("2a864886f70d010107")  # 1.2.840.113549.1.1.7
_OID_MGF1 = bytes.fromhex("2a864886f70d010108")  # 1.2.840.113549.1.1.8
_OID_P_SPECIFIED = bytes.fromhex("2a864886f70d010109")  # 1.2.840.113549.1.1.9
_OID_SHA256 = bytes.fromhex("608648016503040201")  # 2.16.840.1.101.3.4.2.1
_OID_SHA1 = bytes.fromhex("2b0e03021a")  # 1.3.14.3.2.26
_OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42
_OID_AES128_CBC = bytes.fromhex("608648016503040102")
_OID_AES192_CBC = bytes.fromhex("608648016503040116")

_OID_NAMES = {
    _OID_SHA1: "sha1",
    _OID_SHA256: "sha256",
    _OID_AES128_CBC: "aes128-CBC",
    _OID_AES192_CBC: "aes192-CBC",
    _OID_AES256_CBC: "aes256-CBC",
}

_KEY_ID_SIZE = 32
_IV_SIZE = 16
_CEK_SIZE = 32
_BLOCK = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The parts of a parsed envelope that decryption needs. Nothing here is secret.

    Attributes:
        recipient_key_id: the subjectKeyIdentifier: SHA-256 of the recipient's DER
            SubjectPublicKeyInfo.
        encrypted_key: the RSA-OAEP wrapped content-encryption key.
        iv: the AES-CBC initialisation vector (16 bytes).
        encrypted_content: the AES-256-CBC ciphertext, chunks concatenated.
    """

    recipient_key_id: bytes
    encrypted_key: bytes = field(repr=False)
    iv: bytes
    encrypted_content: bytes = field(repr=False)


class _Node(NamedTuple):
    """One parsed element (a NamedTuple: an envelope has ~30, made on every call)."""

    tag: int
    offset: int
    content: bytes | tuple[_Node, ...]  # bytes for primitive, children for constructed

    @property
    def children(self) -> tuple[_Node, ...]:
        content = self.content
        if isinstance(content, bytes):
            raise MalformedEnvelope(
                f"CMS: element at offset {self.offset} must be constructed, is primitive"
            )
        return content

    @property
    def value(self) -> bytes:
        content = self.content
        if not isinstance(content, bytes):
            raise MalformedEnvelope(
                f"CMS: element at offset {self.offset} must be primitive, is constructed"
            )
        return content


# NamedTuple's own __new__ is a Python-level function; this skips it (the parser makes
# about 30 nodes per envelope on every KMS call).
_new = tuple.__new__


class _Parser:
    """Generic strict BER: turns bytes into a tree of :class:`_Node`."""

    def __init__(self, data: bytes, *, shortcut: bool = True) -> None:
        self.data = data
        self.nodes = 0
        self.shortcut = shortcut

    def element(self, pos: int, end: int, depth: int) -> tuple[_Node, int]:
        """Read one element starting at ``pos`` that must end by ``end``."""
        data = self.data
        if end - pos < 2:
            raise MalformedEnvelope(f"CMS: truncated at offset {pos}")
        start = pos
        tag = data[pos]
        first = data[pos + 1]
        pos += 2
        if tag & 0x1F == 0x1F:
            raise MalformedEnvelope(f"CMS: multi-octet tag at offset {start} is not used by KMS")
        if tag == _EOC:
            raise MalformedEnvelope(f"CMS: unexpected end-of-contents at offset {start}")
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise MalformedEnvelope(f"CMS: more than {_MAX_NODES} elements")
        constructed = tag & _CONSTRUCTED
        if constructed and depth >= MAX_DEPTH:
            raise MalformedEnvelope(f"CMS: nesting deeper than {MAX_DEPTH} at offset {start}")
        if first < 0x80:
            length = first
        elif first == 0x80:
            if not constructed:
                raise MalformedEnvelope(
                    f"CMS: primitive element at offset {start} has an indefinite length"
                )
            children, pos = self.children(pos, end, depth + 1, indefinite=True)
            return _new(_Node, (tag, start, children)), pos
        else:
            count = first & 0x7F
            if count > _MAX_LENGTH_OCTETS:
                raise MalformedEnvelope(f"CMS: length at offset {start} is too large")
            if end - pos < count:
                raise MalformedEnvelope(f"CMS: truncated length at offset {start}")
            length = int.from_bytes(data[pos : pos + count], "big")
            if length < 0x80 or data[pos] == 0:
                raise MalformedEnvelope(f"CMS: non-minimal length at offset {start}")
            pos += count
        content_end = pos + length
        if content_end > end:
            raise MalformedEnvelope(
                f"CMS: element at offset {start} claims {length} bytes, "
                f"only {end - pos} remain in its container"
            )
        if not constructed:
            return _new(_Node, (tag, start, data[pos:content_end])), content_end
        if (
            self.shortcut
            and content_end - start == len(_KMS_KEY_ALGORITHM)
            and data[start:content_end] == _KMS_KEY_ALGORITHM
        ):
            self.nodes += _KMS_KEY_ALGORITHM_ELEMENTS - 1
            return _new(_Node, (tag, start, _KMS_KEY_ALGORITHM_CHILDREN)), content_end
        children, _ = self.children(pos, content_end, depth + 1, indefinite=False)
        return _new(_Node, (tag, start, children)), content_end

    def children(
        self, pos: int, end: int, depth: int, *, indefinite: bool
    ) -> tuple[tuple[_Node, ...], int]:
        """The elements of a constructed value: up to ``end``, or up to an EOC."""
        data = self.data
        found: list[_Node] = []
        while True:
            if indefinite:
                if end - pos >= 2 and data[pos] == _EOC and data[pos + 1] == 0x00:
                    return tuple(found), pos + 2
            elif pos == end:
                return tuple(found), pos
            # Fast path for the common case, a short primitive element: the same checks
            # as element(), without a call per OID, INTEGER and OCTET STRING.
            if end - pos >= 2:
                tag = data[pos]
                length = data[pos + 1]
                if (
                    length < 0x80
                    and not tag & _CONSTRUCTED
                    and tag & 0x1F != 0x1F
                    and tag != _EOC
                    and pos + 2 + length <= end
                ):
                    self.nodes += 1
                    if self.nodes > _MAX_NODES:
                        raise MalformedEnvelope(f"CMS: more than {_MAX_NODES} elements")
                    found.append(_new(_Node, (tag, pos, data[pos + 2 : pos + 2 + length])))
                    pos += 2 + length
                    continue
            child, pos = self.element(pos, end, depth)
            found.append(child)


def _expect(node: _Node, tag: int, what: str) -> _Node:
    if node.tag != tag:
        raise MalformedEnvelope(
            f"CMS: {what} at offset {node.offset}: expected tag 0x{tag:02x}, found 0x{node.tag:02x}"
        )
    return node


def _fields(node: _Node, what: str, count: int, optional: int = 0) -> tuple[_Node, ...]:
    """The children of a constructed ``node``: between ``count`` and ``count + optional``."""
    children = node.children
    if not count <= len(children) <= count + optional:
        wanted = str(count) if not optional else f"{count} to {count + optional}"
        raise MalformedEnvelope(
            f"CMS: {what} at offset {node.offset} has {len(children)} elements, expected {wanted}"
        )
    return children


def _oid(node: _Node, what: str) -> bytes:
    return _expect(node, _OID, what).value


def _version(node: _Node, what: str, expected: int) -> None:
    value = _expect(node, _INTEGER, what).value
    if value != bytes([expected]):
        raise MalformedEnvelope(
            f"CMS: {what} must be {expected}, got 0x{value.hex()[:16] or 'empty'}"
        )


def _name(oid: bytes) -> str:
    return _OID_NAMES.get(oid, f"OID {oid.hex()}")


def _sha256_identifier(node: _Node, what: str) -> None:
    """An AlgorithmIdentifier that must be SHA-256 with NULL or absent parameters."""
    parts = _fields(_expect(node, _SEQUENCE, what), what, 1, optional=1)
    oid = _oid(parts[0], what)
    if oid != _OID_SHA256:
        raise MalformedEnvelope(f"CMS: {what} is {_name(oid)}; only sha256 is accepted")
    if len(parts) == 2 and (parts[1].tag != _NULL or parts[1].value):
        raise MalformedEnvelope(f"CMS: {what} parameters must be NULL or absent")


def _oaep_parameters(node: _Node) -> None:
    """RSAES-OAEP-params (RFC 4055) that must say SHA-256, MGF1-SHA-256, empty label."""
    what = "RSAES-OAEP parameters"
    params = _expect(node, _SEQUENCE, what).children
    tags = [p.tag for p in params]
    if _CTX0 not in tags or _CTX1 not in tags:
        raise MalformedEnvelope(
            "CMS: RSAES-OAEP parameters leave the hash or mask generation function at its "
            "SHA-1 default; KMS was asked for RSAES_OAEP_SHA_256 and must say SHA-256 "
            "explicitly"
        )
    if tags not in ([_CTX0, _CTX1], [_CTX0, _CTX1, _CTX2]):
        raise MalformedEnvelope(f"CMS: {what} have unexpected fields {bytes(tags).hex()}")
    hash_func = _fields(params[0], "hashFunc", 1)[0]
    _sha256_identifier(hash_func, "OAEP hashFunc")
    mask_gen = _fields(_expect(_fields(params[1], "maskGenFunc", 1)[0], _SEQUENCE, "MGF"), "MGF", 2)
    if _oid(mask_gen[0], "maskGenFunc") != _OID_MGF1:
        raise MalformedEnvelope("CMS: OAEP maskGenFunc is not MGF1")
    _sha256_identifier(mask_gen[1], "MGF1 hash")
    if len(params) == 3:
        source = _expect(_fields(params[2], "pSourceFunc", 1)[0], _SEQUENCE, "pSourceFunc")
        source_oid, label = _fields(source, "pSourceFunc", 2)
        if _oid(source_oid, "pSourceFunc") != _OID_P_SPECIFIED or (
            _expect(label, _OCTET_STRING, "OAEP label").value
        ):
            raise MalformedEnvelope("CMS: OAEP label must be empty (pSpecified, empty)")


def _key_algorithm(node: _Node) -> None:
    """The keyEncryptionAlgorithm: RSAES-OAEP with SHA-256 parameters."""
    algorithm = _fields(_expect(node, _SEQUENCE, "keyEncryptionAlgorithm"), "kea", 1, 1)
    if _oid(algorithm[0], "keyEncryptionAlgorithm") != _OID_RSAES_OAEP:
        raise MalformedEnvelope(
            f"CMS: key transport is {_name(algorithm[0].value)}, not RSAES-OAEP"
        )
    if len(algorithm) == 1:
        raise MalformedEnvelope(
            "CMS: RSAES-OAEP without parameters means SHA-1; KMS was asked for RSAES_OAEP_SHA_256"
        )
    _oaep_parameters(algorithm[1])


# The exact keyEncryptionAlgorithm KMS writes (rsaesOaep, [0] sha256 NULL, [1] mgf1(sha256
# NULL)). It is parsed and checked once here, at import, with the same code as any other
# encoding; an envelope carrying these exact bytes reuses the checked children instead of
# walking 13 elements again. Anything else takes the full path.
_KMS_KEY_ALGORITHM = bytes.fromhex(
    "303c06092a864886f70d010107302fa00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
_KMS_KEY_ALGORITHM_NODE, _ = _Parser(_KMS_KEY_ALGORITHM, shortcut=False).element(
    0, len(_KMS_KEY_ALGORITHM), 0
)
_key_algorithm(_KMS_KEY_ALGORITHM_NODE)
_KMS_KEY_ALGORITHM_CHILDREN = _KMS_KEY_ALGORITHM_NODE.content
_KMS_KEY_ALGORITHM_ELEMENTS = 13


def _octets(node: _Node) -> bytes:
    """Concatenate the leaves of a (possibly constructed, nested) OCTET STRING."""
    if isinstance(node.content, bytes):
        return node.content
    parts = []
    for child in node.children:
        if child.tag not in (_OCTET_STRING, _OCTET_STRING_CONSTRUCTED):
            raise MalformedEnvelope(
                f"CMS: encryptedContent chunk at offset {child.offset} is not an OCTET STRING"
            )
        parts.append(_octets(child))
    return b"".join(parts)


def parse_envelope(blob: bytes) -> Envelope:
    """Parse a ``CiphertextForRecipient`` without decrypting anything.

    Args:
        blob: the raw bytes KMS returned (not base64).

    Returns:
        The recipient key id, wrapped key, IV and ciphertext.

    Raises:
        MalformedEnvelope: the bytes are not the envelope KMS sends (see the module
            docstring for exactly what is accepted).
        TypeError: ``blob`` is not bytes.
    """
    if not isinstance(blob, bytes):
        raise TypeError(f"envelope must be bytes, not {type(blob).__name__}")
    if not blob:
        raise MalformedEnvelope("CMS: the envelope is empty")
    if len(blob) > MAX_ENVELOPE_SIZE:
        raise MalformedEnvelope(
            f"CMS: the envelope is {len(blob)} bytes; at most {MAX_ENVELOPE_SIZE} are read"
        )
    root, end = _Parser(blob).element(0, len(blob), 0)
    if end != len(blob):
        raise MalformedEnvelope(f"CMS: {len(blob) - end} bytes after the envelope")

    content_type, explicit = _fields(_expect(root, _SEQUENCE, "ContentInfo"), "ContentInfo", 2)
    if _oid(content_type, "contentType") != _OID_ENVELOPED_DATA:
        raise MalformedEnvelope(
            f"CMS: contentType is {_name(content_type.value)}, not id-envelopedData"
        )
    (enveloped,) = _fields(_expect(explicit, _CTX0, "ContentInfo content"), "[0] content", 1)
    fields = _expect(enveloped, _SEQUENCE, "EnvelopedData").children
    if [f.tag for f in fields] != [_INTEGER, _SET, _SEQUENCE]:
        # originatorInfo [0] and unprotectedAttrs [1] are optional in RFC 5652; KMS
        # sends neither, so their presence (or anything else) is refused by name.
        raise MalformedEnvelope(
            "CMS: EnvelopedData must hold version, recipientInfos and "
            "encryptedContentInfo only (no originatorInfo, no unprotectedAttrs), found "
            f"tags {bytes(f.tag for f in fields).hex(' ')}"
        )
    version, recipients, encrypted = fields
    _version(version, "EnvelopedData version", 2)

    if len(recipients.children) != 1:
        raise MalformedEnvelope(
            f"CMS: expected exactly one recipient, found {len(recipients.children)}"
        )
    ktri = _expect(recipients.children[0], _SEQUENCE, "KeyTransRecipientInfo")
    ri_version, rid, key_algorithm, encrypted_key = _fields(ktri, "KeyTransRecipientInfo", 4)
    _version(ri_version, "KeyTransRecipientInfo version", 2)
    key_id = _expect(rid, _CTX0_PRIMITIVE, "rid (subjectKeyIdentifier)").value
    if len(key_id) != _KEY_ID_SIZE:
        raise MalformedEnvelope(
            f"CMS: subjectKeyIdentifier is {len(key_id)} bytes, expected {_KEY_ID_SIZE} "
            "(SHA-256 of the SubjectPublicKeyInfo)"
        )
    if key_algorithm.content is not _KMS_KEY_ALGORITHM_CHILDREN:
        _key_algorithm(key_algorithm)
    wrapped = _expect(encrypted_key, _OCTET_STRING, "encryptedKey").value

    content_info = _fields(
        _expect(encrypted, _SEQUENCE, "EncryptedContentInfo"), "EncryptedContentInfo", 3
    )
    inner_type, content_algorithm, content = content_info
    if _oid(inner_type, "encrypted contentType") != _OID_DATA:
        raise MalformedEnvelope("CMS: encrypted contentType is not id-data")
    cipher_oid, iv_node = _fields(
        _expect(content_algorithm, _SEQUENCE, "contentEncryptionAlgorithm"), "cea", 2
    )
    cipher = _oid(cipher_oid, "contentEncryptionAlgorithm")
    if cipher != _OID_AES256_CBC:
        raise MalformedEnvelope(
            f"CMS: content encryption is {_name(cipher)}; only aes256-CBC is accepted"
        )
    iv = _expect(iv_node, _OCTET_STRING, "AES-CBC IV").value
    if len(iv) != _IV_SIZE:
        raise MalformedEnvelope(f"CMS: AES-CBC IV is {len(iv)} bytes, expected {_IV_SIZE}")
    if content.tag not in (_CTX0_PRIMITIVE, _CTX0):
        raise MalformedEnvelope(
            f"CMS: encryptedContent at offset {content.offset} must be [0] IMPLICIT "
            f"OCTET STRING, found tag 0x{content.tag:02x}"
        )
    return Envelope(
        recipient_key_id=key_id,
        encrypted_key=wrapped,
        iv=iv,
        encrypted_content=_octets(content),
    )


def key_id_of(public_key: rsa.RSAPublicKey) -> bytes:
    """The subjectKeyIdentifier KMS writes for ``public_key``: SHA-256 of its DER SPKI."""
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


_OAEP_SHA256 = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def decrypt_envelope(envelope: Envelope, private_key: rsa.RSAPrivateKey, *, key_id: bytes) -> bytes:
    """Unwrap the content key with ``private_key`` and decrypt the content.

    Args:
        envelope: a parsed envelope.
        private_key: the recipient's RSA private key.
        key_id: SHA-256 of the DER SubjectPublicKeyInfo of ``private_key`` (passed in
            so callers can cache it).

    Returns:
        The plaintext.

    Raises:
        EnvelopeNotForRecipient: the envelope names another key.
        EnvelopeDecryptionError: any unwrap or decryption failure, always with the same
            message.
    """
    if not hmac.compare_digest(envelope.recipient_key_id, key_id):
        raise EnvelopeNotForRecipient(
            "the envelope is addressed to the key with SHA-256(SPKI) "
            f"{envelope.recipient_key_id.hex()}, but this recipient key is {key_id.hex()}: "
            "it was made for another process or an older key"
        )
    # From here on, every failure is the same error with the same message, and the
    # checks do not stop early on secret-dependent data more than the primitives do.
    ok = True
    modulus_bytes = (private_key.key_size + 7) // 8
    content = envelope.encrypted_content
    if len(envelope.encrypted_key) != modulus_bytes:
        ok = False
    if not content or len(content) % _BLOCK:
        ok = False
    if not ok:
        raise EnvelopeDecryptionError(UNWRAP_FAILED)
    try:
        cek = private_key.decrypt(envelope.encrypted_key, _OAEP_SHA256)
    except ValueError:
        raise EnvelopeDecryptionError(UNWRAP_FAILED) from None
    if len(cek) != _CEK_SIZE:
        raise EnvelopeDecryptionError(UNWRAP_FAILED)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(envelope.iv)).decryptor()
    padded = decryptor.update(content) + decryptor.finalize()
    # Strict PKCS#7: the last byte n is 1..16 and the last n bytes all equal n. The
    # last block is compared in one constant-time comparison whatever n says.
    pad = padded[-1]
    size = pad if 1 <= pad <= _BLOCK else _BLOCK
    expected = padded[-_BLOCK : len(padded) - size] + bytes([pad]) * size
    if not hmac.compare_digest(padded[-_BLOCK:], expected) or not 1 <= pad <= _BLOCK:
        raise EnvelopeDecryptionError(UNWRAP_FAILED)
    return padded[: len(padded) - pad]
