"""The linter and the KMS emulator agree on "can anyone decrypt without attestation?".

The emulator decides requests with the project's one policy evaluator; the linter asks that
evaluator the question by searching for a request it allows. Here:

* the issue's policies that looked gated but were not: the real emulator (HTTP, boto3)
  hands out plaintext without a ``Recipient``, and the linter now says so (exit 1);
* generated policies: whenever the emulator's KMS service hands out plaintext without a
  ``Recipient`` to any caller, for any encryption context, the linter reports an error
  (never a false "clean"); and every witness the linter reports is replayed against the
  emulator, which must hand out the plaintext (never a made-up finding);
* the same for NitroTPM: whenever the emulator hands a secret to an EC2 instance the
  policy should not admit (a simulated NitroTPM document of another AMI, or of the pinned
  image with another kernel command line), the linter reports an error on the statement
  that allowed it; and every "other AMI" witness, replayed with a simulated NitroTPM
  document at the witness's PCRs, gets the secret.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from attested import emulator, pcr
from attested.cli import main
from attested.emulator import _ciphertext
from attested.emulator._keys import KeyRecord
from attested.emulator._service import KmsService
from attested.emulator._sigv4 import Caller
from attested.emulator._store import KeyStore
from attested.keypolicy import Severity, lint_policy, parse_policy
from attested.keypolicy._evaluate import (
    UNKNOWN_CONDITION_PREFIX,
    compile_policy,
    encryption_context_condition_values,
    evaluate,
)
from attested.keypolicy._reach import Evidence, Witness, find_access
from attested.kms._wire import ApiError
from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm, SimulatedNsm
from attested.trust import TrustRoot
from tests.kit import kms_client

REGION = "us-east-1"
A, B, C = "111122223333", "444455556666", "777788889999"
PARENT = f"arn:aws:iam::{A}:role/enclave-parent"
OTHER = f"arn:aws:iam::{A}:role/other"
ALICE = f"arn:aws:iam::{A}:user/alice"
X_IN_B = f"arn:aws:iam::{B}:role/x"
ADMIN = f"arn:aws:iam::{A}:role/key-admin"
PIN = pcr.measure(b"the image").hex()
ZERO = "0" * 96
IMAGE = "kms:RecipientAttestation:ImageSha384"

ADMIN_KEY, ADMIN_SECRET = "AKIAADMINEXAMPLE0001", "admin/secret/EXAMPLE0000000000000000"
PARENT_KEY, PARENT_SECRET = "AKIAPARENTEXAMPLE001", "parent/secret/EXAMPLE00000000000000"


def _session(role_arn: str, account: str) -> Caller:
    name = role_arn.rsplit("/", 1)[1]
    return Caller(
        access_key_id="AKIATEST",
        arn=f"arn:aws:sts::{account}:assumed-role/{name}/s",
        principal_arn=role_arn,
        account=account,
    )


CALLERS = [
    _session(PARENT, A),
    _session(OTHER, A),
    Caller(access_key_id="AKIATEST", arn=ALICE, principal_arn=ALICE, account=A),
    _session(f"arn:aws:iam::{A}:role/someone", A),
    _session(X_IN_B, B),
    _session(f"arn:aws:iam::{C}:role/enclave-parent", C),
]
CONTEXTS: list[dict[str, str]] = [
    {},
    {"app": "billing"},
    {"app": "Billing"},
    {"app": "billx"},
    {"other": "1"},
    {"app": "payments", "other": "1"},
]
ADMIN_STATEMENT = {
    "Sid": "Admin",
    "Effect": "Allow",
    "Principal": {"AWS": ADMIN},
    "Action": ["kms:Encrypt", "kms:PutKeyPolicy", "kms:DescribeKey"],
    "Resource": "*",
}


# --- the policies, through the real emulator over HTTP ---------------------------


def _looks_gated(condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            ADMIN_STATEMENT,
            {
                "Sid": "ParentLooksGated",
                "Effect": "Allow",
                "Principal": {"AWS": PARENT},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": condition,
            },
        ],
    }


LOOKS_GATED = {
    "if-exists": {"StringEqualsIgnoreCaseIfExists": {IMAGE: PIN}},
    "for-all-values": {"ForAllValues:StringEqualsIgnoreCase": {IMAGE: PIN}},
    "negated": {"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": ZERO}},
}


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulator.KmsEmulator]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsm = SimulatedNsm(pcrs={0: bytes.fromhex(PIN)}, state_dir=tmp_path_factory.mktemp("s"))
    config = emulator.EmulatorConfig(
        host="127.0.0.1",
        port=0,
        region=REGION,
        account_id=A,
        trust_root=nsm.trust_root,
        identities={
            ADMIN_KEY: emulator.Identity(secret_access_key=ADMIN_SECRET, arn=ADMIN),
            PARENT_KEY: emulator.Identity(secret_access_key=PARENT_SECRET, arn=PARENT),
        },
    )
    with emulator.KmsEmulator(config) as running:
        yield running


def _boto(emu: emulator.KmsEmulator, key: str, secret: str) -> Any:
    return kms_client(emu.endpoint_url, key, secret, region=REGION)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(LOOKS_GATED))
def test_looks_gated_policies_hand_out_plaintext_and_lint_says_so(
    emu: emulator.KmsEmulator, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _looks_gated(LOOKS_GATED[name])
    admin = _boto(emu, ADMIN_KEY, ADMIN_SECRET)
    parent = _boto(emu, PARENT_KEY, PARENT_SECRET)
    try:
        key = admin.create_key(Policy=json.dumps(policy), BypassPolicyLockoutSafetyCheck=True)
        arn = key["KeyMetadata"]["Arn"]
        # The emulator: the parent's role, with no Recipient, gets plaintext.
        data_key = parent.generate_data_key(KeyId=arn, KeySpec="AES_256")
        assert len(data_key["Plaintext"]) == 32
        blob = admin.encrypt(KeyId=arn, Plaintext=b"card 4111")["CiphertextBlob"]
        assert parent.decrypt(CiphertextBlob=blob)["Plaintext"] == b"card 4111"
    finally:
        admin.close()
        parent.close()
    # The linter: an error on that statement, naming the role and the operations.
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    assert main(["keypolicy", "lint", str(path)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "unconditional-attested-allow" in x)
    assert "ParentLooksGated" in line
    assert PARENT in line
    assert "kms:Decrypt" in line
    assert "kms:GenerateDataKey" in line
    assert "no attestation document" in line


def test_a_pinned_statement_is_clean_and_the_emulator_refuses() -> None:
    policy = _looks_gated({"StringEqualsIgnoreCase": {IMAGE: PIN}})
    assert lint_policy(parse_policy(policy)) == ()
    service, arn = _service_with(policy)
    for caller in CALLERS:
        assert not _plaintext_without_recipient(service, arn, caller, "kms:GenerateDataKey", {})


# --- generated policies, against the emulator's KMS service ------------------------------

TPM = "kms:RecipientAttestation:NitroTPMPCR"
SB_OFF = pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex()
_RA_KEYS = [
    IMAGE,
    "kms:RecipientAttestation:PCR0",
    "kms:RecipientAttestation:PCR3",
    f"{TPM}4",
    f"{TPM}7",
    f"{TPM}12",
]
_RA_OPERATORS = [
    "StringEqualsIgnoreCase",
    "StringEqualsIgnoreCaseIfExists",
    "StringEquals",
    "StringLike",
    "StringNotEqualsIgnoreCase",
    "StringNotEqualsIgnoreCaseIfExists",
    "ForAllValues:StringEqualsIgnoreCase",
    "ForAnyValue:StringEqualsIgnoreCase",
    "ForAnyValue:StringNotEqualsIgnoreCase",
]
_STRING_OPERATORS = [
    "StringEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "StringNotEquals",
    "StringNotLike",
    "StringEqualsIfExists",
    "StringNotEqualsIfExists",
    "ForAnyValue:StringEquals",
    "ForAllValues:StringEquals",
]


def _condition(*, nitrotpm: bool = False) -> st.SearchStrategy[tuple[str, str, list[str] | str]]:
    """A condition; with ``nitrotpm``, one on a NitroTPM key three times in four."""
    ra = st.tuples(
        st.sampled_from(_RA_OPERATORS),
        st.sampled_from(_RA_KEYS),
        st.lists(st.sampled_from([PIN, ZERO, PIN.upper(), "*", SB_OFF]), min_size=1, max_size=2),
    )
    null = st.tuples(
        st.just("Null"),
        st.sampled_from([*_RA_KEYS, "kms:EncryptionContext:app", "aws:SourceVpce"]),
        st.sampled_from(["true", "false"]),
    )
    context = st.tuples(
        st.sampled_from(_STRING_OPERATORS),
        st.just("kms:EncryptionContext:app"),
        st.lists(st.sampled_from(["billing", "Billing", "bill*", "payments"]), min_size=1),
    )
    context_keys = st.tuples(
        st.sampled_from(_STRING_OPERATORS),
        st.just("kms:EncryptionContextKeys"),
        st.lists(st.sampled_from(["app", "other", "*"]), min_size=1, max_size=2),
    )
    principal = st.tuples(
        st.sampled_from(["ArnLike", "ArnEquals", "ArnNotLike", "StringEquals", "StringLike"]),
        st.just("aws:PrincipalArn"),
        st.lists(
            st.sampled_from([PARENT, OTHER, ALICE, X_IN_B, "arn:aws:iam::*:role/enclave-parent"]),
            min_size=1,
            max_size=2,
        ),
    )
    account = st.tuples(
        st.sampled_from(["StringEquals", "StringNotEquals", "StringEqualsIfExists"]),
        st.sampled_from(["kms:CallerAccount", "aws:PrincipalAccount"]),
        st.sampled_from([A, B, [A, B]]),
    )
    free = st.tuples(
        st.sampled_from(["StringEquals", "StringNotEquals", "StringEqualsIfExists"]),
        st.just("aws:SourceVpce"),
        st.just("vpce-1"),
    )
    if nitrotpm:
        tpm = st.tuples(
            st.sampled_from(["StringEqualsIgnoreCase"] * 4 + _RA_OPERATORS),
            st.sampled_from([k for k in _RA_KEYS if k.startswith(TPM)]),
            st.lists(
                st.sampled_from([PIN, ZERO, SB_OFF, PIN.upper(), "*"]), min_size=1, max_size=2
            ),
        )
        others = st.one_of(ra, null, context, principal, account)
        return st.one_of(tpm, tpm, tpm, others)
    return st.one_of(ra, null, context, context_keys, principal, account, free)


_PRINCIPALS = [
    {"AWS": PARENT},
    {"AWS": OTHER},
    {"AWS": ALICE},
    {"AWS": X_IN_B},
    {"AWS": A},
    {"AWS": f"arn:aws:iam::{B}:root"},
    {"AWS": [PARENT, ALICE]},
    "*",
    {"AWS": "*"},
]
_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey", "kms:*", "kms:Gen*", "kms:Encrypt", "*"]


@st.composite
def _statement(draw: st.DrawFn, *, nitrotpm: bool = False) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": draw(st.sampled_from(["Allow", "Allow", "Deny"])),
        "Action": draw(st.lists(st.sampled_from(_ACTIONS), min_size=1, max_size=2)),
        "Resource": "*",
    }
    principal = draw(st.sampled_from(_PRINCIPALS))
    statement["NotPrincipal" if draw(st.integers(0, 9)) == 0 else "Principal"] = principal
    conditions: dict[str, dict[str, Any]] = {}
    for operator, key, values in draw(st.lists(_condition(nitrotpm=nitrotpm), max_size=3)):
        conditions.setdefault(operator, {})[key] = values
    if conditions:
        statement["Condition"] = conditions
    return statement


@st.composite
def _policies(draw: st.DrawFn, *, nitrotpm: bool = False) -> dict[str, Any]:
    statements = draw(st.lists(_statement(nitrotpm=nitrotpm), min_size=1, max_size=4))
    return {"Version": "2012-10-17", "Statement": [ADMIN_STATEMENT, *statements]}


@functools.cache
def _trust_root() -> TrustRoot:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SimulatedNsm(pcrs={0: bytes(48)}).trust_root  # no Recipient is ever sent


def _service_with(
    policy: dict[str, Any], trust_root: TrustRoot | None = None
) -> tuple[KmsService, str]:
    service = KmsService(
        region=REGION,
        account_id=A,
        trust_root=trust_root or _trust_root(),
        store=KeyStore(None, region=REGION, account_id=A),
        secure_transport=True,  # aws:SecureTransport is true at real KMS
    )
    admin = _session(ADMIN, A)
    created = service.call(
        "CreateKey",
        {"Policy": json.dumps(policy), "BypassPolicyLockoutSafetyCheck": True},
        admin,
        datetime.now(UTC),
    )
    return service, created["KeyMetadata"]["Arn"]


def _record(service: KmsService, arn: str) -> KeyRecord:
    record = service.store.get_key(arn.rsplit("/", 1)[1])
    assert record is not None
    return record


def _plaintext_without_recipient(
    service: KmsService, arn: str, caller: Caller, action: str, context: dict[str, str]
) -> bool:
    """Whether the emulator hands ``caller`` plaintext for ``action`` with no Recipient."""
    now = datetime.now(UTC)
    try:
        if action == "kms:GenerateDataKey":
            params: dict[str, Any] = {"KeyId": arn, "KeySpec": "AES_256"}
            if context:
                params["EncryptionContext"] = context
            answer = service.call("GenerateDataKey", params, caller, now)
        else:
            record = _record(service, arn)
            blob = _ciphertext.seal(record.material, record.key_id, b"secret", context)
            params = {"CiphertextBlob": blob}
            if context:
                params["EncryptionContext"] = context
            answer = service.call("Decrypt", params, caller, now)
    except ApiError as exc:
        if exc.code != "AccessDeniedException":
            raise
        return False
    return "Plaintext" in answer


def _replayable(witness: Witness) -> bool:
    """Whether the emulator can be sent the witness as a real request."""
    chosen = witness.chosen
    return (
        witness.certain
        and all(key.startswith("kms:encryptioncontext") for key in chosen if chosen[key])
        and not any(key.startswith(UNKNOWN_CONDITION_PREFIX) for key in chosen)
    )


_EXAMPLES = int(os.environ.get("ATTESTED_AGREEMENT_EXAMPLES", "120"))


@settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_policies())
def test_linter_and_emulator_agree_on_decrypt_without_attestation(policy: dict[str, Any]) -> None:
    service, arn = _service_with(policy)
    errors = {
        f.statement
        for f in lint_policy(parse_policy(policy))
        if f.rule == "unconditional-attested-allow"
    }
    # Soundness: whatever the emulator hands out without a Recipient, the linter reports.
    for caller in CALLERS:
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):
            for context in CONTEXTS:
                if _plaintext_without_recipient(service, arn, caller, action, context):
                    assert errors, (caller.arn, action, context)
    # Every witness is real: the evaluator allows it, and the emulator, sent it as a
    # request, hands out the plaintext.
    compiled = compile_policy(parse_policy(policy), strict=False)
    for witness in find_access(compiled, evidence=Evidence.NONE):
        assert witness.statement.label in errors
        if not witness.certain:
            continue
        assert evaluate(compiled, witness.request).allowed, witness
        if _replayable(witness) and witness.action in ("kms:GenerateDataKey", "kms:Decrypt"):
            caller = Caller(
                access_key_id="AKIATEST",
                arn=witness.identity.caller_arn,
                principal_arn=witness.identity.principal_arn,
                account=witness.identity.account,
            )
            context = witness.encryption_context
            assert _plaintext_without_recipient(service, arn, caller, witness.action, context), (
                witness
            )


# --- NitroTPM: instances of other AMIs ------------------------------------------------------

_ACCESS_RULES = frozenset(
    {
        "unconditional-attested-allow",
        "debug-mode-admitted",
        "nitrotpm-other-ami-admitted",
        "nitrotpm-command-line-not-pinned",
    }
)
_OTHER_PCR = {i: pcr.measure(f"someone else's PCR{i}".encode()) for i in range(24)}


class _Instances:
    """Simulated NitroTPM documents under one root, made once per set of PCRs."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.spki = self.key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.documents: dict[tuple[tuple[int, bytes], ...], bytes] = {}
        first = SimulatedNitroTpm(state_dir=state)
        self.trust_root = first.trust_root
        first.close()

    def document(self, changes: dict[int, bytes]) -> bytes:
        key = tuple(sorted(changes.items()))
        if key not in self.documents:
            tpm = SimulatedNitroTpm(pcrs={**DEFAULT_NITROTPM_PCRS, **changes}, state_dir=self.state)
            try:
                self.documents[key] = tpm.get_attestation_document(public_key=self.spki)
            finally:
                tpm.close()
        return self.documents[key]

    def unpinned(self) -> list[bytes]:
        """Instances no policy should admit: of an AMI the policies never pin (booted
        without Secure Boot, or with Secure Boot and keys of their own), and of the
        pinned image (PCR4 ``PIN``) booted without Secure Boot with another command line."""
        return [
            self.document({4: _OTHER_PCR[4], 7: pcr.NITROTPM_PCR7_SECURE_BOOT_OFF, 12: pcr12})
            for pcr12 in (pcr.ZERO, bytes.fromhex(PIN), _OTHER_PCR[12])
        ] + [
            self.document({4: _OTHER_PCR[4], 7: _OTHER_PCR[7], 12: pcr.ZERO}),
            self.document(
                {4: bytes.fromhex(PIN), 7: pcr.NITROTPM_PCR7_SECURE_BOOT_OFF, 12: _OTHER_PCR[12]}
            ),
        ]


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> _Instances:
    return _Instances(tmp_path_factory.mktemp("nitrotpm"))


