"""Who can reach a key's secrets without the enclave: the question the linter asks. Pure.

For a policy and a kind of evidence (no attestation document, a debug-mode enclave's
document, a document of the pinned enclave image, or an EC2 instance's NitroTPM document:
of the pinned AMI, of the pinned AMI booted with a kernel command line of someone
else's, or of any AMI), this searches for a request that
:func:`attested.keypolicy._evaluate.evaluate` allows: an identity, an operation, a
resource and a request context. A request found is a **witness**: it can be replayed
against the evaluator, or against the KMS emulator, which decides with the same code.

Identities tried: every principal the policy names (a role through one of its STS
sessions, a user as itself, an account root as "any identity of that account", which is
where KMS hands over to IAM), and an outsider in an account the policy does not name.
Of an identity policy, the identity it is attached to.

The request context is what a caller can choose or cannot be sure of:

* ``kms:RecipientAttestation:*`` keys come from the evidence only, and of its kind only:
  an enclave document gives ``ImageSha384`` and ``PCR<n>``, a NitroTPM document
  ``NitroTPMPCR<n>`` (every one of the 24), as KMS does
  (:func:`~attested.keypolicy._evaluate.recipient_condition_values`);
* ``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``kms:CallerAccount`` come from the
  identity; ``aws:SecureTransport`` is ``true`` (KMS is HTTPS only);
* ``kms:EncryptionContext:*`` and ``kms:EncryptionContextKeys`` come from one encryption
  context the caller picks (for the operations that take one);
* every other key (``aws:SourceVpce``, ``aws:PrincipalOrgID``, ``aws:PrincipalTag/...``,
  ``kms:ViaService``, ...) may hold any value or be absent, except that an outsider is in
  no organization of yours. A condition the linter cannot read (an invalid operator) may
  hold or not.

Candidate values for a key are the policy's own values for it (wildcards filled in, case
changed, numbers and dates moved by one), a value that matches none of them, and
absence. The search is a backtracking one over those candidates with pruning; it stops at
:data:`MAX_STEPS` per question and then answers "reachable" (never a false "clean").
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from attested import pcr
from attested._aws import ACCOUNT_ID, PRINCIPAL_ARN, ROOT_ARN
from attested.keypolicy._evaluate import (
    UNKNOWN_CONDITION_PREFIX,
    CompiledCondition,
    CompiledStatement,
    KeyPolicy,
    PolicyRequest,
    applies,
    condition_met,
    encryption_context_condition_values,
    names_caller,
)
from attested.keypolicy._keys import KeyKind, parse_key
from attested.keypolicy._operators import Family

__all__ = ["MAX_STEPS", "SECRET_OPERATIONS", "Evidence", "Identity", "Witness", "find_access"]

SECRET_OPERATIONS = (
    "kms:Decrypt",
    "kms:DeriveSharedSecret",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
)
"""The attested operations that hand out a secret of the key (GenerateRandom uses none)."""

MAX_STEPS = 20_000
"""Candidate contexts tried per (statement, identity, operation) before giving up."""

_WITH_CONTEXT = frozenset({"kms:decrypt", "kms:generatedatakey", "kms:generatedatakeypair"})
_RA = "kms:recipientattestation:"
_EC = "kms:encryptioncontext:"
_EC_KEYS = "kms:encryptioncontextkeys"
_IDENTITY_KEYS = frozenset({"aws:principalarn", "aws:principalaccount", "kms:calleraccount"})
_ORG_KEYS = frozenset({"aws:principalorgid", "aws:principalorgpaths"})
_FIXED = {"aws:securetransport": ("true",)}
_OTHER = "attested-lint-other"
_ZERO = "0" * 96


class Evidence(enum.Enum):
    """What the caller presents as its ``Recipient``."""

    NONE = "no attestation document"
    DEBUG = "the document of a debug-mode enclave (all-zero PCR0, 1, 2 and 8)"
    PINNED = "a document of the pinned image"
    NITROTPM_PINNED = "the NitroTPM document of an instance of the pinned AMI"
    NITROTPM_COMMAND_LINE = (
        "the NitroTPM document of an instance of the pinned image booted without Secure Boot "
        "with a kernel command line of someone else's (GHSA-xrv8-2pf5-f3q7)"
    )
    NITROTPM_ANY_AMI = (
        "the NitroTPM document of an instance booted without Secure Boot from an AMI of "
        "someone else's"
    )

    @property
    def nitrotpm(self) -> bool:
        """Whether the evidence is an EC2 instance's NitroTPM document."""
        return self in _NITROTPM_EVIDENCE


