"""The attested KMS client: boto3 with a fresh attestation document on every call.

Every call asks the attestation provider for a new document whose ``public_key`` is the
recipient key's DER SubjectPublicKeyInfo, sends it as
``Recipient={AttestationDocument, KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256}``, refuses
any answer that carries plaintext, and opens ``CiphertextForRecipient`` in this process.
Errors come back as the typed tree of :mod:`attested.errors` with what to check.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from botocore.exceptions import BotoCoreError, ClientError

from attested._aws import REGION
from attested.errors import ConfigurationError, MalformedError
from attested.kms import _errors, _ops
from attested.kms._egress import NetworkSettings, make_boto_client
from attested.kms._recipient import RecipientKey, open_envelope
from attested.kms._results import DataKey, DataKeyPair, DecryptResult, Secret, SharedSecret
from attested.kms.credentials import CredentialsProvider
from attested.provider import AttestationProvider

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = [
    "CHINA_REGIONS_ONLY",
    "DATA_KEY_SPECS",
    "ENCRYPTION_ALGORITHMS",
    "KEY_PAIR_SPECS",
    "KmsClient",
    "NetworkSettings",
    "RetryPolicy",
    "check_region",
]

logger = logging.getLogger(__name__)

DATA_KEY_SPECS = frozenset({"AES_256", "AES_128"})
"""The ``key_spec`` values of :meth:`KmsClient.generate_data_key`."""
_DATA_KEY_SIZES = {"AES_256": 32, "AES_128": 16}
KEY_PAIR_SPECS = frozenset(
    {
        "RSA_2048",
        "RSA_3072",
        "RSA_4096",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "ECC_NIST_EDWARDS25519",
        "SM2",
    }
)
"""The ``key_pair_spec`` values of :meth:`KmsClient.generate_data_key_pair`."""
ENCRYPTION_ALGORITHMS = frozenset(
    {"SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"}
)
"""KMS's ``EncryptionAlgorithm`` values (:meth:`KmsClient.decrypt`)."""
CHINA_REGIONS_ONLY = frozenset({"SM2", "SM2PKE"})
"""Specs and algorithms KMS offers only in the China Regions (region names ``cn-*``)."""


def check_region(region: str) -> None:
    """Check a region name by the rule :class:`KmsClient` applies (for configuration loaders).

    Raises:
        ConfigurationError: ``region`` is not an AWS region name (``us-east-1``).
    """
    if not REGION.fullmatch(str(region)):
        raise ConfigurationError(f"region {region!r:.40} is not an AWS region name")


_MAX_CIPHERTEXT = 6144
_MAX_RANDOM = 1024
_MAX_PUBLIC_KEY = 8192


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries with full-jitter exponential backoff.

    Retried: throttling, KMS internal errors and dependency timeouts, connections that
    failed mid-request. Not retried: access denied, bad ciphertext, TLS, proxy and
    connect failures (these need a fix, not patience).

    Attributes:
        max_attempts: requests per call, the first included (1 disables retries).
        base_delay: seconds; attempt ``n`` waits a random time in
            ``[0, min(max_delay, base_delay * 2**n))``.
        max_delay: the longest single pause, in seconds.

    Raises:
        ValueError: out-of-range values.
    """

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 20:
            raise ValueError("max_attempts must be between 1 and 20")
        if not 0 <= self.base_delay <= self.max_delay <= 60:
            raise ValueError("need 0 <= base_delay <= max_delay <= 60 seconds")

    def delay(self, attempt: int, uniform: float) -> float:
        """The pause after failed attempt ``attempt`` (1-based), for ``uniform`` in [0, 1)."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return uniform * ceiling


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    response: dict[str, Any] = field(repr=False)
    plaintext: Secret