def _secret_with_document(
    service: KmsService,
    arn: str,
    caller: Caller,
    action: str,
    context: dict[str, str],
    document: bytes,
) -> bool:
    """Whether the emulator hands ``caller`` a secret for a Recipient with ``document``."""
    now = datetime.now(UTC)
    params: dict[str, Any] = {
        "KeyId": arn,
        "Recipient": {
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": document,
        },
    }
    if context:
        params["EncryptionContext"] = context
    try:
        if action == "kms:GenerateDataKey":
            answer = service.call("GenerateDataKey", {**params, "KeySpec": "AES_256"}, caller, now)
        else:
            record = _record(service, arn)
            blob = _ciphertext.seal(record.material, record.key_id, b"secret", context)
            del params["KeyId"]
            answer = service.call("Decrypt", {**params, "CiphertextBlob": blob}, caller, now)
    except ApiError as exc:
        if exc.code != "AccessDeniedException":
            raise
        return False
    assert "Plaintext" not in answer
    return "CiphertextForRecipient" in answer


def _allowing_statement(
    service: KmsService,
    arn: str,
    caller: Caller,
    action: str,
    context: dict[str, str],
    document: bytes,
) -> str | None:
    """The label of the statement that let the emulator answer (its evaluator says which)."""
    now = datetime.now(UTC)
    recipient = service.verify_recipient(
        {
            "Recipient": {
                "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                "AttestationDocument": document,
            }
        },
        now,
    )
    values = {**encryption_context_condition_values(context), **service.recipient_values(recipient)}
    request = service._policy_request(caller, action, arn, values)
    decision = evaluate(_record(service, arn).policy, request)
    assert decision.allowed
    return decision.statement


