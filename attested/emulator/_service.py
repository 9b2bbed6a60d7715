"""The KMS operations, as functions of (validated request, caller, time) to an answer.

No sockets here: :class:`KmsService` takes an operation name, the raw JSON body, the
authenticated caller and the time, and returns the JSON answer or raises
:class:`~attested.emulator._protocol.ApiError`. The HTTP layer (``_server``) and tests
call it the same way.

For every operation on a key the order is KMS's: find the key (``NotFoundException``),
decide the key policy (``AccessDeniedException``), check the key's state
(``DisabledException``, ``KMSInvalidStateException``) and usage
(``InvalidKeyUsageException``), honour ``DryRun``, then do the work. A ``Recipient`` is
verified first, because its PCRs are condition values of the policy decision.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

from attested.emulator import _ciphertext, _keys
from attested.emulator._cms_writer import build_envelope
from attested.emulator._keys import KeyRecord, KeyState, PrivateKey
from attested.emulator._policy import (
    MAX_KEY_POLICY_SIZE,
    Decision,
    KeyPolicy,
    PolicyRequest,
    default_key_policy,
    encryption_context_condition_values,
    evaluate_key_policy,
    parse_key_policy,
    recipient_condition_values,
)
from attested.emulator._protocol import ApiError, encode_response, kms_model, parse_request
from attested.emulator._sigv4 import Caller
from attested.emulator._store import AliasRecord, KeyStore
from attested.errors import (
    ChainError,
    KeyPolicyError,
    MalformedError,
    PolicyError,
    SecurityWarning,
    SignatureError,
)
from attested.policy import Policy
from attested.trust import TrustRoot
from attested.verify import VerifiedAttestation, Verifier

__all__ = ["RECIPIENT_RSA_KEY_SIZE", "KmsService", "Recipient"]

logger = logging.getLogger(__name__)

RECIPIENT_RSA_KEY_SIZE = 2048
"""The only RSA key size accepted in an attestation document's ``public_key``.

