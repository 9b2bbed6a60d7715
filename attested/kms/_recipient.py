"""The recipient key: the RSA key KMS encrypts ``CiphertextForRecipient`` to.

One RSA-2048 key is generated per process (not per call: key generation costs tens of
milliseconds) and its DER SubjectPublicKeyInfo goes into every attestation document's
``public_key``. The private key never leaves this object: no method returns or
serialises it, pickling is refused, and ``repr`` shows only the public key id.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attested.kms import _cms

__all__ = ["RecipientKey", "open_envelope"]

_KEY_SIZE = 2048
_ACCEPTED_SIZES = frozenset({2048, 3072, 4096})
_MIN_ROTATION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeyPair:
    private_key: rsa.RSAPrivateKey = field(repr=False)
    spki: bytes
    key_id: bytes
    created: float


def _pair(private_key: rsa.RSAPrivateKey, created: float) -> _KeyPair:
    spki = private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return _KeyPair(
        private_key=private_key,
        spki=spki,
        key_id=hashlib.sha256(spki).digest(),
        created=created,
    )


class RecipientKey:
    """An RSA key for the KMS ``Recipient`` parameter, kept in memory only.

    Use :meth:`process_default` for the one key of this process; make your own with
    ``RecipientKey()`` (for example with rotation) or :meth:`from_private_key` (tests,
    the ``attested cms decrypt`` command).

    With ``max_age``, the key is replaced by a new one when it is older than that at
    the next :meth:`spki_der` call; the previous key is kept until the following
    rotation, so an envelope requested just before a rotation still opens.

    Args:
        max_age: rotate the key when it is older than this (at least one minute);
            ``None`` (the default) keeps one key for the life of the object.
        clock: monotonic seconds, for rotation (tests inject one).

    Raises:
        ValueError: ``max_age`` is shorter than one minute.
    """

    __slots__ = ("_clock", "_current", "_lock", "_max_age", "_previous")

    _default: RecipientKey | None = None
    _default_lock = threading.Lock()

    def __init__(
        self,
        *,
        max_age: timedelta | None = None,
        clock: Callable[[], float] = time.monotonic,
        _private_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        if max_age is not None and max_age < _MIN_ROTATION:
            raise ValueError("max_age must be at least one minute")
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        key = _private_key if _private_key is not None else _generate()
        self._current = _pair(key, clock())
        self._previous: _KeyPair | None = None

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> RecipientKey:
        """Wrap an existing RSA private key (2048, 3072 or 4096 bits); it never rotates.

        Raises:
            TypeError: ``private_key`` is not an RSA private key.
            ValueError: the key size is not 2048, 3072 or 4096 bits, or the public
                exponent is not 65537.
        """
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise TypeError(f"expected an RSA private key, not {type(private_key).__name__}")
        if private_key.key_size not in _ACCEPTED_SIZES:
            raise ValueError(f"RSA key of {private_key.key_size} bits: use 2048 (or 3072/4096)")
        if private_key.public_key().public_numbers().e != 65537:
            raise ValueError("the RSA public exponent must be 65537")
        return cls(_private_key=private_key)

    @classmethod
    def process_default(cls) -> RecipientKey:
        """The process-wide key, generated on first use (thread-safe), never rotated."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def _rotate_if_due(self) -> _KeyPair:
        with self._lock:
            current = self._current
            if self._max_age is None:
                return current
            if self._clock() - current.created < self._max_age.total_seconds():
                return current
            self._previous = current
            self._current = _pair(_generate(), self._clock())
            return self._current

    def spki_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo to put in the attestation document's ``public_key``.

        Rotates the key first when ``max_age`` is set and it is due.
        """
        return self._rotate_if_due().spki

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the current key's DER SubjectPublicKeyInfo (KMS's recipient id)."""
        return self._current.key_id

    @property
    def key_size(self) -> int:
        """The RSA modulus size in bits."""
        return self._current.private_key.key_size

    def _pair_for(self, key_id: bytes) -> _KeyPair | None:
        with self._lock:
            for pair in (self._current, self._previous):
                if pair is not None and pair.key_id == key_id:
                    return pair
            return None

    def __repr__(self) -> str:
        rotation = "" if self._max_age is None else f", max_age={self._max_age}"
        return f"RecipientKey(rsa{self.key_size}, key_id={self.key_id.hex()[:16]}...{rotation})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("RecipientKey cannot be pickled or copied: the private key stays here")

    def __copy__(self) -> NoReturn:
        self.__reduce__()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__reduce__()


def _generate() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)


def open_envelope(blob: bytes, key: RecipientKey) -> bytes:
    """Open a KMS ``CiphertextForRecipient`` with ``key``.

    Parses the CMS strictly, picks the current or previous key by the envelope's
    recipient id, unwraps the content key (RSA-OAEP SHA-256) and decrypts (AES-256-CBC,
    PKCS#7). The envelope itself is not authenticated: trust the plaintext only because
    it came from KMS over TLS ending in this process.

    Args:
        blob: the raw ``CiphertextForRecipient`` bytes.
        key: the recipient key whose public key was in the attestation document.

    Returns:
        The plaintext.

    Raises:
        MalformedEnvelope: the bytes are not the CMS envelope KMS sends.
        EnvelopeNotForRecipient: the envelope is for another key.
        EnvelopeDecryptionError: it does not decrypt (one uniform error).
        TypeError: wrong argument types.
    """
    if not isinstance(key, RecipientKey):
        raise TypeError(f"key must be a RecipientKey, not {type(key).__name__}")
    envelope = _cms.parse_envelope(blob)
    pair = key._pair_for(envelope.recipient_key_id) or key._current
    return _cms.decrypt_envelope(envelope, pair.private_key, key_id=pair.key_id)