def _document_for(instances: _Instances, witness: Witness) -> bytes | None:
    """A simulated NitroTPM document with the witness's PCRs, if a real one can have them."""
    changes: dict[int, bytes] = {}
    prefix = "kms:recipientattestation:nitrotpmpcr"
    for key, values in witness.context.items():
        if not key.startswith(prefix):
            continue
        index, value = int(key[len(prefix) :]), values[0]
        if value == "attested-lint-other":
            changes[index] = _OTHER_PCR[index]
        elif (
            len(value) == 96
            and value == value.lower()
            and all(c in "0123456789abcdef" for c in value)
        ):
            changes[index] = bytes.fromhex(value)
        else:
            return None  # a spelling no document has (uppercase)
    return instances.document(changes)


def _tpm_policy(pins: dict[str, str]) -> dict[str, Any]:
    """The usual shape: the parent's role decrypts with these NitroTPM PCRs pinned."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            ADMIN_STATEMENT,
            {
                "Effect": "Allow",
                "Principal": {"AWS": PARENT},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": pins},
            },
        ],
    }


_TPM_EXAMPLES = int(os.environ.get("ATTESTED_AGREEMENT_EXAMPLES", "60"))


@settings(
    max_examples=_TPM_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policy=_policies(nitrotpm=True))
@example(policy=_tpm_policy({f"{TPM}12": ZERO}))
@example(policy=_tpm_policy({f"{TPM}7": SB_OFF}))
@example(policy=_tpm_policy({f"{TPM}4": PIN}))
@example(policy=_tpm_policy({f"{TPM}4": PIN, f"{TPM}7": SB_OFF}))
@example(policy=_tpm_policy({f"{TPM}4": PIN, f"{TPM}12": ZERO}))
def test_linter_and_emulator_agree_on_unpinned_instances(
    instances: _Instances, policy: dict[str, Any]
) -> None:
    service, arn = _service_with(policy, trust_root=instances.trust_root)
    errors = {
        f.statement
        for f in lint_policy(parse_policy(policy))
        if f.severity is Severity.ERROR and f.rule in _ACCESS_RULES
    }
    # Soundness: whatever the emulator hands an instance it should not admit, the linter
    # reports, on the statement that allowed it.
    for caller in CALLERS:
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):
            for context in CONTEXTS[:3]:
                for document in instances.unpinned():
                    if _secret_with_document(service, arn, caller, action, context, document):
                        allowing = _allowing_statement(
                            service, arn, caller, action, context, document
                        )
                        assert allowing in errors, (allowing, caller.arn, action, context)
    # Every "other AMI" witness is real: the emulator, sent a simulated NitroTPM document
    # with the witness's PCRs, hands out the secret.
    compiled = compile_policy(parse_policy(policy), strict=False)
    for witness in find_access(compiled, evidence=Evidence.NITROTPM_ANY_AMI):
        if not witness.certain:
            continue
        assert evaluate(compiled, witness.request).allowed, witness
        if not _replayable(witness) or witness.action not in ("kms:GenerateDataKey", "kms:Decrypt"):
            continue
        replay = _document_for(instances, witness)
        if replay is None:
            continue
        caller = Caller(
            access_key_id="AKIATEST",
            arn=witness.identity.caller_arn,
            principal_arn=witness.identity.principal_arn,
            account=witness.identity.account,
        )
        context = witness.encryption_context
        assert _secret_with_document(service, arn, caller, witness.action, context, replay), witness
