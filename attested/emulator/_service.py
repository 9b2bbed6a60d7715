"""The KMS service core: dispatch, key lookup, authorization, Recipient, shared checks.

No sockets here: :class:`KmsService` takes an operation name, the raw JSON body, the
authenticated caller and the time, and returns the JSON answer or raises
:class:`~attested.kms._wire.ApiError`. The HTTP layer (``_server``) and tests
call it the same way. The operations themselves live in ``_ops_admin`` (key
administration) and ``_ops_crypto`` (cryptographic operations); every operation of
botocore's KMS model that neither implements answers ``UnsupportedOperationException``.

For every operation on a key the order is KMS's: find the key (``NotFoundException``),
decide the key policy (``AccessDeniedException``), check the key's state
(``DisabledException``, ``KMSInvalidStateException``) and usage
(``InvalidKeyUsageException``), honour ``DryRun``, then do the work. A ``Recipient`` is
verified first, because its PCRs are condition values of the policy decision.

AWS KMS takes both kinds of attestation document in ``Recipient``: a Nitro Enclave's
(``pcrs``) and an EC2 instance's NitroTPM document (``nitrotpm_pcrs``). The emulator reads
the kind from the document's own signed payload (:func:`attested.document.profile_of`), verifies it
with that profile's verifier on the one trust root, and gives the condition keys of that
kind only (ADR 0133): an enclave document never satisfies a ``NitroTPMPCR<n>`` condition
and a NitroTPM document never satisfies an ``ImageSha384``/``PCR<n>`` one.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

from attested._aws import KMS_KEY_ID
from attested.document import Profile, parse_attestation, profile_of
from attested.emulator import _keys, _ops_admin, _ops_crypto
from attested.emulator._cms_writer import build_envelope
from attested.emulator._keys import KeyRecord, KeyState, PrivateKey
from attested.emulator._sigv4 import Caller
from attested.emulator._store import KeyStore
from attested.errors import (
    ChainError,
    KeyPolicyError,
    MalformedError,
    PolicyError,
    SecurityWarning,
    SignatureError,
)
from attested.keypolicy._evaluate import (
    MAX_KEY_POLICY_SIZE,
    Decision,
    KeyPolicy,
    PolicyRequest,
    parse_key_policy,
    recipient_condition_values,
)
from attested.keypolicy._evaluate import evaluate as evaluate_key_policy
from attested.kms._wire import ApiError, Json, encode_response, kms_model, parse_request
from attested.policy import Policy
from attested.trust import TrustRoot
from attested.verify import VerifiedAttestation, Verifier

__all__ = ["RECIPIENT_RSA_KEY_SIZE", "Handler", "KmsService", "Recipient"]

logger = logging.getLogger(__name__)

RECIPIENT_RSA_KEY_SIZE = 2048
"""The only RSA key size accepted in an attestation document's ``public_key``.