KMS documents RSA-2048 ("must include a RSA2048 key"); whether it accepts 3072 or 4096 is
unverified, so the emulator refuses them rather than let a developer depend on them.
"""

_DRY_RUN = "The request would have succeeded, but the DryRun option is set."
_OAEP_HASH = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}
_INVALID_CIPHERTEXT = ApiError("InvalidCiphertextException", "")
_LIST_DEFAULT = 100
_NO_CIPHERTEXT = (
    "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy "
    "constraint: Member must not be null"
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """A verified ``Recipient``: the attestation and the RSA key to encrypt for.

    Attributes:
        attestation: the verified document.
        spki: the DER SubjectPublicKeyInfo from the document.
        key: the loaded RSA public key.
    """

    attestation: VerifiedAttestation
    spki: bytes
    key: rsa.RSAPublicKey


Handler = Callable[[dict[str, Any], Caller, datetime], dict[str, Any]]


class KmsService:
    """The emulated KMS: keys, policies and operations.

    Thread-safe. Args are keyword-only.

    Args:
        region: the region in key ARNs.
        account_id: the account that owns every key.
        trust_root: the root attestation documents must chain to.
        store: where keys live.
        secure_transport: the value of ``aws:SecureTransport`` (``True`` when serving TLS).
        partition: the ARN partition.
    """

    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        trust_root: TrustRoot,
        store: KeyStore,
        secure_transport: bool = False,
        partition: str = "aws",
    ) -> None:
        self.region = region
        self.account_id = account_id
        self.partition = partition
        self.store = store
        self.verifier = Verifier(trust_root=trust_root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            # PCRs are the key policy's business (condition keys), not the verifier's.
            self.attestation_policy = Policy(pcrs={}, unsafe_any_pcrs=True, allow_debug=True)
        self._secure = "true" if secure_transport else "false"
        self._private_keys: dict[str, PrivateKey] = {}
        self._handlers: dict[str, Handler] = {
            "CancelKeyDeletion": self._cancel_key_deletion,
            "CreateAlias": self._create_alias,
            "CreateKey": self._create_key,
            "Decrypt": self._decrypt,
            "DeleteAlias": self._delete_alias,
            "DeriveSharedSecret": self._derive_shared_secret,
            "DescribeKey": self._describe_key,
            "DisableKey": self._disable_key,
            "EnableKey": self._enable_key,
            "Encrypt": self._encrypt,
            "GenerateDataKey": self._generate_data_key,
            "GenerateDataKeyPair": self._generate_data_key_pair,
            "GenerateDataKeyPairWithoutPlaintext": functools.partial(
                self._generate_data_key_pair, without_plaintext=True
            ),
            "GenerateDataKeyWithoutPlaintext": functools.partial(
                self._generate_data_key, without_plaintext=True
            ),
            "GenerateRandom": self._generate_random,
            "GetKeyPolicy": self._get_key_policy,
            "GetPublicKey": self._get_public_key,
            "ListAliases": self._list_aliases,
            "ListKeys": self._list_keys,
            "PutKeyPolicy": self._put_key_policy,
            "ReEncrypt": self._re_encrypt,
            "ScheduleKeyDeletion": self._schedule_key_deletion,
        }
        kms_model()  # load botocore's model now, not during the first request

    @property
    def operations(self) -> frozenset[str]:
        """The operations the emulator implements."""
        return frozenset(self._handlers)

    # --- entry points ----------------------------------------------------------------

    def handle(self, operation: str, body: bytes, caller: Caller, now: datetime) -> bytes:
        """Run one request and return the JSON answer.

        Raises:
            ApiError: the KMS error to answer with.
        """
        handler = self._handlers.get(operation)
        if handler is None:
            if operation in kms_model().operation_names:
                raise ApiError(
                    "UnsupportedOperationException",
                    f"The KMS emulator does not implement {operation}",
                )
            raise ApiError("UnknownOperationException", f"Unknown operation {operation[:80]}")
        params = parse_request(operation, body)
        return encode_response(handler(params, caller, now))

    def call(
        self, operation: str, params: Mapping[str, Any], caller: Caller, now: datetime
    ) -> dict[str, Any]:
        """Run one operation on already decoded parameters (blobs as bytes); for tools."""

        def jsonable(value: object) -> object:
            if isinstance(value, bytes):
                return base64.b64encode(value).decode()
            if isinstance(value, dict):
                return {k: jsonable(v) for k, v in value.items()}
            if isinstance(value, list):
                return [jsonable(v) for v in value]
            return value

        body = json.dumps(jsonable(dict(params))).encode()
        answer: dict[str, Any] = json.loads(self.handle(operation, body, caller, now))
        return answer

    # --- keys, ARNs, states ----------------------------------------------------------

    def key_arn(self, key_id: str) -> str:
        """The ARN of a key of this emulator."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        """The ARN of an alias (``alias/...``)."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:{name}"

    def _live(self, key_id: str, now: datetime) -> KeyRecord | None:
        record = self.store.get_key(key_id)
        if (
            record is not None
            and record.state == KeyState.PENDING_DELETION
            and record.deletion_date is not None
            and record.deletion_date <= now
        ):
            logger.info("key %s reached its deletion date; deleting it", record.arn)
            self.store.delete_key(key_id)
            self._private_keys.pop(key_id, None)
            return None
        return record

    def _resolve(self, ref: str, now: datetime, *, aliases: bool = True) -> KeyRecord:
        key_id: str | None = None
        alias: str | None = None
        if ref.startswith("arn:"):
            parts = ref.split(":", 5)
            if (
                len(parts) != 6
                or parts[2] != "kms"
                or parts[3] != self.region
                or parts[4] != self.account_id
            ):
                raise ApiError("NotFoundException", f"Invalid arn {ref[:200]}")
            resource = parts[5]
            if resource.startswith("key/"):
                key_id = resource[4:]
            elif resource.startswith("alias/"):
                alias = resource
            else:
                raise ApiError("NotFoundException", f"Invalid arn {ref[:200]}")
        elif ref.startswith("alias/"):
            alias = ref
        else:
            key_id = ref
        if alias is not None:
            if not aliases:
                raise ApiError(
                    "NotFoundException",
                    f"Invalid keyId {ref[:200]}: give a key id or key ARN, not an alias",
                )
            entry = self.store.get_alias(alias)
            if entry is None:
                raise ApiError("NotFoundException", f"Alias {self.alias_arn(alias)} is not found.")
            key_id = entry.key_id
        assert key_id is not None  # noqa: S101 - one of the branches set it
        try:
            key_id = str(uuid.UUID(key_id))
        except ValueError:
            raise ApiError("NotFoundException", f"Invalid keyId '{ref[:200]}'") from None
        record = self._live(key_id, now)
        if record is None:
            raise ApiError("NotFoundException", f"Key '{self.key_arn(key_id)}' does not exist")
        return record

    @staticmethod
    def _usable(record: KeyRecord) -> None:
        if record.state == KeyState.DISABLED:
            raise ApiError("DisabledException", f"{record.arn} is disabled.")
        if record.state == KeyState.PENDING_DELETION:
            raise ApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")

    @staticmethod
    def _not_pending(record: KeyRecord) -> None:
        if record.state == KeyState.PENDING_DELETION:
            raise ApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")

    def _private_key(self, record: KeyRecord) -> PrivateKey:
        key = self._private_keys.get(record.key_id)
        if key is None:
            loaded = load_der_private_key(record.material, None)
            if not isinstance(
                loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
            ):  # pragma: no cover - we store only these
                raise ApiError("KMSInternalException", "stored key material has an unknown type")
            key = self._private_keys[record.key_id] = loaded
        return key

    def _public_spki(self, record: KeyRecord) -> bytes:
        return (
            self._private_key(record)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )

    # --- policy ----------------------------------------------------------------------

    def _policy_request(
        self,
        caller: Caller,
        action: str,
        resource: str,
        context: Mapping[str, tuple[str, ...]] | None = None,
    ) -> PolicyRequest:
        values: dict[str, tuple[str, ...]] = {
            "aws:principalarn": (caller.principal_arn,),
            "aws:principalaccount": (caller.account,),
            "kms:calleraccount": (caller.account,),
            "aws:securetransport": (self._secure,),
        }
        if context:
            values.update(context)
        return PolicyRequest(
            caller_arn=caller.arn,
            principal_arn=caller.principal_arn,
            account=caller.account,
            action=action,
            resource=resource,
            context=values,
        )

    def authorize(
        self,
        caller: Caller,
        action: str,
        record: KeyRecord,
        context: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Decide the key policy; raise ``AccessDeniedException`` unless it allows.

        Raises:
            ApiError: ``AccessDeniedException`` in KMS's wording.
        """
        decision = evaluate_key_policy(
            record.policy, self._policy_request(caller, action, record.arn, context)
        )
        if decision.allowed:
            return
        base = (
            f"User: {caller.arn} is not authorized to perform: {action} on resource: {record.arn}"
        )
        if decision.decision is Decision.EXPLICIT_DENY:
            logger.info(
                "denied %s on %s: statement %s denies", action, record.arn, decision.statement
            )
            raise ApiError(
                "AccessDeniedException", f"{base} with an explicit deny in a resource-based policy"
            )
        logger.info(
            "denied %s on %s for %s: no statement allows%s",
            action,
            record.arn,
            caller.arn,
            "".join(f"\n  {r}" for r in decision.reasons),
        )
        raise ApiError(
            "AccessDeniedException",
            f"{base} because no resource-based policy allows the {action} action",
        )

    def _parse_policy(self, text: str, caller: Caller, arn: str, bypass: bool) -> KeyPolicy:
        if len(text.encode("utf-8")) > MAX_KEY_POLICY_SIZE:
            raise ApiError(
                "LimitExceededException",
                f"The key policy is larger than {MAX_KEY_POLICY_SIZE} bytes",
            )
        try:
            policy = parse_key_policy(text)
        except KeyPolicyError as exc:
            raise ApiError("MalformedPolicyDocumentException", str(exc)) from None
        if not bypass:
            probe = self._policy_request(caller, "kms:PutKeyPolicy", arn)
            if not evaluate_key_policy(policy, probe).allowed:
                raise ApiError(
                    "MalformedPolicyDocumentException",
                    "The new key policy will not allow you to update the key policy in the future.",
                )
        return policy

    # --- recipient -------------------------------------------------------------------

    def verify_recipient(self, params: Mapping[str, Any], now: datetime) -> Recipient | None:
        """Verify the request's ``Recipient``, if any.

        Raises:
            ApiError: ``ValidationException`` naming what is wrong with the document.
        """
        raw = params.get("Recipient")
        if raw is None:
            return None
        if raw.get("KeyEncryptionAlgorithm") != "RSAES_OAEP_SHA_256":
            raise ApiError(
                "ValidationException",
                "Recipient.KeyEncryptionAlgorithm is required and must be RSAES_OAEP_SHA_256",
            )
        document = raw.get("AttestationDocument")
        if document is None:
            raise ApiError("ValidationException", "Recipient.AttestationDocument is required")
        try:
            verified = self.verifier.verify(document, policy=self.attestation_policy, at=now)
        except MalformedError as exc:
            raise _bad_document(f"it is malformed: {exc}") from None
        except ChainError as exc:
            raise _bad_document(
                f"its certificate chain is not valid (trust root: "
                f"{self.verifier.trust_root.name}): {exc}"
            ) from None
        except SignatureError:
            raise _bad_document("its signature does not verify") from None
        except PolicyError as exc:  # pragma: no cover - the policy pins nothing
            raise _bad_document(str(exc)) from None
        spki = verified.public_key
        if not spki:
            raise _bad_document("it has no public_key (an RSA-2048 SubjectPublicKeyInfo)")
        try:
            key = load_der_public_key(spki)
        except (ValueError, UnsupportedAlgorithm):
            raise _bad_document("its public_key is not a DER SubjectPublicKeyInfo") from None
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RECIPIENT_RSA_KEY_SIZE:
            raise _bad_document("its public_key is not an RSA-2048 key")
        logger.debug(
            "Recipient verified: module %s, PCR0 %s",
            verified.module_id,
            verified.pcrs.get(0, b"").hex(),
        )
        return Recipient(attestation=verified, spki=spki, key=key)

    @staticmethod
    def _recipient_values(recipient: Recipient | None) -> dict[str, tuple[str, ...]]:
        return {} if recipient is None else recipient_condition_values(recipient.attestation.pcrs)

    @staticmethod
    def _deliver(
        result: dict[str, Any], field: str, plaintext: bytes, recipient: Recipient | None
    ) -> dict[str, Any]:
        if recipient is None:
            result[field] = plaintext
        else:
            result["CiphertextForRecipient"] = build_envelope(
                plaintext, recipient.spki, recipient.key
            )
        return result

    # --- key management --------------------------------------------------------------

    def metadata(self, record: KeyRecord) -> dict[str, Any]:
        """The ``KeyMetadata`` structure of a key."""
        meta: dict[str, Any] = {
            "AWSAccountId": self.account_id,
            "KeyId": record.key_id,
            "Arn": record.arn,
            "CreationDate": record.created,
            "Enabled": record.state == KeyState.ENABLED,
            "Description": record.description,
            "KeyUsage": record.key_usage,
            "KeyState": record.state,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": record.key_spec,
            "KeySpec": record.key_spec,
            "MultiRegion": False,
        }
        meta.update(_keys.algorithm_lists(record.key_spec, record.key_usage))
        if record.state == KeyState.PENDING_DELETION:
            meta["DeletionDate"] = record.deletion_date
            meta["PendingDeletionWindowInDays"] = record.pending_window_days
        if record.symmetric:
            meta["CurrentKeyMaterialId"] = record.material_id
        return meta

    def _create_key(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        for name in ("CustomKeyStoreId", "XksKeyId"):
            if name in p:
                raise ApiError(
                    "UnsupportedOperationException", f"The KMS emulator does not emulate {name}"
                )
        if p.get("Origin", "AWS_KMS") != "AWS_KMS":
            raise ApiError(
                "UnsupportedOperationException", "The KMS emulator supports only Origin AWS_KMS"
            )
        if p.get("MultiRegion"):
            raise ApiError(
                "UnsupportedOperationException",
                "The KMS emulator does not emulate multi-Region keys",
            )
        if "KeySpec" in p and "CustomerMasterKeySpec" in p:
            raise ApiError(
                "ValidationException", "Specify KeySpec or CustomerMasterKeySpec, not both"
            )
        spec = p.get("KeySpec") or p.get("CustomerMasterKeySpec") or _keys.SYMMETRIC_DEFAULT
        usage = p.get("KeyUsage", _keys.ENCRYPT_DECRYPT)
        problem = _keys.check_spec_usage(spec, usage)
        if problem is not None:
            kind, _, message = problem.partition(": ")
            code = (
                "UnsupportedOperationException" if kind == "unsupported" else "ValidationException"
            )
            raise ApiError(code, message)
        key_id = str(uuid.uuid4())
        arn = self.key_arn(key_id)
        text = p.get("Policy")
        if text is None:
            text = default_key_policy(self.account_id, partition=self.partition)
            policy = parse_key_policy(text)
        else:
            policy = self._parse_policy(
                text, caller, arn, bool(p.get("BypassPolicyLockoutSafetyCheck"))
            )
        record = KeyRecord(
            key_id=key_id,
            arn=arn,
            created=now,
            description=p.get("Description", ""),
            key_spec=spec,
            key_usage=usage,
            state=KeyState.ENABLED,
            deletion_date=None,
            pending_window_days=None,
            policy_text=text,
            policy=policy,
            material=_keys.generate_material(spec),
            material_id=os.urandom(32).hex(),
        )
        self.store.put_key(record)
        logger.info("created key %s (%s, %s) for %s", arn, spec, usage, caller.arn)
        return {"KeyMetadata": self.metadata(record)}

    def _describe_key(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        record = self._resolve(p["KeyId"], now)
        self.authorize(caller, "kms:DescribeKey", record)
        return {"KeyMetadata": self.metadata(record)}

    @staticmethod
    def _page(items: list[Any], p: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        limit = p.get("Limit", _LIST_DEFAULT)
        start = 0
        if "Marker" in p:
            try:
                start = int(p["Marker"])
            except ValueError:
                raise ApiError("InvalidMarkerException", "The marker is not valid") from None
            if not 0 <= start <= len(items):
                raise ApiError("InvalidMarkerException", "The marker is not valid")
        page = items[start : start + limit]
        truncated = start + limit < len(items)
        extra: dict[str, Any] = {"Truncated": truncated}
        if truncated:
            extra["NextMarker"] = str(start + limit)
        return page, extra

    def _list_keys(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        keys = [k for k in self.store.all_keys() if self._live(k.key_id, now) is not None]
        page, extra = self._page(keys, p)
        return {"Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page], **extra}

    def _check_alias_name(self, name: str) -> None:
        if not name.startswith("alias/") or name == "alias/":
            raise ApiError("InvalidAliasNameException", 'Alias must start with the prefix "alias/"')
        if name.startswith("alias/aws/"):
            raise ApiError(
                "InvalidAliasNameException", "Alias names starting with alias/aws/ are reserved"
            )

    def _create_alias(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        name = p["AliasName"]
        self._check_alias_name(name)
        record = self._resolve(p["TargetKeyId"], now, aliases=False)
        self.authorize(caller, "kms:CreateAlias", record)
        self._not_pending(record)
        with self.store.lock:
            existing = self.store.get_alias(name)
            if existing is not None and self._live(existing.key_id, now) is not None:
                raise ApiError(
                    "AlreadyExistsException",
                    f"An alias with the name {self.alias_arn(name)} already exists",
                )
            self.store.put_alias(
                AliasRecord(name=name, key_id=record.key_id, created=now, updated=now)
            )
        return {}

    def _delete_alias(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        name = p["AliasName"]
        self._check_alias_name(name)
        with self.store.lock:
            record = self._resolve(name, now)
            self.authorize(caller, "kms:DeleteAlias", record)
            self.store.delete_alias(name)
        return {}

    def _list_aliases(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        wanted = None
        if "KeyId" in p:
            wanted = self._resolve(p["KeyId"], now, aliases=False).key_id
        aliases = [
            a
            for a in self.store.all_aliases()
            if (wanted is None or a.key_id == wanted) and self._live(a.key_id, now) is not None
        ]
        page, extra = self._page(aliases, p)
        entries = [
            {
                "AliasName": a.name,
                "AliasArn": self.alias_arn(a.name),
                "TargetKeyId": a.key_id,
                "CreationDate": a.created,
                "LastUpdatedDate": a.updated,
            }
            for a in page
        ]
        return {"Aliases": entries, **extra}

    @staticmethod
    def _policy_name(p: Mapping[str, Any]) -> str:
        name: str = p.get("PolicyName", "default")
        if name != "default":
            raise ApiError("NotFoundException", f"No such policy exists: {name[:128]}")
        return name

    def _get_key_policy(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        name = self._policy_name(p)
        record = self._resolve(p["KeyId"], now, aliases=False)
        self.authorize(caller, "kms:GetKeyPolicy", record)
        return {"Policy": record.policy_text, "PolicyName": name}

    def _put_key_policy(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        self._policy_name(p)
        with self.store.lock:
            record = self._resolve(p["KeyId"], now, aliases=False)
            self.authorize(caller, "kms:PutKeyPolicy", record)
            self._not_pending(record)
            policy = self._parse_policy(
                p["Policy"], caller, record.arn, bool(p.get("BypassPolicyLockoutSafetyCheck"))
            )
            self.store.put_key(dataclasses.replace(record, policy_text=p["Policy"], policy=policy))
        logger.info("policy of %s replaced by %s", record.arn, caller.arn)
        return {}

    def _set_state(
        self, p: dict[str, Any], caller: Caller, now: datetime, action: str, state: str
    ) -> KeyRecord:
        with self.store.lock:
            record = self._resolve(p["KeyId"], now, aliases=False)
            self.authorize(caller, action, record)
            self._not_pending(record)
            if record.state != state:
                record = dataclasses.replace(record, state=state)
                self.store.put_key(record)
        return record

    def _enable_key(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        self._set_state(p, caller, now, "kms:EnableKey", KeyState.ENABLED)
        return {}

    def _disable_key(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        self._set_state(p, caller, now, "kms:DisableKey", KeyState.DISABLED)
        return {}

    def _schedule_key_deletion(
        self, p: dict[str, Any], caller: Caller, now: datetime
    ) -> dict[str, Any]:
        days = p.get("PendingWindowInDays", 30)
        if not 7 <= days <= 30:
            raise ApiError(
                "ValidationException",
                f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed "
                "to satisfy constraint: Member must have value between 7 and 30 (inclusive)",
            )
        with self.store.lock:
            record = self._resolve(p["KeyId"], now, aliases=False)
            self.authorize(caller, "kms:ScheduleKeyDeletion", record)
            self._not_pending(record)
            record = dataclasses.replace(
                record,
                state=KeyState.PENDING_DELETION,
                deletion_date=now + timedelta(days=days),
                pending_window_days=days,
            )
            self.store.put_key(record)
        logger.info("key %s scheduled for deletion on %s", record.arn, record.deletion_date)
        return {
            "KeyId": record.arn,
            "DeletionDate": record.deletion_date,
            "KeyState": record.state,
            "PendingWindowInDays": days,
        }

    def _cancel_key_deletion(
        self, p: dict[str, Any], caller: Caller, now: datetime
    ) -> dict[str, Any]:
        with self.store.lock:
            record = self._resolve(p["KeyId"], now, aliases=False)
            self.authorize(caller, "kms:CancelKeyDeletion", record)
            if record.state != KeyState.PENDING_DELETION:
                raise ApiError("KMSInvalidStateException", f"{record.arn} is not pending deletion.")
            record = dataclasses.replace(
                record, state=KeyState.DISABLED, deletion_date=None, pending_window_days=None
            )
            self.store.put_key(record)
        return {"KeyId": record.arn}

    def _get_public_key(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        record = self._resolve(p["KeyId"], now)
        self.authorize(caller, "kms:GetPublicKey", record)
        self._usable(record)
        if record.symmetric:
            raise ApiError(
                "UnsupportedOperationException",
                f"{record.arn} is a symmetric key; it has no public key",
            )
        result: dict[str, Any] = {
            "KeyId": record.arn,
            "PublicKey": self._public_spki(record),
            "CustomerMasterKeySpec": record.key_spec,
            "KeySpec": record.key_spec,
            "KeyUsage": record.key_usage,
        }
        result.update(_keys.algorithm_lists(record.key_spec, record.key_usage))
        return result

    # --- cryptographic operations ----------------------------------------------------

    @staticmethod
    def _context(p: Mapping[str, Any], name: str = "EncryptionContext") -> dict[str, str]:
        context: dict[str, str] = p.get(name) or {}
        try:
            _ciphertext.canonical_context(context)
        except ValueError as exc:
            raise ApiError("ValidationException", f"{name}: {exc}") from None
        return context

    @staticmethod
    def _usage(record: KeyRecord, usage: str, action: str) -> None:
        if record.key_usage != usage:
            raise ApiError(
                "InvalidKeyUsageException",
                f"{record.arn} key usage is {record.key_usage} which is not valid for {action}.",
            )

    @staticmethod
    def _algorithm(record: KeyRecord, algorithm: str) -> None:
        if algorithm not in _keys.encryption_algorithms(record.key_spec, record.key_usage):
            raise ApiError(
                "InvalidKeyUsageException",
                f"The EncryptionAlgorithm {algorithm} is not valid for {record.arn} "
                f"({record.key_spec}).",
            )

    @staticmethod
    def _dry_run(p: Mapping[str, Any]) -> None:
        if p.get("DryRun"):
            raise ApiError("DryRunOperationException", _DRY_RUN)

    def _seal(self, record: KeyRecord, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        return _ciphertext.seal(record.material, record.key_id, plaintext, context)

    def _encrypt_with(
        self, record: KeyRecord, algorithm: str, plaintext: bytes, context: Mapping[str, str]
    ) -> bytes:
        if record.symmetric:
            return self._seal(record, plaintext, context)
        if context:
            raise ApiError(
                "ValidationException", "EncryptionContext is not supported with asymmetric keys"
            )
        limit = _keys.rsa_oaep_max_plaintext(record.key_spec, algorithm)
        if len(plaintext) > limit:
            raise ApiError(
                "ValidationException",
                f"Plaintext is longer than {limit} bytes, the most {algorithm} can encrypt "
                f"with {record.key_spec}",
            )
        key = self._private_key(record)
        assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - RSA keys encrypt
        hash_type = _OAEP_HASH[algorithm]
        return key.public_key().encrypt(
            plaintext, OAEP(mgf=MGF1(algorithm=hash_type()), algorithm=hash_type(), label=None)
        )

    def _encrypt(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        record = self._resolve(p["KeyId"], now)
        context = self._context(p)
        self.authorize(caller, "kms:Encrypt", record, encryption_context_condition_values(context))
        self._usable(record)
        self._usage(record, _keys.ENCRYPT_DECRYPT, "Encrypt")
        algorithm = p.get("EncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
        self._algorithm(record, algorithm)
        blob = self._encrypt_with(record, algorithm, p["Plaintext"], context)
        self._dry_run(p)
        return {"CiphertextBlob": blob, "KeyId": record.arn, "EncryptionAlgorithm": algorithm}

    def _open(
        self,
        *,
        blob: bytes | None,
        key_ref: str | None,
        algorithm: str,
        context: Mapping[str, str],
        caller: Caller,
        action: str,
        now: datetime,
        extra: Mapping[str, tuple[str, ...]],
        ignore_ciphertext: bool = False,
    ) -> tuple[KeyRecord, bytes | None]:
        """Find the key of a ciphertext, authorize, and decrypt (Decrypt, ReEncrypt source)."""
        values = {**encryption_context_condition_values(context), **extra}
        if ignore_ciphertext or algorithm != _keys.SYMMETRIC_DEFAULT:
            if key_ref is None:
                raise ApiError(
                    "ValidationException",
                    "KeyId is required with an asymmetric EncryptionAlgorithm or "
                    "DryRunModifiers IGNORE_CIPHERTEXT",
                )
            record = self._resolve(key_ref, now)
            self.authorize(caller, action, record, values)
            self._usable(record)
            self._usage(record, _keys.ENCRYPT_DECRYPT, action.removeprefix("kms:"))
            self._algorithm(record, algorithm)
            if ignore_ciphertext:
                return record, None
            if blob is None:
                raise ApiError("ValidationException", _NO_CIPHERTEXT)
            if context:
                raise ApiError(
                    "ValidationException", "EncryptionContext is not supported with asymmetric keys"
                )
            key = self._private_key(record)
            assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - checked by _algorithm
            hash_type = _OAEP_HASH[algorithm]
            try:
                plaintext = key.decrypt(
                    blob, OAEP(mgf=MGF1(algorithm=hash_type()), algorithm=hash_type(), label=None)
                )
            except ValueError:
                raise ApiError("InvalidCiphertextException", "") from None
            return record, plaintext
        if blob is None:
            raise ApiError("ValidationException", _NO_CIPHERTEXT)
        try:
            sealed = _ciphertext.parse_blob(blob)
        except MalformedError:
            raise ApiError("InvalidCiphertextException", "") from None
        if key_ref is not None:
            record = self._resolve(key_ref, now)
            if record.key_id != sealed.key_id:
                if not record.symmetric:
                    self._algorithm(record, algorithm)
                raise ApiError(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify a KMS key that can perform "
                    "this operation.",
                )
        else:
            found = self._live(sealed.key_id, now)
            if found is None:
                raise ApiError("InvalidCiphertextException", "")
            record = found
        self.authorize(caller, action, record, values)
        self._usable(record)
        try:
            plaintext = _ciphertext.open_blob(record.material, sealed, context)
        except MalformedError:
            raise ApiError("InvalidCiphertextException", "") from None
        return record, plaintext

    def _decrypt(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        recipient = self.verify_recipient(p, now)
        algorithm = p.get("EncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
        record, plaintext = self._open(
            blob=p.get("CiphertextBlob"),
            key_ref=p.get("KeyId"),
            algorithm=algorithm,
            context=self._context(p),
            caller=caller,
            action="kms:Decrypt",
            now=now,
            extra=self._recipient_values(recipient),
            ignore_ciphertext=bool(p.get("DryRun"))
            and "IGNORE_CIPHERTEXT" in p.get("DryRunModifiers", ()),
        )
        self._dry_run(p)
        assert plaintext is not None  # noqa: S101 - only a dry run skips the ciphertext
        result: dict[str, Any] = {"KeyId": record.arn, "EncryptionAlgorithm": algorithm}
        if record.symmetric:
            result["KeyMaterialId"] = record.material_id
        return self._deliver(result, "Plaintext", plaintext, recipient)

    def _re_encrypt(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        source_algorithm = p.get("SourceEncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
        destination_algorithm = p.get("DestinationEncryptionAlgorithm", _keys.SYMMETRIC_DEFAULT)
        source, plaintext = self._open(
            blob=p.get("CiphertextBlob"),
            key_ref=p.get("SourceKeyId"),
            algorithm=source_algorithm,
            context=self._context(p, "SourceEncryptionContext"),
            caller=caller,
            action="kms:ReEncryptFrom",
            now=now,
            extra={},
            ignore_ciphertext=bool(p.get("DryRun"))
            and "IGNORE_CIPHERTEXT" in p.get("DryRunModifiers", ()),
        )
        destination = self._resolve(p["DestinationKeyId"], now)
        context = self._context(p, "DestinationEncryptionContext")
        self.authorize(
            caller, "kms:ReEncryptTo", destination, encryption_context_condition_values(context)
        )
        self._usable(destination)
        self._usage(destination, _keys.ENCRYPT_DECRYPT, "ReEncrypt")
        self._algorithm(destination, destination_algorithm)
        self._dry_run(p)
        assert plaintext is not None  # noqa: S101 - only a dry run skips the ciphertext
        blob = self._encrypt_with(destination, destination_algorithm, plaintext, context)
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
        self,
        p: Mapping[str, Any],
        caller: Caller,
        now: datetime,
        action: str,
        recipient: Recipient | None,
        context: Mapping[str, str],
    ) -> KeyRecord:
        record = self._resolve(p["KeyId"], now)
        values = {
            **encryption_context_condition_values(context),
            **self._recipient_values(recipient),
        }
        self.authorize(caller, action, record, values)
        self._usable(record)
        if not record.symmetric or record.key_usage != _keys.ENCRYPT_DECRYPT:
            raise ApiError(
                "InvalidKeyUsageException",
                f"{record.arn} is not a symmetric encryption key; {action} needs one.",
            )
        return record

    def _generate_data_key(
        self,
        p: dict[str, Any],
        caller: Caller,
        now: datetime,
        *,
        without_plaintext: bool = False,
    ) -> dict[str, Any]:
        has_size, has_spec = "NumberOfBytes" in p, "KeySpec" in p
        if has_size == has_spec:
            raise ApiError(
                "ValidationException",
                "Specify either KeySpec or NumberOfBytes, but not both"
                if has_size
                else "Please specify either number of bytes or key spec.",
            )
        size = p["NumberOfBytes"] if has_size else {"AES_256": 32, "AES_128": 16}[p["KeySpec"]]
        recipient = self.verify_recipient(p, now)
        context = self._context(p)
        action = "kms:GenerateDataKey" + ("WithoutPlaintext" if without_plaintext else "")
        record = self._symmetric_key_for(p, caller, now, action, recipient, context)
        self._dry_run(p)
        plaintext = os.urandom(size)
        result: dict[str, Any] = {
            "CiphertextBlob": self._seal(record, plaintext, context),
            "KeyId": record.arn,
            "KeyMaterialId": record.material_id,
        }
        if without_plaintext:
            return result
        return self._deliver(result, "Plaintext", plaintext, recipient)

    def _generate_data_key_pair(
        self,
        p: dict[str, Any],
        caller: Caller,
        now: datetime,
        *,
        without_plaintext: bool = False,
    ) -> dict[str, Any]:
        recipient = self.verify_recipient(p, now)
        context = self._context(p)
        action = "kms:GenerateDataKeyPair" + ("WithoutPlaintext" if without_plaintext else "")
        record = self._symmetric_key_for(p, caller, now, action, recipient, context)
        self._dry_run(p)
        pair = _keys.data_key_pair(p["KeyPairSpec"])
        if pair is None:
            raise ApiError(
                "UnsupportedOperationException",
                f"The KMS emulator does not emulate KeyPairSpec {p['KeyPairSpec']}",
            )
        public, private = pair
        result: dict[str, Any] = {
            "PrivateKeyCiphertextBlob": self._seal(record, private, context),
            "PublicKey": public,
            "KeyId": record.arn,
            "KeyPairSpec": p["KeyPairSpec"],
            "KeyMaterialId": record.material_id,
        }
        if without_plaintext:
            return result
        return self._deliver(result, "PrivateKeyPlaintext", private, recipient)

    def _generate_random(self, p: dict[str, Any], caller: Caller, now: datetime) -> dict[str, Any]:
        if "CustomKeyStoreId" in p:
            raise ApiError(
                "UnsupportedOperationException",
                "The KMS emulator does not emulate custom key stores",
            )
        if "NumberOfBytes" not in p:
            raise ApiError(
                "ValidationException",
                "1 validation error detected: Value null at 'numberOfBytes' failed to satisfy "
                "constraint: Member must not be null",
            )
        recipient = self.verify_recipient(p, now)
        return self._deliver({}, "Plaintext", os.urandom(p["NumberOfBytes"]), recipient)

    def _derive_shared_secret(
        self, p: dict[str, Any], caller: Caller, now: datetime
    ) -> dict[str, Any]:
        recipient = self.verify_recipient(p, now)
        record = self._resolve(p["KeyId"], now)
        self.authorize(caller, "kms:DeriveSharedSecret", record, self._recipient_values(recipient))
        self._usable(record)
        self._usage(record, _keys.KEY_AGREEMENT, "DeriveSharedSecret")
        private = self._private_key(record)
        assert isinstance(private, ec.EllipticCurvePrivateKey)  # noqa: S101 - KEY_AGREEMENT
        try:
            peer = load_der_public_key(p["PublicKey"])
        except (ValueError, UnsupportedAlgorithm):
            peer = None
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != (
            private.curve.name
        ):
            raise ApiError(
                "ValidationException",
                f"PublicKey must be a DER SubjectPublicKeyInfo on the curve of {record.key_spec}",
            )
        self._dry_run(p)
        secret = private.exchange(ec.ECDH(), peer)
        result: dict[str, Any] = {
            "KeyId": record.arn,
            "KeyAgreementAlgorithm": "ECDH",
            "KeyOrigin": "AWS_KMS",
        }
        return self._deliver(result, "SharedSecret", secret, recipient)


def _bad_document(why: str) -> ApiError:
    return ApiError(
        "ValidationException", f"The attestation document in Recipient is not valid: {why}"
    )
