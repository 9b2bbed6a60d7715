"""What the KMS client returns: plaintext wrapped in :class:`Secret`, in frozen dataclasses."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["DataKey", "DataKeyPair", "DecryptResult", "Secret", "SharedSecret"]


class Secret:
    """Plaintext bytes that must not end up in logs by accident.

    ``repr`` and ``str`` show only the length; ``==`` raises :class:`TypeError` (use
    :meth:`equals`, which compares in constant time); it cannot be hashed, pickled or
    turned into ``bytes`` implicitly. Call :meth:`reveal` to get the bytes.

    Python cannot wipe memory reliably: the bytes live until garbage-collected.

    Args:
        value: the plaintext.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"Secret holds bytes, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> bytes:
        """The plaintext bytes."""
        return self._value

    def equals(self, other: Secret | bytes) -> bool:
        """Constant-time comparison with another secret or with bytes."""
        value = other._value if isinstance(other, Secret) else other
        return hmac.compare_digest(self._value, value)

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret(<redacted, {len(self._value)} bytes>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> NoReturn:
        raise TypeError("Secret does not support ==; use secret.equals(other)")

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled; call reveal() if you must store the bytes")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DecryptResult:
    """The answer to :meth:`KmsClient.decrypt <attested.kms.KmsClient.decrypt>`.

    Attributes:
        plaintext: the decrypted data, opened from ``CiphertextForRecipient``.
        key_id: ARN of the KMS key that decrypted.
        encryption_algorithm: for example ``"SYMMETRIC_DEFAULT"``.
        key_material_id: the key material used, when KMS says (newer API versions).
    """

    plaintext: Secret
    key_id: str
    encryption_algorithm: str | None = None
    key_material_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DataKey:
    """The answer to :meth:`KmsClient.generate_data_key`.

    Attributes:
        plaintext: the data key, opened from ``CiphertextForRecipient``.
        ciphertext_blob: the data key encrypted under the KMS key: store this one.
        key_id: ARN of the KMS key.
        key_material_id: the key material used, when KMS says.
    """

    plaintext: Secret
    ciphertext_blob: bytes = field(repr=False)
    key_id: str
    key_material_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DataKeyPair:
    """The answer to :meth:`KmsClient.generate_data_key_pair`.

    Attributes:
        private_key: DER PKCS#8 PrivateKeyInfo, opened from ``CiphertextForRecipient``.
        private_key_ciphertext_blob: the private key encrypted under the KMS key.
        public_key: DER SubjectPublicKeyInfo of the pair (not secret).
        key_id: ARN of the KMS key.
        key_pair_spec: for example ``"ECC_NIST_P256"``.
        key_material_id: the key material used, when KMS says.
    """

    private_key: Secret
    private_key_ciphertext_blob: bytes = field(repr=False)
    public_key: bytes = field(repr=False)
    key_id: str
    key_pair_spec: str
    key_material_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedSecret:
    """The answer to :meth:`KmsClient.derive_shared_secret`.

    Attributes:
        shared_secret: the raw ECDH shared secret, opened from ``CiphertextForRecipient``.
            Put it through a KDF before use.
        key_id: ARN of the KMS key.
        key_agreement_algorithm: ``"ECDH"``.
        key_origin: ``"AWS_KMS"`` or ``"EXTERNAL"``.
    """

    shared_secret: Secret
    key_id: str
    key_agreement_algorithm: str | None = None
    key_origin: str | None = None
