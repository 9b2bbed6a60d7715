"""KMS keys: the supported key specs and usages, key records, and key material.

Supported matrix (anything else is refused with ``UnsupportedOperationException`` or, for
a combination KMS itself rejects, ``ValidationException``):

==========================  ===============  =============================================
KeySpec                     KeyUsage         operations
==========================  ===============  =============================================
SYMMETRIC_DEFAULT           ENCRYPT_DECRYPT  Encrypt, Decrypt, ReEncrypt, GenerateDataKey*,
                                             GenerateDataKeyPair*
RSA_2048/3072/4096          ENCRYPT_DECRYPT  Encrypt, Decrypt, ReEncrypt (RSAES_OAEP_SHA_1
                                             and _256), GetPublicKey
RSA_2048/3072/4096          SIGN_VERIFY      Sign, Verify (RSASSA_PSS_*, RSASSA_PKCS1_V1_5_*),
                                             GetPublicKey
ECC_NIST_P256/P384/P521     SIGN_VERIFY      Sign, Verify (ECDSA_SHA_256/384/512), GetPublicKey
ECC_SECG_P256K1             SIGN_VERIFY      Sign, Verify (ECDSA_SHA_256), GetPublicKey
ECC_NIST_P256/P384/P521     KEY_AGREEMENT    DeriveSharedSecret (ECDH), GetPublicKey
HMAC_224/256/384/512        GENERATE_VERIFY  GenerateMac, VerifyMac (HMAC_SHA_224/256/384/512)
                            _MAC
==========================  ===============  =============================================

Data key pairs (GenerateDataKeyPair): RSA_2048/3072/4096, ECC_NIST_P256/P384/P521,
ECC_SECG_P256K1 and ECC_NIST_EDWARDS25519. SM2, Ed25519 keys, ML-DSA and ML-KEM are not
emulated.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from attested.keypolicy._evaluate import KeyPolicy

__all__ = [
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "SIGN_VERIFY",
    "SYMMETRIC_DEFAULT",
    "KeyRecord",
    "KeyState",
    "PrivateKey",
    "algorithm_lists",
    "check_spec_usage",
    "curve_of",
    "data_key_pair",
    "encryption_algorithms",
    "generate_material",
    "key_agreement_algorithms",
    "mac",
    "mac_algorithms",
    "rsa_oaep_max_plaintext",
    "sign",
    "signature_digest_size",
    "signing_algorithms",
    "verify_signature",
]

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
KEY_AGREEMENT = "KEY_AGREEMENT"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_RSA_SIZES = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
_USAGES: dict[str, frozenset[str]] = {
    SYMMETRIC_DEFAULT: frozenset({ENCRYPT_DECRYPT}),
    **{spec: frozenset({ENCRYPT_DECRYPT, SIGN_VERIFY}) for spec in _RSA_SIZES},
    "ECC_NIST_P256": frozenset({SIGN_VERIFY, KEY_AGREEMENT}),
    "ECC_NIST_P384": frozenset({SIGN_VERIFY, KEY_AGREEMENT}),
    "ECC_NIST_P521": frozenset({SIGN_VERIFY, KEY_AGREEMENT}),
    "ECC_SECG_P256K1": frozenset({SIGN_VERIFY}),
    "HMAC_224": frozenset({GENERATE_VERIFY_MAC}),
    "HMAC_256": frozenset({GENERATE_VERIFY_MAC}),
    "HMAC_384": frozenset({GENERATE_VERIFY_MAC}),
    "HMAC_512": frozenset({GENERATE_VERIFY_MAC}),
}
# HMAC key spec -> (MAC algorithm, key length in bytes): the key is as long as the hash.
_HMAC = {
    "HMAC_224": ("HMAC_SHA_224", 28),
    "HMAC_256": ("HMAC_SHA_256", 32),
    "HMAC_384": ("HMAC_SHA_384", 48),
    "HMAC_512": ("HMAC_SHA_512", 64),
}
_MAC_HASH = {f"HMAC_SHA_{n}": f"sha{n}" for n in (224, 256, 384, 512)}
_SIGNING = {
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
}
_RSA_SIGNING = [
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
]
_NOT_EMULATED_SPECS = frozenset({"SM2", "ECC_NIST_EDWARDS25519"})
_SIGNING_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA_256": hashes.SHA256,
    "SHA_384": hashes.SHA384,
    "SHA_512": hashes.SHA512,
}


class KeyState:
    """The key states the emulator uses (KMS's ``KeyState`` values)."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """One KMS key as the emulator stores it.

    Attributes:
        key_id: the key's UUID.
        arn: ``arn:aws:kms:REGION:ACCOUNT:key/UUID``.
        created: creation time (UTC).
        description: the key's description.
        key_spec: ``SYMMETRIC_DEFAULT``, ``RSA_2048``, ...
        key_usage: ``ENCRYPT_DECRYPT``, ``SIGN_VERIFY`` or ``KEY_AGREEMENT``.
        state: a :class:`KeyState` value.
        deletion_date: when a key pending deletion goes away.
        pending_window_days: the window given to ScheduleKeyDeletion.
        policy_text: the key policy as stored (returned by GetKeyPolicy).
        policy: the parsed key policy.
        material: 32 raw bytes (symmetric), the raw HMAC key (HMAC), or DER PKCS#8
            (asymmetric). Secret.
        material_id: the ``KeyMaterialId`` (64 hex characters).
        tags: the key's tags, ``(TagKey, TagValue)`` in the order they were first set.
        rotation_period_days: the automatic rotation period when rotation is enabled, else
            ``None`` (the emulator records the setting; it never rotates key material).
    """

    key_id: str
    arn: str
    created: datetime
    description: str
    key_spec: str
    key_usage: str
    state: str
    deletion_date: datetime | None
    pending_window_days: int | None
    policy_text: str = field(repr=False)
    policy: KeyPolicy = field(repr=False, compare=False)
    material: bytes = field(repr=False)
    material_id: str
    tags: tuple[tuple[str, str], ...] = ()
    rotation_period_days: int | None = None

    @property
    def symmetric(self) -> bool:
        """Whether this is a SYMMETRIC_DEFAULT key."""
        return self.key_spec == SYMMETRIC_DEFAULT

    @property
    def asymmetric(self) -> bool:
        """Whether this key has a private key (RSA or ECC)."""
        return self.key_spec in _RSA_SIZES or self.key_spec in _CURVES


def check_spec_usage(key_spec: str, key_usage: str) -> str | None:
    """Why ``key_spec`` with ``key_usage`` cannot be created, or ``None`` if it can.

    Returns:
        ``"unsupported: ..."`` for what the emulator does not emulate, ``"invalid: ..."``
        for combinations KMS rejects too.
    """
    if key_spec in _NOT_EMULATED_SPECS or key_spec not in _USAGES:
        return f"unsupported: the KMS emulator does not emulate KeySpec {key_spec}"
    if key_usage not in _USAGES[key_spec]:
        return f"invalid: KeyUsage {key_usage} is not compatible with KeySpec {key_spec}"
    return None


def generate_material(key_spec: str) -> bytes:
    """New key material for a supported key spec (see :func:`check_spec_usage`)."""
    if key_spec == SYMMETRIC_DEFAULT:
        return os.urandom(32)
    if key_spec in _HMAC:
        return os.urandom(_HMAC[key_spec][1])
    key: PrivateKey
    if key_spec in _RSA_SIZES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[key_spec])
    else:
        key = ec.generate_private_key(_CURVES[key_spec]())
    return key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())


def encryption_algorithms(key_spec: str, key_usage: str) -> list[str]:
    """The ``EncryptionAlgorithms`` of a key."""
    if key_usage != ENCRYPT_DECRYPT:
        return []
    if key_spec == SYMMETRIC_DEFAULT:
        return [SYMMETRIC_DEFAULT]
    return ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]


def signing_algorithms(key_spec: str, key_usage: str) -> list[str]:
    """The ``SigningAlgorithms`` of a key."""
    if key_usage != SIGN_VERIFY:
        return []
    return list(_RSA_SIGNING) if key_spec in _RSA_SIZES else list(_SIGNING[key_spec])


def key_agreement_algorithms(key_spec: str, key_usage: str) -> list[str]:
    """The ``KeyAgreementAlgorithms`` of a key."""
    return ["ECDH"] if key_usage == KEY_AGREEMENT else []


def mac_algorithms(key_spec: str, key_usage: str) -> list[str]:
    """The ``MacAlgorithms`` of a key."""
    return [_HMAC[key_spec][0]] if key_usage == GENERATE_VERIFY_MAC else []


def algorithm_lists(key_spec: str, key_usage: str) -> dict[str, list[str]]:
    """The non-empty algorithm lists of a key's metadata (encryption, signing, MAC, ...)."""
    lists = {
        "EncryptionAlgorithms": encryption_algorithms(key_spec, key_usage),
        "SigningAlgorithms": signing_algorithms(key_spec, key_usage),
        "MacAlgorithms": mac_algorithms(key_spec, key_usage),
        "KeyAgreementAlgorithms": key_agreement_algorithms(key_spec, key_usage),
    }
    return {name: values for name, values in lists.items() if values}


def rsa_oaep_max_plaintext(key_spec: str, algorithm: str) -> int:
    """Largest plaintext RSA-OAEP can encrypt with this key size and hash."""
    digest = 20 if algorithm == "RSAES_OAEP_SHA_1" else 32
    return _RSA_SIZES[key_spec] // 8 - 2 * digest - 2


def curve_of(key_spec: str) -> type[ec.EllipticCurve]:
    """The curve class of an ECC key spec."""
    return _CURVES[key_spec]


_PAIR_SPECS = frozenset({*_RSA_SIZES, *_CURVES, "ECC_NIST_EDWARDS25519"})


def data_key_pair(spec: str) -> tuple[bytes, bytes] | None:
    """A new data key pair as (DER SubjectPublicKeyInfo, DER PKCS#8), or ``None`` if unsupported."""
    if spec not in _PAIR_SPECS:
        return None
    key: PrivateKey
    if spec in _RSA_SIZES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[spec])
    elif spec == "ECC_NIST_EDWARDS25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(_CURVES[spec]())
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    private = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return public, private