KMS documents RSA-2048 ("must include a RSA2048 key"); whether it accepts 3072 or 4096 is
unverified, so the emulator refuses them rather than let a developer depend on them.
"""

_DRY_RUN = "The request would have succeeded, but the DryRun option is set."
_LIST_DEFAULT = 100
_MRK_ID_RE = re.compile(r"mrk-[0-9a-f]{32}")
# Operations the emulator knows it does not emulate, and why (others: a generic answer).
_NOT_EMULATED = {
    **dict.fromkeys(
        ("CreateGrant", "RetireGrant", "RevokeGrant"),
        "The KMS emulator does not emulate grants: a grant cannot carry the "
        "kms:RecipientAttestation conditions, so emulating them would add a way around the "
        "key policy's attestation checks; authorize with the key policy instead",
    ),
    **dict.fromkeys(
        (
            "ConnectCustomKeyStore",
            "CreateCustomKeyStore",
            "DeleteCustomKeyStore",
            "DescribeCustomKeyStores",
            "DisconnectCustomKeyStore",
            "UpdateCustomKeyStore",
        ),
        "The KMS emulator does not emulate custom key stores (CloudHSM, external)",
    ),
    "UpdatePrimaryRegion": "The KMS emulator does not emulate multi-Region keys",
    "Encapsulate": "The KMS emulator does not emulate ML-KEM keys",
    "Decapsulate": "The KMS emulator does not emulate ML-KEM keys",
    "GetKeyLastUsage": "The KMS emulator does not record key usage",
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """A verified ``Recipient``: the attestation and the RSA key to encrypt for.

    Attributes:
        attestation: the verified document (its ``profile`` says which kind it is).
        spki: the DER SubjectPublicKeyInfo from the document.
        key: the loaded RSA public key.
    """

    attestation: VerifiedAttestation
    spki: bytes
    key: rsa.RSAPublicKey

    @property
    def profile(self) -> Profile:
        """The kind of document: an enclave's or an EC2 instance's NitroTPM document."""
        return self.attestation.profile


Handler = Callable[["KmsService", Json, Caller, datetime], Json]
"""An operation: (service, validated parameters, caller, time) to the answer's members."""


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
        self.verifiers = {
            profile: Verifier(trust_root=trust_root, profile=profile) for profile in Profile
        }
        self.verifier = self.verifiers[Profile.ENCLAVE]
        """The enclave verifier (``verifiers`` holds one per document profile)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            # PCRs are the key policy's business (condition keys), not the verifier's.
            self.attestation_policy = Policy(pcrs={}, unsafe_any_pcrs=True, allow_debug=True)
        self._secure = "true" if secure_transport else "false"
        self._private_keys: dict[str, PrivateKey] = {}
        self._handlers: dict[str, Handler] = {**_ops_admin.HANDLERS, **_ops_crypto.HANDLERS}
        kms_model()  # load botocore's model now, not during the first request

    @property
    def operations(self) -> frozenset[str]:
        """The operations the emulator implements (others answer UnsupportedOperation)."""
        return frozenset(self._handlers)

    def handle(self, operation: str, body: bytes, caller: Caller, now: datetime) -> bytes:
        """Run one request and return the JSON answer (empty when it has no members).

        Raises:
            ApiError: the KMS error to answer with.
        """
        handler = self._handlers.get(operation)
        if handler is None:
            if operation in kms_model().operation_names:
                why = _NOT_EMULATED.get(operation, "The KMS emulator does not implement it")
                raise ApiError(
                    "UnsupportedOperationException",
                    f"{operation}: {why} (docs/emulator.md lists what it emulates)",
                )
            raise ApiError("UnknownOperationException", f"Unknown operation {operation[:80]}")
        params = parse_request(operation, body)
        return encode_response(handler(self, params, caller, now))

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
        answer: dict[str, Any] = json.loads(self.handle(operation, body, caller, now) or b"{}")
        return answer

    def key_arn(self, key_id: str) -> str:
        """The ARN of a key of this emulator."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        """The ARN of an alias (``alias/...``)."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:{name}"

    def live(self, key_id: str, now: datetime) -> KeyRecord | None:
        """The key, or ``None``; a key whose deletion date has passed is deleted now."""
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

    def resolve(self, ref: str, now: datetime, *, aliases: bool = True) -> KeyRecord:
        """The key a ``KeyId`` names: a key id, key ARN, alias name or alias ARN.

        Raises:
            ApiError: ``NotFoundException`` in KMS's words (``Invalid keyId 'x'``,
                ``Invalid arn REGION``, ``Key 'ARN' does not exist``, ``Alias ARN is not
                found.``).
        """
        key_id: str | None = None
        alias: str | None = None
        if ref.startswith("arn:"):
            parts = ref.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms":
                raise ApiError("NotFoundException", f"Invalid arn {ref[:200]}")
            if parts[3] != self.region:
                raise ApiError("NotFoundException", f"Invalid arn {parts[3][:40]}")
            resource = parts[5]
            if resource.startswith("key/"):
                key_id = resource[4:]
            elif resource.startswith("alias/"):
                alias = resource
            else:
                raise ApiError("NotFoundException", f"Invalid arn {ref[:200]}")
            if parts[4] != self.account_id:  # a key of another account: none here
                raise ApiError("NotFoundException", f"Key '{ref[:200]}' does not exist")
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
        if _MRK_ID_RE.fullmatch(key_id):  # a well-formed multi-Region key id: none here
            raise ApiError("NotFoundException", f"Key '{self.key_arn(key_id)}' does not exist")
        if not KMS_KEY_ID.fullmatch(key_id):
            raise ApiError("NotFoundException", f"Invalid keyId '{ref[:200]}'")
        record = self.live(key_id, now)
        if record is None:
            raise ApiError("NotFoundException", f"Key '{self.key_arn(key_id)}' does not exist")
        return record

    @staticmethod
    def usable(record: KeyRecord) -> None:
        """Refuse a disabled key or one pending deletion (cryptographic operations)."""
        if record.state == KeyState.DISABLED:
            raise ApiError("DisabledException", f"{record.arn} is disabled.")
        if record.state == KeyState.PENDING_DELETION:
            raise ApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")

    @staticmethod
    def not_pending(record: KeyRecord) -> None:
        """Refuse a key pending deletion (most administrative operations)."""
        if record.state == KeyState.PENDING_DELETION:
            raise ApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")

    @staticmethod
    def require_usage(record: KeyRecord, usage: str, operation: str) -> None:
        """Refuse a key whose ``KeyUsage`` is not ``usage``, in KMS's words."""
        if record.key_usage != usage:
            raise ApiError(
                "InvalidKeyUsageException",
                f"{record.arn} key usage is {record.key_usage} which is not valid for {operation}.",
            )

    def private_key(self, record: KeyRecord) -> PrivateKey:
        """The loaded private key of an RSA or ECC key (cached)."""
        key = self._private_keys.get(record.key_id)
        if key is None:
            loaded = load_der_private_key(record.material, None)
            if not isinstance(
                loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
            ):  # pragma: no cover - we store only these
                raise ApiError("KMSInternalException", "stored key material has an unknown type")
            key = self._private_keys[record.key_id] = loaded
        return key

    def public_spki(self, record: KeyRecord) -> bytes:
        """The DER SubjectPublicKeyInfo of an RSA or ECC key."""
        return (
            self.private_key(record)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )

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

    def parse_policy(self, text: str, caller: Caller, arn: str, bypass: bool) -> KeyPolicy:
        """Parse a key policy for CreateKey/PutKeyPolicy, with KMS's lockout check.

        Raises:
            ApiError: ``LimitExceededException`` (too large) or
                ``MalformedPolicyDocumentException``.
        """
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
        profile = profile_of(document, limits=self.verifier.limits)
        if profile is None:
            raise _bad_document(
                "it is malformed: its payload has neither 'pcrs' (a Nitro Enclave's document) "
                "nor 'nitrotpm_pcrs' (an EC2 instance's NitroTPM document)"
            )
        verifier = self.verifiers[profile]
        try:
            parsed = parse_attestation(document, limits=verifier.limits, profile=profile)
            verified = verifier.verify(parsed, policy=self.attestation_policy, at=now)
        except MalformedError as exc:
            raise _bad_document(f"it is malformed: {exc}{_misuse_hint(document)}") from None
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
            "Recipient verified: %s document, module %s, PCR%d %s",
            profile.value,
            verified.module_id,
            4 if profile is Profile.NITROTPM else 0,
            verified.pcrs.get(4 if profile is Profile.NITROTPM else 0, b"").hex(),
        )
        return Recipient(attestation=verified, spki=spki, key=key)

    @staticmethod
    def recipient_values(recipient: Recipient | None) -> dict[str, tuple[str, ...]]:
        """The ``kms:RecipientAttestation:*`` condition values of a verified Recipient.

        Those of its kind only: ``ImageSha384``/``PCR<n>`` for an enclave document,
        ``NitroTPMPCR<n>`` for a NitroTPM document.
        """
        if recipient is None:
            return {}
        return recipient_condition_values(recipient.attestation.pcrs, profile=recipient.profile)

    @staticmethod
    def deliver(
        result: dict[str, Any],
        field: str,
        plaintext: bytes,
        recipient: Recipient | None,
        *,
        omitted_for_recipient: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Put the secret in ``field``, or only in a CMS envelope for a Recipient.

        With a Recipient the secret goes in ``CiphertextForRecipient`` and the members KMS
        omits then (``omitted_for_recipient``) are dropped.
        """
        if recipient is None:
            result[field] = plaintext
        else:
            for name in omitted_for_recipient:
                result.pop(name, None)
            result["CiphertextForRecipient"] = build_envelope(
                plaintext, recipient.spki, recipient.key
            )
        return result

    @staticmethod
    def dry_run(p: Mapping[str, Any]) -> None:
        """Answer ``DryRunOperationException`` when the request sets ``DryRun``."""
        if p.get("DryRun"):
            raise ApiError("DryRunOperationException", _DRY_RUN)

    @staticmethod
    def page(items: list[Any], p: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """One page of a list operation (``Limit``, ``Marker``) and its Truncated/NextMarker.

        Raises:
            ApiError: ``InvalidMarkerException``.
        """
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


_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")


def _misuse_hint(document: bytes) -> str:
    """Why a malformed document may be a mistake of the caller's tool (AWS CLI, SDKs)."""
    if document[:1] in (b"\x84", b"\xd2"):
        return ""  # it starts like a COSE_Sign1: a document, damaged or not
    if len(document) < 200 and all(32 <= byte < 127 for byte in document):
        return (
            f". It is {len(document)} bytes of text: did you pass a file name? The AWS CLI "
            "reads a file with --recipient KeyEncryptionAlgorithm=RSAES_OAEP_SHA_256,"
            "AttestationDocument@=fileb://doc.cbor (note the @=)"
        )
    if _BASE64_TEXT.fullmatch(document):
        return (
            ". It is base64 text: send the document's raw bytes (the SDK encodes them; "
            "the AWS CLI: AttestationDocument@=fileb://doc.cbor with the CBOR file)"
        )
    return ""


def _bad_document(why: str) -> ApiError:
    return ApiError(
        "ValidationException", f"The attestation document in Recipient is not valid: {why}"
    )