class KmsClient:
    """KMS with attestation: Decrypt, GenerateDataKey(Pair), GenerateRandom, DeriveSharedSecret.

    Thread-safe when the attestation provider is (boto3 clients are). Keep one client
    per process: it reuses the recipient key and the HTTPS connections.

    Args:
        region: the AWS region, for example ``"us-east-1"``.
        attestation: where attestation documents come from (the NSM in an enclave,
            the simulated NSM in development).
        credentials: where AWS credentials come from (:class:`~attested.kms.credentials.
            ParentCredentials` inside an enclave).
        recipient_key: the RSA key KMS encrypts answers to; the process-wide key
            (:meth:`RecipientKey.process_default`) by default.
        network: endpoint, proxy, CA bundle and timeouts.
        retry: how often to retry throttling and transient failures.
        sleep: pauses between retries (tests inject one).
        uniform: random numbers in [0, 1) for the jitter (tests inject one).

    Raises:
        ConfigurationError: a bad region or CA bundle path.
        TypeError: ``attestation`` or ``credentials`` do not provide what is needed.
    """

    def __init__(
        self,
        *,
        region: str,
        attestation: AttestationProvider,
        credentials: CredentialsProvider,
        recipient_key: RecipientKey | None = None,
        network: NetworkSettings | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        check_region(region)
        if not isinstance(attestation, AttestationProvider):
            raise TypeError("attestation must provide get_attestation_document(...)")
        if not isinstance(credentials, CredentialsProvider):
            raise TypeError("credentials must provide botocore_credentials()")
        self._region = region
        self._attestation = attestation
        self._key = recipient_key if recipient_key is not None else RecipientKey.process_default()
        self._network = network or NetworkSettings()
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._uniform = uniform
        self._boto: KMSClient = make_boto_client(
            region=region,
            credentials=credentials.botocore_credentials(),
            network=self._network,
        )
        self._endpoint = str(self._boto.meta.endpoint_url)

    @property
    def recipient_key(self) -> RecipientKey:
        """The recipient key whose public key goes into every attestation document."""
        return self._key

    @property
    def endpoint_url(self) -> str:
        """The URL requests go to."""
        return self._endpoint

    def close(self) -> None:
        """Close the HTTPS connections."""
        self._boto.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KmsClient(region={self._region!r}, endpoint={self._endpoint!r})"

    def decrypt(
        self,
        ciphertext_blob: bytes,
        *,
        encryption_context: Mapping[str, str] | None = None,
        key_id: str | None = None,
        encryption_algorithm: str | None = None,
        grant_tokens: Sequence[str] | None = None,
    ) -> DecryptResult:
        """Decrypt a KMS ciphertext; the plaintext comes back only inside the envelope.

        Args:
            ciphertext_blob: the ``CiphertextBlob`` from Encrypt or GenerateDataKey.
            encryption_context: must equal the context used to encrypt.
            key_id: the key; required for asymmetric keys, optional for symmetric ones.
            encryption_algorithm: e.g. ``"RSAES_OAEP_SHA_256"`` for asymmetric keys.
            grant_tokens: grant tokens, at most 10.

        Returns:
            The plaintext and the key that decrypted.

        Raises:
            KmsError: KMS refused (a subclass says why: access denied with our PCRs,
                invalid ciphertext, incorrect key, not found, disabled, throttled,
                credentials rejected).
            UnavailableError: no document, no credentials, or KMS unreachable (proxy,
                TLS, connection).
            VerificationError: the answer is refused (plaintext outside the envelope,
                an envelope for another key or that does not decrypt).
            MalformedError: the envelope or the response is malformed.
            TypeError, ValueError: bad arguments.
        """
        if not isinstance(ciphertext_blob, bytes):
            raise TypeError("ciphertext_blob must be bytes")
        if not 1 <= len(ciphertext_blob) <= _MAX_CIPHERTEXT:
            raise ValueError(f"ciphertext_blob must be 1 to {_MAX_CIPHERTEXT} bytes")
        params = _ops.common_parameters(
            key_id=key_id, encryption_context=encryption_context, grant_tokens=grant_tokens
        )
        params["CiphertextBlob"] = ciphertext_blob
        if encryption_algorithm is not None:
            params["EncryptionAlgorithm"] = encryption_algorithm
        outcome = self._call("Decrypt", params, key_id=key_id)
        return DecryptResult(
            plaintext=outcome.plaintext,
            key_id=_ops.require_str("Decrypt", outcome.response, "KeyId"),
            encryption_algorithm=outcome.response.get("EncryptionAlgorithm"),
            key_material_id=outcome.response.get("KeyMaterialId"),
        )

    def generate_data_key(
        self,
        key_id: str,
        *,
        key_spec: str | None = None,
        number_of_bytes: int | None = None,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
    ) -> DataKey:
        """A new data key: plaintext (in the envelope) and encrypted under ``key_id``.

        Args:
            key_id: the symmetric KMS key.
            key_spec: ``"AES_256"`` (the default when neither is given) or ``"AES_128"``.
            number_of_bytes: 1 to 1024, instead of ``key_spec``.
            encryption_context: bound to the encrypted data key.
            grant_tokens: grant tokens, at most 10.

        Returns:
            The data key; store ``ciphertext_blob``, use ``plaintext``.

        Raises:
            KmsError, UnavailableError, VerificationError, MalformedError: as for
                :meth:`decrypt`.
            TypeError, ValueError: bad arguments.
        """
        if key_spec is not None and number_of_bytes is not None:
            raise ValueError("give key_spec or number_of_bytes, not both")
        params = _ops.common_parameters(
            key_id=key_id, encryption_context=encryption_context, grant_tokens=grant_tokens
        )
        if number_of_bytes is not None:
            _check_count(number_of_bytes, "number_of_bytes")
            params["NumberOfBytes"] = number_of_bytes
            expected = number_of_bytes
        else:
            spec = key_spec or "AES_256"
            if spec not in DATA_KEY_SPECS:
                raise ValueError(f"key_spec must be one of {sorted(DATA_KEY_SPECS)}")
            params["KeySpec"] = spec
            expected = _DATA_KEY_SIZES[spec]
        outcome = self._call("GenerateDataKey", params, key_id=key_id)
        _check_size("GenerateDataKey", outcome.plaintext, expected)
        blob = outcome.response.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise MalformedError("KMS GenerateDataKey response has no CiphertextBlob")
        return DataKey(
            plaintext=outcome.plaintext,
            ciphertext_blob=blob,
            key_id=_ops.require_str("GenerateDataKey", outcome.response, "KeyId"),
            key_material_id=outcome.response.get("KeyMaterialId"),
        )

    def generate_data_key_pair(
        self,
        key_id: str,
        key_pair_spec: str,
        *,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
    ) -> DataKeyPair:
        """A new asymmetric data key pair; the private key comes back in the envelope.

        Args:
            key_id: the symmetric KMS key that encrypts the private key.
            key_pair_spec: e.g. ``"ECC_NIST_P256"`` or ``"RSA_2048"``.
            encryption_context: bound to the encrypted private key.
            grant_tokens: grant tokens, at most 10.

        Returns:
            The pair: ``private_key`` (DER PKCS#8), ``public_key`` (DER SPKI) and the
            encrypted private key to store.

        Raises:
            KmsError, UnavailableError, VerificationError, MalformedError: as for
                :meth:`decrypt`.
            TypeError, ValueError: bad arguments.
        """
        if key_pair_spec not in KEY_PAIR_SPECS:
            raise ValueError(f"key_pair_spec must be one of {sorted(KEY_PAIR_SPECS)}")
        params = _ops.common_parameters(
            key_id=key_id, encryption_context=encryption_context, grant_tokens=grant_tokens
        )
        params["KeyPairSpec"] = key_pair_spec
        outcome = self._call("GenerateDataKeyPair", params, key_id=key_id)
        response = outcome.response
        encrypted = response.get("PrivateKeyCiphertextBlob")
        public = response.get("PublicKey")
        if not isinstance(encrypted, bytes) or not isinstance(public, bytes) or not public:
            raise MalformedError(
                "KMS GenerateDataKeyPair response lacks PrivateKeyCiphertextBlob or PublicKey"
            )
        return DataKeyPair(
            private_key=outcome.plaintext,
            private_key_ciphertext_blob=encrypted,
            public_key=public,
            key_id=_ops.require_str("GenerateDataKeyPair", response, "KeyId"),
            key_pair_spec=response.get("KeyPairSpec") or key_pair_spec,
            key_material_id=response.get("KeyMaterialId"),
        )

    def generate_random(
        self, number_of_bytes: int, *, custom_key_store_id: str | None = None
    ) -> Secret:
        """Random bytes from KMS, delivered inside the envelope.

        Args:
            number_of_bytes: 1 to 1024.
            custom_key_store_id: generate in this CloudHSM key store.

        Returns:
            The random bytes.

        Raises:
            KmsError, UnavailableError, VerificationError, MalformedError: as for
                :meth:`decrypt`.
            TypeError, ValueError: bad arguments.
        """
        _check_count(number_of_bytes, "number_of_bytes")
        params: dict[str, Any] = {"NumberOfBytes": number_of_bytes}
        if custom_key_store_id is not None:
            params["CustomKeyStoreId"] = custom_key_store_id
        outcome = self._call("GenerateRandom", params)
        _check_size("GenerateRandom", outcome.plaintext, number_of_bytes)
        return outcome.plaintext

    def derive_shared_secret(
        self,
        key_id: str,
        public_key: bytes,
        *,
        key_agreement_algorithm: str = "ECDH",
        grant_tokens: Sequence[str] | None = None,
    ) -> SharedSecret:
        """ECDH between the KMS key pair ``key_id`` and a peer's public key.

        Args:
            key_id: a KMS key with KeyUsage KEY_AGREEMENT.
            public_key: the peer's DER SubjectPublicKeyInfo.
            key_agreement_algorithm: ``"ECDH"``.
            grant_tokens: grant tokens, at most 10.

        Returns:
            The raw shared secret (put it through a KDF before use).

        Raises:
            KmsError, UnavailableError, VerificationError, MalformedError: as for
                :meth:`decrypt`.
            TypeError, ValueError: bad arguments.
        """
        given: object = public_key
        if not isinstance(given, bytes):
            raise TypeError("public_key must be bytes (DER SubjectPublicKeyInfo)")
        if not 1 <= len(given) <= _MAX_PUBLIC_KEY:
            raise ValueError(f"public_key must be 1 to {_MAX_PUBLIC_KEY} bytes of DER")
        params = _ops.common_parameters(key_id=key_id, grant_tokens=grant_tokens)
        params["PublicKey"] = public_key
        params["KeyAgreementAlgorithm"] = key_agreement_algorithm
        outcome = self._call("DeriveSharedSecret", params, key_id=key_id)
        response = outcome.response
        return SharedSecret(
            shared_secret=outcome.plaintext,
            key_id=_ops.require_str("DeriveSharedSecret", response, "KeyId"),
            key_agreement_algorithm=response.get("KeyAgreementAlgorithm"),
            key_origin=response.get("KeyOrigin"),
        )

    # -- one call, with attestation, retries and the envelope ------------------------

    def _context(
        self, operation: str, key_id: str | None, document: bytes | None, attempts: int
    ) -> _errors.CallContext:
        return _errors.CallContext(
            operation=operation,
            region=self._region,
            endpoint=self._endpoint,
            proxy=self._network.proxy,
            ca_bundle=self._network.ca_bundle,
            key_id=key_id,
            document=document,
            attempts=attempts,
        )

    def _call(
        self, operation: str, params: dict[str, Any], *, key_id: str | None = None
    ) -> _Outcome:
        method = getattr(self._boto, _SNAKE[operation])
        attempt = 0
        while True:
            attempt += 1
            # A fresh document for every request, bound to our recipient key.
            document = self._attestation.get_attestation_document(public_key=self._key.spki_der())
            try:
                response: dict[str, Any] = method(**params, Recipient=_ops.recipient(document))
                break
            except (ClientError, BotoCoreError) as exc:
                context = self._context(operation, key_id, document, attempt)
                if _errors.is_retryable(exc) and attempt < self._retry.max_attempts:
                    pause = self._retry.delay(attempt, self._uniform())
                    logger.debug(
                        "KMS %s: %s, retrying in %.2f s (attempt %d of %d)",
                        operation,
                        type(exc).__name__
                        if not isinstance(exc, ClientError)
                        else exc.response.get("Error", {}).get("Code"),
                        pause,
                        attempt,
                        self._retry.max_attempts,
                    )
                    self._sleep(pause)
                    continue
                if isinstance(exc, ClientError):
                    raise _errors.from_client_error(exc, context) from exc
                raise _errors.from_transport_error(exc, context) from exc
        envelope = _ops.envelope_of(operation, response)
        plaintext = open_envelope(envelope, self._key)
        logger.debug("KMS %s: envelope opened after %d attempt(s)", operation, attempt)
        return _Outcome(response=response, plaintext=Secret(plaintext))


_SNAKE = {
    "Decrypt": "decrypt",
    "GenerateDataKey": "generate_data_key",
    "GenerateDataKeyPair": "generate_data_key_pair",
    "GenerateRandom": "generate_random",
    "DeriveSharedSecret": "derive_shared_secret",
}


def _check_count(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    if not 1 <= value <= _MAX_RANDOM:
        raise ValueError(f"{name} must be 1 to {_MAX_RANDOM}")


def _check_size(operation: str, plaintext: Secret, expected: int) -> None:
    if len(plaintext) != expected:
        raise MalformedError(
            f"KMS {operation} returned {len(plaintext)} bytes in the envelope, "
            f"{expected} were asked for"
        )