def mac(material: bytes, algorithm: str, message: bytes) -> bytes:
    """The RFC 2104 HMAC of ``message`` with an HMAC key's material."""
    return hmac.new(material, message, _MAC_HASH[algorithm]).digest()


def _signing_hash(algorithm: str) -> hashes.HashAlgorithm:
    return _SIGNING_HASH[algorithm[-7:]]()


def signature_digest_size(algorithm: str) -> int:
    """The digest length a ``MessageType=DIGEST`` message must have for ``algorithm``."""
    return _signing_hash(algorithm).digest_size


def _scheme(
    key: PrivateKey, algorithm: str, digest: bool
) -> tuple[hashes.HashAlgorithm | utils.Prehashed, padding.AsymmetricPadding | None]:
    hash_type = _signing_hash(algorithm)
    chosen: hashes.HashAlgorithm | utils.Prehashed = (
        utils.Prehashed(hash_type) if digest else hash_type
    )
    if algorithm.startswith("RSASSA_PSS_"):
        # KMS's PSS uses MGF1 with the message hash and a salt as long as the hash.
        return chosen, padding.PSS(
            mgf=padding.MGF1(_signing_hash(algorithm)), salt_length=hash_type.digest_size
        )
    if algorithm.startswith("RSASSA_PKCS1_V1_5_"):
        return chosen, padding.PKCS1v15()
    return chosen, None


