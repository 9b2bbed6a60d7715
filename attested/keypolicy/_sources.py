"""Where ``keypolicy lint`` finds key policies: files, plans, states, templates.

The input is a policy file, ``aws kms get-key-policy`` output, a Terraform plan or state
(``terraform show -json``), or a CloudFormation template.

:func:`read_policy_input` tells the kinds apart by their shape and returns one
:class:`PolicySource` per KMS key policy, named by its resource address
(``module.app.aws_kms_key.enclave[0]``, ``Resources.EnclaveKey``). A policy that cannot be
judged (known only after apply, an intrinsic that cannot be resolved, a string that is not
a policy) is a source with a ``problem``, never silently left out.

Terraform: every ``aws_kms_key``, ``aws_kms_key_policy``, ``aws_kms_replica_key``,
``aws_kms_external_key`` and ``aws_kms_replica_external_key`` of ``resource_changes``
(a plan; resources only being destroyed are left out), else of ``planned_values`` or
``values`` (a state), child modules included. Their ``policy`` is the rendered JSON
string, whether written inline, with ``jsonencode`` or by a
``data.aws_iam_policy_document``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from attested import _json
from attested.errors import MalformedError
from attested.keypolicy._cloudformation import (
    KEY_TYPES,
    MAX_TEMPLATE_SIZE,
    Resolver,
    Unresolved,
    load_yaml_template,
)
from attested.keypolicy._marker import enclave_marker
from attested.keypolicy._policy import (
    MAX_POLICY_SIZE,
    PolicyDocument,
    parse_policy,
    parse_policy_json,
)

__all__ = [
    "MAX_INPUT_SIZE",
    "TERRAFORM_TYPES",
    "PolicyInput",
    "PolicySource",
    "read_policy_input",
]

MAX_INPUT_SIZE = 16 * 1024 * 1024
"""Bytes of any input; a Terraform plan of a large configuration runs to megabytes."""
MAX_RESOURCES = 10_000
"""KMS key policies read from one plan or template."""
TERRAFORM_TYPES = (
    "aws_kms_key",
    "aws_kms_key_policy",
    "aws_kms_replica_key",
    "aws_kms_external_key",
    "aws_kms_replica_external_key",
)
_PLAN_DEPTH = 256
_MAX_MODULE_DEPTH = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySource:
    """One key policy found in the input.

    Attributes:
        resource: the resource address (``aws_kms_key.enclave``,
            ``Resources.EnclaveKey``); ``None`` for a policy file.
        resource_type: ``aws_kms_key``, ``AWS::KMS::Key``, ...; ``""`` for a policy file.
        policy: the parsed policy; ``None`` when it cannot be judged.
        problem: why it cannot be judged; ``None`` when ``policy`` is set.
        marker: why the key counts as an enclave key (its policy, a tag), or ``None``.
        assumptions: values assumed to read it (a parameter's default, a stand-in account).
    """

    resource: str | None
    resource_type: str
    policy: PolicyDocument | None
    problem: str | None
    marker: str | None
    assumptions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyInput:
    """What the input was and the key policies in it.

    Attributes:
        kind: ``policy``, ``get-key-policy``, ``terraform plan``, ``terraform state`` or
            ``cloudformation template``.
        sources: the policies, in the input's order.
    """

    kind: str
    sources: tuple[PolicySource, ...]


_NOT_AN_INPUT = (
    "not a policy, 'aws kms get-key-policy' output, Terraform plan or state "
    "('terraform show -json') or CloudFormation template"
)


def read_policy_input(data: bytes, *, parameters: Mapping[str, str] | None = None) -> PolicyInput:
    """Find every key policy in ``data``, whatever kind of input it is.

    Args:
        data: the file's bytes (at most :data:`MAX_INPUT_SIZE`).
        parameters: CloudFormation parameter values (``AWS::AccountId`` included).

    Raises:
        MalformedError: the input is none of the kinds, or a policy file or
            ``get-key-policy`` output is not a valid policy.
    """
    if len(data) > MAX_INPUT_SIZE:
        raise MalformedError(f"input is {len(data)} bytes, more than the limit of {MAX_INPUT_SIZE}")
    try:
        document = _json.loads(data, what="input", max_size=MAX_INPUT_SIZE, max_depth=_PLAN_DEPTH)
    except MalformedError as json_error:
        if data.lstrip()[:1] in (b"{", b"["):  # meant as JSON: its own error says most
            raise MalformedError(f"{_NOT_AN_INPUT}: {json_error}") from None
        try:
            document = load_yaml_template(data)
        except MalformedError as yaml_error:
            raise MalformedError(f"{_NOT_AN_INPUT}: {json_error}; as YAML: {yaml_error}") from None
        if not (isinstance(document, dict) and isinstance(document.get("Resources"), dict)):
            raise MalformedError(f"{_NOT_AN_INPUT}: {json_error}") from None
        return _cloudformation(document, dict(parameters or {}))
    if not isinstance(document, dict):
        raise MalformedError(f"{_NOT_AN_INPUT}: a JSON {type(document).__name__}")
    if "Statement" in document:
        if len(data) > MAX_POLICY_SIZE:
            raise MalformedError(
                f"policy is {len(data)} bytes, more than the limit of {MAX_POLICY_SIZE}"
            )
        return PolicyInput(kind="policy", sources=(_single(parse_policy(document)),))
    if isinstance(document.get("Policy"), str) and set(document) <= {"Policy", "PolicyName"}:
        policy = parse_policy_json(str(document["Policy"]).encode("utf-8"))
        return PolicyInput(kind="get-key-policy", sources=(_single(policy),))
    if isinstance(document.get("format_version"), str) and (
        {"planned_values", "resource_changes", "values", "prior_state"} & set(document)
    ):
        return _terraform(document)
    if isinstance(document.get("Resources"), dict):
        if len(data) > MAX_TEMPLATE_SIZE:
            raise MalformedError(
                f"template is {len(data)} bytes, more than the limit of {MAX_TEMPLATE_SIZE}"
            )
        return _cloudformation(document, dict(parameters or {}))
    raise MalformedError(
        f"{_NOT_AN_INPUT}: a JSON object with {', '.join(sorted(document))[:120] or 'no keys'}"
    )


def _single(policy: PolicyDocument) -> PolicySource:
    return PolicySource(resource=None, resource_type="", policy=policy, problem=None, marker=None)


def _from_text(
    text: object, *, resource: str, resource_type: str, tags: object, unknown: bool
) -> PolicySource:
    tag_map = (
        {k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(tags, dict)
        else {}
    )
    marker = enclave_marker(policy_text=text if isinstance(text, str) else None, tags=tag_map)
    problem: str | None = None
    policy: PolicyDocument | None = None
    if isinstance(text, str) and text.strip():
        try:
            policy = parse_policy_json(text.encode("utf-8"))
        except MalformedError as exc:
            problem = f"its policy is not a valid policy: {exc}"
    elif unknown:
        problem = (
            "its policy is known only after apply (it depends on values unknown at plan "
            "time): lint the key with 'aws kms get-key-policy' once it exists"
        )
    elif resource_type == "aws_kms_key_policy":
        problem = "it has no policy"
    else:
        problem = (
            "it sets no policy: KMS gives the key its default policy (the account root may "
            "do kms:*, which voids attestation conditions) unless an aws_kms_key_policy "
            "replaces it"
        )
    return PolicySource(
        resource=resource,
        resource_type=resource_type,
        policy=policy,
        problem=problem,
        marker=marker,
    )


def _terraform(document: Mapping[str, object]) -> PolicyInput:
    changes = document.get("resource_changes")
    found: list[PolicySource] = []
    if isinstance(changes, list):
        for change in changes:
            source = _from_change(change)
            if source is not None:
                found.append(source)
                _count(found)
        return PolicyInput(kind="terraform plan", sources=tuple(found))
    for name, kind in (("planned_values", "terraform plan"), ("values", "terraform state")):
        values = document.get(name)
        if isinstance(values, dict):
            for resource in _module_resources(values.get("root_module"), 0):
                found.append(_from_values(resource))
                _count(found)
            return PolicyInput(kind=kind, sources=tuple(found))
    return PolicyInput(kind="terraform plan", sources=())


def _count(found: list[PolicySource]) -> None:
    if len(found) > MAX_RESOURCES:
        raise MalformedError(f"more than {MAX_RESOURCES} KMS key policies in one input")


def _address(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedError("a Terraform resource has no address")
    return value[:300]


def _from_change(change: object) -> PolicySource | None:
    if not isinstance(change, dict) or change.get("mode", "managed") != "managed":
        return None
    resource_type = change.get("type")
    if resource_type not in TERRAFORM_TYPES:
        return None
    body = change.get("change")
    if not isinstance(body, dict):
        raise MalformedError(f"{_address(change.get('address'))}: its change is not an object")
    if body.get("actions") == ["delete"]:
        return None
    after = body.get("after")
    after = after if isinstance(after, dict) else {}
    unknown = body.get("after_unknown")
    policy_unknown = isinstance(unknown, dict) and unknown.get("policy") is True
    return _from_text(
        after.get("policy"),
        resource=_address(change.get("address")),
        resource_type=str(resource_type),
        tags=after.get("tags_all") or after.get("tags"),
        unknown=policy_unknown,
    )


def _module_resources(module: object, depth: int) -> Iterator[Mapping[str, object]]:
    if not isinstance(module, dict):
        return
    if depth > _MAX_MODULE_DEPTH:
        raise MalformedError(f"modules nested deeper than {_MAX_MODULE_DEPTH}")
    resources = module.get("resources")
    for resource in resources if isinstance(resources, list) else ():
        if (
            isinstance(resource, dict)
            and resource.get("mode", "managed") == "managed"
            and resource.get("type") in TERRAFORM_TYPES
        ):
            yield resource
    children = module.get("child_modules")
    for child in children if isinstance(children, list) else ():
        yield from _module_resources(child, depth + 1)


def _from_values(resource: Mapping[str, object]) -> PolicySource:
    values = resource.get("values")
    values = values if isinstance(values, dict) else {}
    return _from_text(
        values.get("policy"),
        resource=_address(resource.get("address")),
        resource_type=str(resource.get("type")),
        tags=values.get("tags_all") or values.get("tags"),
        unknown="policy" not in values,
    )


def _cloudformation(template: Mapping[str, object], parameters: dict[str, str]) -> PolicyInput:
    resources = template.get("Resources")
    found: list[PolicySource] = []
    for logical_id, resource in resources.items() if isinstance(resources, dict) else ():
        if not isinstance(resource, dict) or resource.get("Type") not in KEY_TYPES:
            continue
        found.append(_template_key(template, str(logical_id)[:255], resource, parameters))
        _count(found)
    return PolicyInput(kind="cloudformation template", sources=tuple(found))


def _template_key(
    template: Mapping[str, object],
    logical_id: str,
    resource: Mapping[str, object],
    parameters: Mapping[str, str],
) -> PolicySource:
    address = f"Resources.{logical_id}"
    properties = resource.get("Properties")
    properties = properties if isinstance(properties, dict) else {}
    resolver = Resolver(template=template, given=parameters)
    tags = {}
    raw_tags = properties.get("Tags")
    for tag in raw_tags if isinstance(raw_tags, list) else ():
        if isinstance(tag, dict) and isinstance(tag.get("Key"), str):
            try:
                tags[str(tag["Key"])] = str(resolver.resolve(tag.get("Value"), address))
            except Unresolved:
                continue
    raw = properties.get("KeyPolicy")
    text = raw if isinstance(raw, str) else _json_text(raw)
    marker = enclave_marker(policy_text=text, tags=tags)
    policy: PolicyDocument | None = None
    problem: str | None = None
    try:
        if raw is None:
            problem = (
                "it has no KeyPolicy: KMS gives the key its default policy (the account "
                "root may do kms:*, which voids attestation conditions)"
            )
        else:
            where = f"{address}.Properties.KeyPolicy"
            decoded = (
                _json.loads(raw.encode(), what="KeyPolicy", max_size=MAX_POLICY_SIZE, max_depth=16)
                if isinstance(raw, str)
                else raw
            )
            policy = parse_policy(resolver.resolve(_string_keys(decoded, where), where))
    except Unresolved as exc:
        problem = f"its KeyPolicy uses an intrinsic that cannot be resolved offline: {exc}"
    except MalformedError as exc:
        problem = f"its KeyPolicy is not a valid policy: {exc}"
    return PolicySource(
        resource=address,
        resource_type=str(resource.get("Type")),
        policy=policy,
        problem=problem,
        marker=marker,
        assumptions=tuple(resolver.assumptions),
    )


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        return None


def _string_keys(value: object, where: str) -> object:
    """``value``, refusing mapping keys that are not strings (YAML allows them)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise MalformedError(f"{where} has a key that is not a string")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value
