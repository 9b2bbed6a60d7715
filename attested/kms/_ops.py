"""Pure helpers around the five KMS operations that take ``Recipient``.

Building the boto3 arguments, validating the caller's parameters against the KMS model,
and checking a response before the envelope is opened. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attested.errors import MalformedError, RecipientIgnored

__all__ = [
    "KEY_ENCRYPTION_ALGORITHM",
    "PLAINTEXT_FIELDS",
    "common_parameters",
    "envelope_of",
    "recipient",
    "require_str",
]

KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
"""The only value KMS's model allows for ``Recipient.KeyEncryptionAlgorithm``."""

PLAINTEXT_FIELDS: Mapping[str, str] = {
    "Decrypt": "Plaintext",
    "GenerateDataKey": "Plaintext",
    "GenerateDataKeyPair": "PrivateKeyPlaintext",
    "GenerateRandom": "Plaintext",
    "DeriveSharedSecret": "SharedSecret",
}
"""Per operation, the response field that must be null or empty when Recipient was sent."""

_MAX_GRANT_TOKENS = 10
_MAX_CONTEXT_PAIRS = 64


def recipient(document: bytes) -> dict[str, object]:
    """The ``Recipient`` request member for an attestation document."""
    return {"AttestationDocument": document, "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM}


def common_parameters(
    *,
    key_id: str | None = None,
    encryption_context: Mapping[str, str] | None = None,
    grant_tokens: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``KeyId``, ``EncryptionContext`` and ``GrantTokens``, checked, when given.

    Raises:
        TypeError: a value has the wrong type.
        ValueError: a value is out of the KMS model's bounds.
    """
    params: dict[str, Any] = {}
    if key_id is not None:
        if not isinstance(key_id, str):
            raise TypeError("key_id must be a string")
        if not 1 <= len(key_id) <= 2048:
            raise ValueError("key_id must be 1 to 2048 characters")
        params["KeyId"] = key_id
    if encryption_context is not None:
        if not isinstance(encryption_context, Mapping):
            raise TypeError("encryption_context must be a mapping of strings to strings")
        if len(encryption_context) > _MAX_CONTEXT_PAIRS:
            raise ValueError(f"encryption_context has more than {_MAX_CONTEXT_PAIRS} pairs")
        pairs: list[tuple[object, object]] = list(encryption_context.items())
        for name, value in pairs:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("encryption_context must map strings to strings")
        params["EncryptionContext"] = dict(encryption_context)
    if grant_tokens is not None:
        if isinstance(grant_tokens, str) or not all(isinstance(t, str) for t in grant_tokens):
            raise TypeError("grant_tokens must be a sequence of strings")
        if len(grant_tokens) > _MAX_GRANT_TOKENS:
            raise ValueError(f"KMS takes at most {_MAX_GRANT_TOKENS} grant tokens")
        params["GrantTokens"] = list(grant_tokens)
    return params


def envelope_of(operation: str, response: Mapping[str, Any]) -> bytes:
    """The ``CiphertextForRecipient`` of a response, after refusing any plaintext field.

    Raises:
        RecipientIgnored: the response carries a non-empty plaintext field, or no
            envelope: KMS did not honour the attestation document we sent.
    """
    field = PLAINTEXT_FIELDS[operation]
    plaintext = response.get(field)
    if plaintext:
        # Say nothing about it beyond its presence; the caller drops the response.
        raise RecipientIgnored(
            f"KMS {operation} answered with {field} in plaintext although the request "
            "carried an attestation document (Recipient): the answer is refused. Most "
            "likely the endpoint is not AWS KMS or an emulator that ignores Recipient, or "
            "something between us and KMS rewrote the request."
        )
    envelope = response.get("CiphertextForRecipient")
    if not isinstance(envelope, bytes) or not envelope:
        raise RecipientIgnored(
            f"KMS {operation} answered without CiphertextForRecipient although the request "
            "carried an attestation document (Recipient). Check that the endpoint is AWS "
            "KMS and that botocore is 1.34.126 or newer."
        )
    return envelope


def require_str(operation: str, response: Mapping[str, Any], name: str) -> str:
    """A string field KMS always returns for ``operation``.

    Raises:
        MalformedError: it is missing or not a string.
    """
    value = response.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedError(f"KMS {operation} response has no {name}")
    return value