def sign(key: PrivateKey, algorithm: str, message: bytes, *, digest: bool) -> bytes:
    """Sign as KMS does: RSA (PKCS #1) or ECDSA (DER ``Ecdsa-Sig-Value``).

    Args:
        key: the RSA or ECC private key (its signing algorithms include ``algorithm``).
        algorithm: a KMS ``SigningAlgorithmSpec``.
        message: the message, or its digest when ``digest``.
        digest: whether ``message`` is already the digest (``MessageType=DIGEST``).
    """
    chosen, pad = _scheme(key, algorithm, digest)
    if isinstance(key, rsa.RSAPrivateKey):
        assert pad is not None  # noqa: S101 - RSA algorithms have a padding
        return key.sign(message, pad, chosen)
    assert isinstance(key, ec.EllipticCurvePrivateKey)  # noqa: S101 - ECDSA keys
    return key.sign(message, ec.ECDSA(chosen))


def verify_signature(
    key: PrivateKey, algorithm: str, message: bytes, signature: bytes, *, digest: bool
) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``message`` (see :func:`sign`)."""
    chosen, pad = _scheme(key, algorithm, digest)
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            assert pad is not None  # noqa: S101 - RSA algorithms have a padding
            key.public_key().verify(signature, message, pad, chosen)
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)  # noqa: S101 - ECDSA keys
            key.public_key().verify(signature, message, ec.ECDSA(chosen))
    except (InvalidSignature, ValueError):
        return False
    return True