_NITROTPM_EVIDENCE = frozenset(
    {Evidence.NITROTPM_PINNED, Evidence.NITROTPM_COMMAND_LINE, Evidence.NITROTPM_ANY_AMI}
)
_SECURE_BOOT_OFF = pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A caller to try.

    Attributes:
        caller_arn: the ARN the request is signed as.
        principal_arn: ``aws:PrincipalArn``.
        account: the caller's account.
        name: how a message names it.
        outsider: in an account the policy does not name (and in none of your
            organizations).
        anyone_in_account: stands for every identity of its account (an account root).
    """

    caller_arn: str
    principal_arn: str
    account: str
    name: str
    outsider: bool = False
    anyone_in_account: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Witness:
    """A request the policy allows.

    Attributes:
        identity: who asks.
        action: the operation.
        resource: the key ARN asked for.
        context: the full request context (lowercased keys), including the keys named
            :data:`~attested.keypolicy._evaluate.UNKNOWN_CONDITION_PREFIX` that stand for
            conditions with invalid operators.
        statement: the Allow statement that allows it.
        evidence: what the caller presented.
        certain: ``False`` if the search stopped at :data:`MAX_STEPS` without an answer
            and the access is assumed (conservatively), not found.
    """

    identity: Identity
    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(repr=False)
    statement: CompiledStatement
    evidence: Evidence
    certain: bool = True

    @property
    def request(self) -> PolicyRequest:
        """The request, ready for :func:`~attested.keypolicy._evaluate.evaluate`."""
        return PolicyRequest(
            caller_arn=self.identity.caller_arn,
            principal_arn=self.identity.principal_arn,
            account=self.identity.account,
            action=self.action,
            resource=self.resource,
            context=self.context,
        )

    @property
    def encryption_context(self) -> dict[str, str]:
        """The encryption context the witness uses (empty if none)."""
        return dict(self._ec_pairs())

    def _ec_pairs(self) -> Iterator[tuple[str, str]]:
        names = self.context.get(_EC_KEYS, ())
        for name in names:
            values = self.context.get(_EC + name.lower(), ())
            if values:
                yield name, values[0]

    @property
    def chosen(self) -> dict[str, tuple[str, ...]]:
        """The context keys the caller chose or assumed (not identity, not fixed)."""
        return {
            k: v
            for k, v in self.context.items()
            if k not in _IDENTITY_KEYS and k not in _FIXED and not k.startswith(_RA)
        }


# --- identities ----------------------------------------------------------------------


def _arns_in(policy: KeyPolicy) -> Iterator[str]:
    for statement in policy.statements:
        yield from statement.principals or ()
        for condition in statement.conditions:
            if condition.key == "aws:principalarn":
                yield from (_fill(v) for v in condition.values)


def _accounts_in(policy: KeyPolicy) -> set[str]:
    accounts: set[str] = set()
    for arn in _arns_in(policy):
        match = PRINCIPAL_ARN.fullmatch(arn)
        if match:
            accounts.add(match.group(3))
    for statement in policy.statements:
        for condition in statement.conditions:
            if condition.key in ("aws:principalaccount", "kms:calleraccount"):
                accounts.update(v for v in condition.values if ACCOUNT_ID.fullmatch(v))
    return accounts


def _identity_for(arn: str) -> Identity | None:
    """The caller a principal ARN stands for (a role through one of its sessions)."""
    match = PRINCIPAL_ARN.fullmatch(arn)
    if match is None or ROOT_ARN.fullmatch(arn):
        return None
    partition, service, account, rest = match.groups()
    if service == "iam" and rest.startswith("role/"):
        name = rest.rsplit("/", 1)[1]
        return Identity(
            caller_arn=f"arn:{partition}:sts::{account}:assumed-role/{name}/lint",
            principal_arn=arn,
            account=account,
            name=arn,
        )
    if service == "sts" and rest.startswith("assumed-role/") and rest.count("/") >= 2:
        name = rest.split("/")[1]
        return Identity(
            caller_arn=arn,
            principal_arn=f"arn:{partition}:iam::{account}:role/{name}",
            account=account,
            name=arn,
        )
    return Identity(caller_arn=arn, principal_arn=arn, account=account, name=arn)


def _outsider_account(named: set[str]) -> str:
    for number in range(999_999_999_999, 0, -1):
        account = f"{number:012d}"
        if account not in named:
            return account
    raise AssertionError("every account is named")  # pragma: no cover


def identities(policy: KeyPolicy) -> list[Identity]:
    """The identities to try against ``policy``: named ones, then stand-ins per account.

    Every account the policy mentions (in a principal or an account condition) and one
    outsider account get stand-ins: a role session and a user with made-up names, and
    every role or user name the policy mentions (``arn:aws:iam::*:role/x`` patterns too).
    """
    if policy.identity_policy:
        return [
            Identity(
                caller_arn="arn:aws:sts::000000000000:assumed-role/attested-lint-identity/lint",
                principal_arn="arn:aws:iam::000000000000:role/attested-lint-identity",
                account="000000000000",
                name="the identity this policy is attached to",
            )
        ]
    found: dict[str, Identity] = {}
    paths = {"role/attested-lint-any-identity": None, "user/attested-lint-any-identity": None}
    roots: set[str] = set()
    for arn in _arns_in(policy):
        tail = re.search(r":((?:role|user)/[^:*?]+)$", arn)
        if tail:
            paths[tail.group(1)] = None
        root = ROOT_ARN.fullmatch(arn)
        if root is not None:
            roots.add(root.group(2))
            continue
        named = _identity_for(arn)
        if named is not None:
            found.setdefault(named.caller_arn, named)
    accounts = _accounts_in(policy)
    outsider = _outsider_account(accounts)
    for account in [*sorted(accounts), outsider]:
        if account == outsider:
            name = f"any principal of another AWS account (e.g. account {outsider})"
        elif account in roots:
            name = f"any identity of account {account} that its IAM policies allow"
        else:
            name = f"any principal of account {account}"
        for path in paths:
            stand_in = _identity_for(f"arn:aws:iam::{account}:{path}")
            if stand_in is not None and stand_in.caller_arn not in found:
                found[stand_in.caller_arn] = replace(
                    stand_in,
                    name=name,
                    outsider=account == outsider,
                    anyone_in_account=account in roots,
                )
    return list(found.values())


# --- candidate values ----------------------------------------------------------------


def _fill(pattern: str) -> str:
    return pattern.replace("*", "").replace("?", "x")


def _variants(condition: CompiledCondition) -> Iterator[str]:
    family = condition.operator.family
    for value in condition.values:
        yield value
        if family in (Family.STRING, Family.ARN):
            filled = _fill(value)
            yield filled
            yield filled.swapcase()
            if family is Family.ARN and ":" in value:
                parts = filled.split(":", 5)
                if len(parts) == 6:
                    yield ":".join([*parts[:4], "999999999999", parts[5]])
        elif family is Family.NUMERIC:
            try:
                number = Decimal(value)
            except (InvalidOperation, ValueError):
                continue
            yield str(number + 1)
            yield str(number - 1)
        elif family is Family.BOOL:
            yield "true"
            yield "false"
        elif family is Family.IP:
            yield value.split("/")[0]
            yield "198.51.100.77"
        elif family is Family.DATE:
            yield "1970-01-01T00:00:00Z"
            yield "2999-01-01T00:00:00Z"


def _domain(conditions: Iterable[CompiledCondition], *, absent: bool) -> tuple[str | None, ...]:
    values: dict[str | None, None] = {}
    if absent:
        values[None] = None
    for condition in conditions:
        if condition.key.startswith(UNKNOWN_CONDITION_PREFIX):
            values["true"] = None
            continue
        for value in _variants(condition):
            values[value] = None
    values[_OTHER] = None
    return tuple(values)


# --- the search ----------------------------------------------------------------------


@dataclass(slots=True)
class _Variable:
    """One thing the search chooses, and how a choice becomes context keys."""

    name: str
    domain: tuple[object, ...]


@dataclass(slots=True)
class _Shared:
    """What every question about one policy and one kind of evidence shares."""

    policy: KeyPolicy
    evidence: Evidence
    every: dict[str, list[CompiledCondition]]
    documents: tuple[object, ...]
    ec_names: list[str]

    @classmethod
    def build(cls, policy: KeyPolicy, evidence: Evidence) -> _Shared:
        every: dict[str, list[CompiledCondition]] = {}
        for statement in policy.statements:
            for condition in statement.conditions:
                every.setdefault(condition.key, []).append(condition)
        return cls(policy, evidence, every, _documents(policy, evidence), _ec_names(policy))


@dataclass(slots=True)
class _Problem:
    identity: Identity
    action: str
    resource: str
    allow: CompiledStatement
    denies: list[CompiledStatement]
    shared: _Shared

    @property
    def policy(self) -> KeyPolicy:
        return self.shared.policy


def _base_context(identity: Identity, identity_policy: bool) -> dict[str, tuple[str, ...]]:
    context: dict[str, tuple[str, ...]] = dict(_FIXED)
    if not identity_policy:
        context["aws:principalarn"] = (identity.principal_arn,)
        context["aws:principalaccount"] = (identity.account,)
        context["kms:calleraccount"] = (identity.account,)
    return context


def _ec_names(policy: KeyPolicy) -> list[str]:
    names: dict[str, None] = {}
    for statement in policy.statements:
        for condition in statement.source.conditions:
            lower = condition.key.lower()
            if lower.startswith(_EC):
                names[condition.key[len(_EC) :]] = None
            elif lower == _EC_KEYS:
                for value in condition.values:
                    names[_fill(value)] = None
    names["attested-lint-key"] = None
    return list(names)


def _documents(policy: KeyPolicy, evidence: Evidence) -> tuple[dict[str, tuple[str, ...]], ...]:
    """The attestation condition values the evidence can give, one dict per document."""
    if evidence is Evidence.NONE:
        return ({},)
    by_key: dict[str, dict[str, None]] = {}
    for statement in policy.statements:
        for condition in statement.conditions:
            parsed = parse_key(condition.key) if condition.key.startswith(_RA) else None
            if parsed is None or parsed.kind is KeyKind.UNKNOWN:
                continue  # no document has such a key
            if parsed.kind is KeyKind.IMAGE:
                name = "pcr0"
            elif parsed.kind is KeyKind.NITROTPM_PCR:
                name = f"{_TPM}{parsed.index}"  # one spelling per PCR
            else:
                name = f"pcr{parsed.index}"
            slot = by_key.setdefault(name, {})
            for value in condition.values:
                slot[value.lower()] = None
                slot[value] = None
    enclave = {k: v for k, v in by_key.items() if not k.startswith(_TPM)}
    tpm = {k: v for k, v in by_key.items() if k.startswith(_TPM)}
    fixed: dict[str, str] = {}
    if evidence is Evidence.DEBUG:
        fixed = {f"pcr{i}": _ZERO for i in range(16) if i not in (3, 4)}
        varying = {k: [*v, _OTHER] for k, v in enclave.items() if k in ("pcr3", "pcr4")}
        for k in ("pcr3", "pcr4"):
            varying.setdefault(k, [_OTHER])
    elif evidence is Evidence.PINNED:  # pinned values; PCRs the policy does not name do not matter
        varying = {k: [*v, _OTHER] for k, v in enclave.items()}
    else:
        varying = _tpm_pcrs(tpm, evidence)
    documents: list[dict[str, tuple[str, ...]]] = []
    keys = sorted(varying)
    for combination in itertools.islice(itertools.product(*(varying[k] for k in keys)), MAX_STEPS):
        pcrs = dict(fixed) | dict(zip(keys, combination, strict=True))
        context: dict[str, tuple[str, ...]] = {f"{_RA}{k}": (v,) for k, v in pcrs.items()}
        if "pcr0" in pcrs:
            context[f"{_RA}imagesha384"] = (pcrs["pcr0"],)
        documents.append(context)
    return tuple(documents)


_TPM = "nitrotpmpcr"
_TPM_IMAGE = f"{_TPM}4"  # the boot images: only the pinned AMI has its value
_TPM_COMMAND_LINE = f"{_TPM}12"  # the kernel command line when it is not the UKI's own
_TPM_SECURE_BOOT = f"{_TPM}7"  # the Secure Boot policy: only your db key signs for its value


def _tpm_pcrs(values: Mapping[str, dict[str, None]], evidence: Evidence) -> dict[str, list[str]]:
    """The NitroTPM PCR values a document of ``evidence`` can have, per PCR the policy names.

    A NitroTPM document carries all 24 PCRs, so every PCR the policy names is present.
    Whoever launches an instance controls what the OS extends (PCR8 and up) and picks the
    instance type (the firmware PCRs 0-3, 5, 6), so those take the policy's values or
    another. What the firmware measures before the OS runs cannot be chosen:

    * ``NITROTPM_PINNED``: every PCR may take the policy's values (or another);
    * ``NITROTPM_COMMAND_LINE``: the pinned image (PCR4 any pinned value), Secure Boot off
      (PCR7 the Secure-Boot-off constant: with Secure Boot on the stub refuses an outside
      command line), and a command line that is not the pinned one (PCR12 another value);
    * ``NITROTPM_ANY_AMI``: another image (PCR4 another value), Secure Boot off or with
      the caller's own keys (PCR7 the constant or another value), everything else free.
    """
    varying = {k: [*v, _OTHER] for k, v in values.items()}
    if evidence is Evidence.NITROTPM_COMMAND_LINE:
        if values.get(_TPM_IMAGE):
            varying[_TPM_IMAGE] = list(values[_TPM_IMAGE])
        varying[_TPM_SECURE_BOOT] = [_SECURE_BOOT_OFF]
        varying[_TPM_COMMAND_LINE] = [_OTHER]
    elif evidence is Evidence.NITROTPM_ANY_AMI:
        varying[_TPM_IMAGE] = [_OTHER]
        varying[_TPM_SECURE_BOOT] = [_SECURE_BOOT_OFF, _OTHER]
    return varying


def _variables(problem: _Problem) -> list[_Variable]:
    statements = [problem.allow, *problem.denies]
    keys: dict[str, list[CompiledCondition]] = {}
    for statement in statements:
        for condition in statement.conditions:
            keys.setdefault(condition.key, []).append(condition)
    shared = problem.shared
    every = shared.every  # values of a key come from every statement that names it
    variables: list[_Variable] = []
    if any(k.startswith(_RA) for k in keys):
        variables.append(_Variable("document", shared.documents))
    if problem.action.lower() in _WITH_CONTEXT and any(
        k.startswith(_EC) or k == _EC_KEYS for k in keys
    ):
        for name in shared.ec_names:
            conditions = every.get(_EC + name.lower(), [])
            variables.append(_Variable(f"ec:{name}", _domain(conditions, absent=True)))
    identity_policy = problem.policy.identity_policy
    for key in keys:
        if key.startswith((_RA, _EC)) or key == _EC_KEYS or key in _FIXED:
            continue
        if key in _IDENTITY_KEYS and not identity_policy:
            continue
        if key in _ORG_KEYS and problem.identity.outsider:
            variables.append(_Variable(key, (None, _OTHER)))
            continue
        variables.append(_Variable(key, _domain(every[key], absent=True)))
    return variables


def _context(
    base: Mapping[str, tuple[str, ...]], assignment: Mapping[str, object]
) -> dict[str, tuple[str, ...]]:
    context = dict(base)
    ec: dict[str, str] = {}
    for name, value in assignment.items():
        if value is None:
            continue
        if name == "document":
            assert isinstance(value, dict)  # noqa: S101 - built by _documents
            context.update(value)
        elif name.startswith("ec:"):
            ec[name[3:]] = str(value)
        else:
            context[name] = (str(value),)
    context.update(encryption_context_condition_values(ec))
    return context


def _deps(condition: CompiledCondition) -> str:
    """The variable a condition depends on, ``"*ec"`` for all of the encryption context."""
    key = condition.key
    if key.startswith(_RA):
        return "document"
    if key == _EC_KEYS:
        return "*ec"
    if key.startswith(_EC):
        return "*ec"  # several spellings of one name may share the key
    return key


def _decidable(condition: CompiledCondition, assigned: set[str], ec_total: int) -> bool:
    dep = _deps(condition)
    if dep == "*ec":
        return sum(1 for a in assigned if a.startswith("ec:")) == ec_total
    return dep in assigned or dep in _FIXED


def _solve(
    problem: _Problem, base: dict[str, tuple[str, ...]]
) -> tuple[dict[str, object] | None, bool]:
    """A satisfying assignment or ``None``, and whether the answer is certain.

    At the step cap the answer is ``({}, False)``: assume reachable.
    """
    variables = _variables(problem)
    ec_total = sum(1 for v in variables if v.name.startswith("ec:"))
    names = {v.name for v in variables}
    allow = problem.allow.conditions
    steps = 0

    def consistent(assignment: dict[str, object]) -> bool:
        assigned = set(assignment) | (set(_IDENTITY_KEYS) - names)
        context = _context(base, assignment)
        for condition in allow:
            if _decidable(condition, assigned, ec_total) and not condition_met(condition, context):
                return False
        for deny in problem.denies:
            if all(_decidable(c, assigned, ec_total) for c in deny.conditions) and all(
                condition_met(c, context) for c in deny.conditions
            ):
                return False
        return True

    def search(index: int, assignment: dict[str, object]) -> dict[str, object] | None:
        nonlocal steps
        steps += 1
        if steps > MAX_STEPS:
            raise _Exhausted
        if not consistent(assignment):
            return None
        if index == len(variables):
            return dict(assignment)
        variable = variables[index]
        for value in variable.domain:
            assignment[variable.name] = value
            found = search(index + 1, assignment)
            if found is not None:
                return found
            del assignment[variable.name]
        return None

    try:
        return search(0, {}), True
    except _Exhausted:
        return {}, False


class _Exhausted(Exception):
    pass


def _resources(policy: KeyPolicy, account: str) -> list[str]:
    found = {f"arn:aws:kms:us-east-1:{account}:key/attested-lint-key": None}
    for statement in policy.statements:
        for resource in statement.source.resources:
            if resource != "*" and resource.startswith("arn:"):
                found[_fill(resource)] = None
    return list(found)


def find_access(
    policy: KeyPolicy,
    *,
    evidence: Evidence,
    actions: Sequence[str] = SECRET_OPERATIONS,
    who: Iterable[Identity] | None = None,
) -> list[Witness]:
    """Every Allow statement that lets some identity run one of ``actions``.

    Args:
        policy: a compiled policy (leniently compiled is fine).
        evidence: what the caller presents as its Recipient.
        actions: the operations to ask about.
        who: the identities to try; default :func:`identities`.

    Returns:
        One witness per (statement, identity, action) found, in statement order.
    """
    people = list(who) if who is not None else identities(policy)
    witnesses: list[Witness] = []
    shared = _Shared.build(policy, evidence)
    denies = [s for s in policy.statements if s.effect == "Deny"]
    for statement in policy.statements:
        if statement.effect != "Allow":
            continue
        for identity in people:
            if not _names(statement, identity):
                continue
            base = _base_context(identity, policy.identity_policy)
            witness = _first_witness(shared, statement, denies, identity, actions, base)
            witnesses.extend(witness)
    return witnesses


def _names(statement: CompiledStatement, identity: Identity) -> bool:
    """Whether the statement's principal can match the identity (any action, any key)."""
    probe = PolicyRequest(
        caller_arn=identity.caller_arn,
        principal_arn=identity.principal_arn,
        account=identity.account,
        action="*",
        resource="*",
    )
    return names_caller(statement, probe)


def _first_witness(
    shared: _Shared,
    statement: CompiledStatement,
    denies: list[CompiledStatement],
    identity: Identity,
    actions: Sequence[str],
    base: dict[str, tuple[str, ...]],
) -> list[Witness]:
    found: list[Witness] = []
    for action in actions:
        for resource in _resources(shared.policy, identity.account):
            request = PolicyRequest(
                caller_arn=identity.caller_arn,
                principal_arn=identity.principal_arn,
                account=identity.account,
                action=action,
                resource=resource,
            )
            if not applies(statement, request):
                continue
            problem = _Problem(
                identity,
                action,
                resource,
                statement,
                [d for d in denies if applies(d, request)],
                shared,
            )
            assignment, certain = _solve(problem, base)
            if assignment is not None:
                found.append(
                    Witness(
                        identity=identity,
                        action=action,
                        resource=resource,
                        context=_context(base, assignment),
                        statement=statement,
                        evidence=shared.evidence,
                        certain=certain,
                    )
                )
                break
    return found
