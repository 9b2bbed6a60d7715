"""The cryptographic operations: encryption, data keys, random, ECDH, signatures, MACs.

Each handler takes (service, validated parameters, caller, time) and returns the answer's
members (``None`` members are left out of the JSON). Answers made for a ``Recipient``
carry ``CiphertextForRecipient`` and none of the members the KMS model says are omitted
then (the plaintext, and ``KeyMaterialId`` for Decrypt and GenerateDataKey).
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.serialization import load_der_public_key

from attested.emulator import _ciphertext, _keys
from attested.emulator._keys import KeyRecord
from attested.emulator._sigv4 import Caller
from attested.errors import MalformedError
from attested.keypolicy._evaluate import encryption_context_condition_values
from attested.kms._wire import ApiError, Json, check_data_key_size, check_random_size

if TYPE_CHECKING:
    from attested.emulator._service import Handler, KmsService, Recipient

__all__ = ["HANDLERS"]

_OAEP_HASH = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}
_NO_CIPHERTEXT = (
    "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy "
    "constraint: Member must not be null"
)
_INCORRECT_KEY = (
    "The key ID in the request does not identify a CMK that can perform this operation."
)
_ASYMMETRIC_CONTEXT = "EncryptionContext is not supported with asymmetric keys"


def _context(p: Mapping[str, Any], name: str = "EncryptionContext") -> dict[str, str]:
    context: dict[str, str] = p.get(name) or {}
    try:
        _ciphertext.canonical_context(context)
    except ValueError as exc:
        raise ApiError("ValidationException", f"{name}: {exc}") from None
    return context


def _incompatible(algorithm: str, record: KeyRecord) -> ApiError:
    return ApiError(
        "InvalidKeyUsageException",
        f"Algorithm {algorithm} is incompatible with key spec {record.key_spec}.",
    )


def _encryption_algorithm(record: KeyRecord, algorithm: str) -> None:
    if algorithm not in _keys.encryption_algorithms(record.key_spec, record.key_usage):
        raise ApiError(
            "InvalidKeyUsageException",
            f"The EncryptionAlgorithm {algorithm} is not valid for {record.arn} "
            f"({record.key_spec}).",
        )


def _oaep(algorithm: str) -> OAEP:
    hash_type = _OAEP_HASH[algorithm]
    return OAEP(mgf=MGF1(algorithm=hash_type()), algorithm=hash_type(), label=None)


def _encrypt_with(
    svc: KmsService,
    record: KeyRecord,
    algorithm: str,
    plaintext: bytes,
    context: Mapping[str, str],
) -> bytes:
    if record.symmetric:
        return _ciphertext.seal(record.material, record.key_id, plaintext, context)
    if context:
        raise ApiError("ValidationException", _ASYMMETRIC_CONTEXT)
    limit = _keys.rsa_oaep_max_plaintext(record.key_spec, algorithm)
    if len(plaintext) > limit:
        raise ApiError(
            "ValidationException",
            f"Algorithm {algorithm} and key spec {record.key_spec} cannot encrypt data larger "
            f"than {limit} bytes.",
        )
    key = svc.private_key(record)
    assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - RSA keys encrypt
    return key.public_key().encrypt(plaintext, _oaep(algorithm))


def _ignore_ciphertext(p: Mapping[str, Any]) -> bool:
    return bool(p.get("DryRun")) and "IGNORE_CIPHERTEXT" in p.get("DryRunModifiers", ())


def _encrypt(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now)
    context = _context(p)
    svc.authorize(caller, "kms:Encrypt", record, encryption_context_condition_values(context))
    svc.usable(record)
    svc.require_usage(record, _keys.ENCRYPT_DECRYPT, "Encrypt")
    algorithm = p.get("EncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
    _encryption_algorithm(record, algorithm)
    blob = _encrypt_with(svc, record, algorithm, p["Plaintext"], context)
    svc.dry_run(p)
    return {"CiphertextBlob": blob, "KeyId": record.arn, "EncryptionAlgorithm": algorithm}


def _open_asymmetric(
    svc: KmsService, record: KeyRecord, blob: bytes, algorithm: str, context: Mapping[str, str]
) -> bytes:
    if context:
        raise ApiError("ValidationException", _ASYMMETRIC_CONTEXT)
    key = svc.private_key(record)
    assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - checked by the algorithm
    try:
        return key.decrypt(blob, _oaep(algorithm))
    except ValueError:
        raise ApiError(
            "InvalidCiphertextException",
            "",
            note=f"RSA-OAEP decryption with {record.arn} ({algorithm}) failed: made with "
            "another key or algorithm, or changed",
        ) from None


def _open(
    svc: KmsService,
    *,
    p: Mapping[str, Any],
    key_ref: str | None,
    algorithm: str,
    context: Mapping[str, str],
    caller: Caller,
    action: str,
    now: datetime,
    extra: Mapping[str, tuple[str, ...]],
) -> tuple[KeyRecord, bytes | None]:
    """Find the key of a ciphertext, authorize, and decrypt (Decrypt, ReEncrypt source)."""
    values = {**encryption_context_condition_values(context), **extra}
    blob: bytes | None = p.get("CiphertextBlob")
    ignore_ciphertext = _ignore_ciphertext(p)
    if ignore_ciphertext or algorithm != _keys.SYMMETRIC_DEFAULT:
        if key_ref is None:
            raise ApiError(
                "ValidationException",
                "KeyId is required with an asymmetric EncryptionAlgorithm or "
                "DryRunModifiers IGNORE_CIPHERTEXT",
            )
        record = svc.resolve(key_ref, now)
        svc.authorize(caller, action, record, values)
        svc.usable(record)
        svc.require_usage(record, _keys.ENCRYPT_DECRYPT, action.removeprefix("kms:"))
        _encryption_algorithm(record, algorithm)
        if ignore_ciphertext:
            return record, None
        if blob is None:
            raise ApiError("ValidationException", _NO_CIPHERTEXT)
        return record, _open_asymmetric(svc, record, blob, algorithm, context)
    if blob is None:
        raise ApiError("ValidationException", _NO_CIPHERTEXT)
    try:
        sealed = _ciphertext.parse_blob(blob)
    except MalformedError:
        raise ApiError(
            "InvalidCiphertextException",
            "",
            note=f"a {len(blob)}-byte blob that is not this emulator's ciphertext format "
            "(from AWS KMS, another tool, or cut short?)",
        ) from None
    if key_ref is not None:
        record = svc.resolve(key_ref, now)
        if record.key_id != sealed.key_id or not record.symmetric:
            if record.asymmetric and record.key_usage == _keys.ENCRYPT_DECRYPT:
                _encryption_algorithm(record, algorithm)
            raise ApiError("IncorrectKeyException", _INCORRECT_KEY)
    else:
        found = svc.live(sealed.key_id, now)
        if found is None or not found.symmetric:
            why = "no such key here" if found is None else "not a symmetric key"
            raise ApiError(
                "InvalidCiphertextException",
                "",
                note=f"the ciphertext names key {sealed.key_id}: {why} (made by another "
                "emulator, or before a restart without --state?)",
            )
        record = found
    svc.authorize(caller, action, record, values)
    svc.usable(record)
    try:
        plaintext = _ciphertext.open_blob(record.material, sealed, context)
    except MalformedError:
        keys = sorted(context)
        raise ApiError(
            "InvalidCiphertextException",
            "",
            note=f"authentication under {record.arn} failed: the encryption context "
            f"(keys given: {keys or 'none'}) is not the one it was encrypted with, or the "
            "ciphertext was changed",
        ) from None
    return record, plaintext


def _decrypt(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    recipient = svc.verify_recipient(p, now)
    algorithm = p.get("EncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
    record, plaintext = _open(
        svc,
        p=p,
        key_ref=p.get("KeyId"),
        algorithm=algorithm,
        context=_context(p),
        caller=caller,
        action="kms:Decrypt",
        now=now,
        extra=svc.recipient_values(recipient),
    )
    svc.dry_run(p)
    assert plaintext is not None  # noqa: S101 - only a dry run skips the ciphertext
    result: dict[str, Any] = {"KeyId": record.arn, "EncryptionAlgorithm": algorithm}
    if record.symmetric:
        result["KeyMaterialId"] = record.material_id
    return svc.deliver(
        result, "Plaintext", plaintext, recipient, omitted_for_recipient=("KeyMaterialId",)
    )


def _re_encrypt(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    source_algorithm = p.get("SourceEncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
    destination_algorithm = p.get("DestinationEncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
    source, plaintext = _open(
        svc,
        p=p,
        key_ref=p.get("SourceKeyId"),
        algorithm=source_algorithm,
        context=_context(p, "SourceEncryptionContext"),
        caller=caller,
        action="kms:ReEncryptFrom",
        now=now,
        extra={},
    )
    destination = svc.resolve(p["DestinationKeyId"], now)
    context = _context(p, "DestinationEncryptionContext")
    svc.authorize(
        caller, "kms:ReEncryptTo", destination, encryption_context_condition_values(context)
    )
    svc.usable(destination)
    svc.require_usage(destination, _keys.ENCRYPT_DECRYPT, "ReEncrypt")
    _encryption_algorithm(destination, destination_algorithm)
    svc.dry_run(p)
    assert plaintext is not None  # noqa: S101 - only a dry run skips the ciphertext
    blob = _encrypt_with(svc, destination, destination_algorithm, plaintext, context)
    result: dict[str, Any] = {
        "CiphertextBlob": blob,
        "SourceKeyId": source.arn,
        "KeyId": destination.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": destination_algorithm,
    }
    if source.symmetric:
        result["SourceKeyMaterialId"] = source.material_id
    if destination.symmetric:
        result["DestinationKeyMaterialId"] = destination.material_id
    return result


def _symmetric_key_for(
    svc: KmsService,
    p: Mapping[str, Any],
    caller: Caller,
    now: datetime,
    action: str,
    recipient: Recipient | None,
    context: Mapping[str, str],
) -> KeyRecord:
    record = svc.resolve(p["KeyId"], now)
    values = {
        **encryption_context_condition_values(context),
        **svc.recipient_values(recipient),
    }
    svc.authorize(caller, action, record, values)
    svc.usable(record)
    if not record.symmetric:
        raise ApiError(
            "InvalidKeyUsageException",
            f"{record.arn} is not a symmetric encryption key; {action} needs one.",
        )
    return record


def _generate_data_key(
    svc: KmsService,
    p: dict[str, Any],
    caller: Caller,
    now: datetime,
    *,
    without_plaintext: bool = False,
) -> Json:
    check_data_key_size(p)
    size = (
        p["NumberOfBytes"] if "NumberOfBytes" in p else {"AES_256": 32, "AES_128": 16}[p["KeySpec"]]
    )
    recipient = svc.verify_recipient(p, now)
    context = _context(p)
    action = "kms:GenerateDataKey" + ("WithoutPlaintext" if without_plaintext else "")
    record = _symmetric_key_for(svc, p, caller, now, action, recipient, context)
    svc.dry_run(p)
    plaintext = os.urandom(size)
    result: dict[str, Any] = {
        "CiphertextBlob": _ciphertext.seal(record.material, record.key_id, plaintext, context),
        "KeyId": record.arn,
        "KeyMaterialId": record.material_id,
    }
    if without_plaintext:
        return result
    return svc.deliver(
        result, "Plaintext", plaintext, recipient, omitted_for_recipient=("KeyMaterialId",)
    )


def _generate_data_key_pair(
    svc: KmsService,
    p: dict[str, Any],
    caller: Caller,
    now: datetime,
    *,
    without_plaintext: bool = False,
) -> Json:
    recipient = svc.verify_recipient(p, now)
    context = _context(p)
    action = "kms:GenerateDataKeyPair" + ("WithoutPlaintext" if without_plaintext else "")
    record = _symmetric_key_for(svc, p, caller, now, action, recipient, context)
    svc.dry_run(p)
    pair = _keys.data_key_pair(p["KeyPairSpec"])
    if pair is None:
        raise ApiError(
            "UnsupportedOperationException",
            f"The KMS emulator does not emulate KeyPairSpec {p['KeyPairSpec']}",
        )
    public, private = pair
    result: dict[str, Any] = {
        "PrivateKeyCiphertextBlob": _ciphertext.seal(
            record.material, record.key_id, private, context
        ),
        "PublicKey": public,
        "KeyId": record.arn,
        "KeyPairSpec": p["KeyPairSpec"],
        "KeyMaterialId": record.material_id,
    }
    if without_plaintext:
        return result
    return svc.deliver(result, "PrivateKeyPlaintext", private, recipient)


def _generate_random(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    if "CustomKeyStoreId" in p:
        raise ApiError(
            "UnsupportedOperationException",
            "The KMS emulator does not emulate custom key stores",
        )
    check_random_size(p)
    recipient = svc.verify_recipient(p, now)
    return svc.deliver({}, "Plaintext", os.urandom(p["NumberOfBytes"]), recipient)


def _derive_shared_secret(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    recipient = svc.verify_recipient(p, now)
    record = svc.resolve(p["KeyId"], now)
    svc.authorize(caller, "kms:DeriveSharedSecret", record, svc.recipient_values(recipient))
    svc.usable(record)
    svc.require_usage(record, _keys.KEY_AGREEMENT, "DeriveSharedSecret")
    private = svc.private_key(record)
    assert isinstance(private, ec.EllipticCurvePrivateKey)  # noqa: S101 - KEY_AGREEMENT
    try:
        peer = load_der_public_key(p["PublicKey"])
    except (ValueError, UnsupportedAlgorithm):
        peer = None
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != (private.curve.name):
        raise ApiError(
            "ValidationException",
            f"PublicKey must be a DER SubjectPublicKeyInfo on the curve of {record.key_spec}",
        )
    svc.dry_run(p)
    secret = private.exchange(ec.ECDH(), peer)
    result: dict[str, Any] = {
        "KeyId": record.arn,
        "KeyAgreementAlgorithm": "ECDH",
        "KeyOrigin": "AWS_KMS",
    }
    return svc.deliver(result, "SharedSecret", secret, recipient)


def _get_public_key(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = svc.resolve(p["KeyId"], now)
    svc.authorize(caller, "kms:GetPublicKey", record)
    svc.usable(record)
    if not record.asymmetric:
        raise ApiError(
            "UnsupportedOperationException",
            f"{record.arn} is not an asymmetric key; it has no public key",
        )
    result: dict[str, Any] = {
        "KeyId": record.arn,
        "PublicKey": svc.public_spki(record),
        "CustomerMasterKeySpec": record.key_spec,
        "KeySpec": record.key_spec,
        "KeyUsage": record.key_usage,
    }
    result.update(_keys.algorithm_lists(record.key_spec, record.key_usage))
    return result


def _signing_key(
    svc: KmsService, p: Mapping[str, Any], caller: Caller, now: datetime, operation: str
) -> tuple[KeyRecord, bool]:
    """Checks shared by Sign and Verify; returns the key and whether Message is a digest."""
    record = svc.resolve(p["KeyId"], now)
    svc.authorize(caller, f"kms:{operation}", record)
    svc.usable(record)
    svc.require_usage(record, _keys.SIGN_VERIFY, operation)
    algorithm = p["SigningAlgorithm"]
    if algorithm not in _keys.signing_algorithms(record.key_spec, record.key_usage):
        raise _incompatible(algorithm, record)
    message_type = p.get("MessageType", "RAW")
    if message_type not in ("RAW", "DIGEST"):
        raise ApiError(
            "ValidationException",
            f"MessageType {message_type} is valid only with ML-DSA keys, which the KMS "
            "emulator does not emulate",
        )
    digest = message_type == "DIGEST"
    if digest and len(p["Message"]) != _keys.signature_digest_size(algorithm):
        raise ApiError(
            "ValidationException", f"Digest is invalid length for algorithm {algorithm}."
        )
    return record, digest


def _sign(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record, digest = _signing_key(svc, p, caller, now, "Sign")
    svc.dry_run(p)
    algorithm = p["SigningAlgorithm"]
    signature = _keys.sign(svc.private_key(record), algorithm, p["Message"], digest=digest)
    return {"KeyId": record.arn, "Signature": signature, "SigningAlgorithm": algorithm}


def _verify(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record, digest = _signing_key(svc, p, caller, now, "Verify")
    svc.dry_run(p)
    algorithm = p["SigningAlgorithm"]
    key = svc.private_key(record)
    if not _keys.verify_signature(key, algorithm, p["Message"], p["Signature"], digest=digest):
        raise ApiError("KMSInvalidSignatureException", "")
    return {"KeyId": record.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


def _mac_key(
    svc: KmsService, p: Mapping[str, Any], caller: Caller, now: datetime, operation: str
) -> KeyRecord:
    record = svc.resolve(p["KeyId"], now)
    svc.authorize(caller, f"kms:{operation}", record)
    svc.usable(record)
    svc.require_usage(record, _keys.GENERATE_VERIFY_MAC, operation)
    if p["MacAlgorithm"] not in _keys.mac_algorithms(record.key_spec, record.key_usage):
        raise _incompatible(p["MacAlgorithm"], record)
    return record


def _generate_mac(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = _mac_key(svc, p, caller, now, "GenerateMac")
    svc.dry_run(p)
    code = _keys.mac(record.material, p["MacAlgorithm"], p["Message"])
    return {"Mac": code, "MacAlgorithm": p["MacAlgorithm"], "KeyId": record.arn}


def _verify_mac(svc: KmsService, p: Json, caller: Caller, now: datetime) -> Json:
    record = _mac_key(svc, p, caller, now, "VerifyMac")
    svc.dry_run(p)
    expected = _keys.mac(record.material, p["MacAlgorithm"], p["Message"])
    if not hmac.compare_digest(expected, p["Mac"]):
        raise ApiError("KMSInvalidMacException", "")
    return {"KeyId": record.arn, "MacValid": True, "MacAlgorithm": p["MacAlgorithm"]}


HANDLERS: dict[str, Handler] = {
    "Decrypt": _decrypt,
    "DeriveSharedSecret": _derive_shared_secret,
    "Encrypt": _encrypt,
    "GenerateDataKey": _generate_data_key,
    "GenerateDataKeyPair": _generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": functools.partial(
        _generate_data_key_pair, without_plaintext=True
    ),
    "GenerateDataKeyWithoutPlaintext": functools.partial(
        _generate_data_key, without_plaintext=True
    ),
    "GenerateMac": _generate_mac,
    "GenerateRandom": _generate_random,
    "GetPublicKey": _get_public_key,
    "ReEncrypt": _re_encrypt,
    "Sign": _sign,
    "Verify": _verify,
    "VerifyMac": _verify_mac,
}
"""The cryptographic operations by name."""
