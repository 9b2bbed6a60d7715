"""Read the key policies of a CloudFormation template (JSON or YAML), intrinsics resolved.

YAML is read with PyYAML's safe loader, narrowed to what CloudFormation accepts:

* the short-form intrinsic tags (``!Ref``, ``!Sub``, ``!GetAtt``, ...) become their long
  form (``{"Fn::Sub": ...}``); any other tag is refused;
* aliases and anchors are refused (CloudFormation does not support them, and they are
  how a small file expands into a huge tree);
* duplicate keys are refused (a second ``StringEquals`` block would silently replace the
  first), and dates stay strings (``Version: 2012-10-17``).

Inside a ``KeyPolicy`` the intrinsics a policy usually carries are resolved: ``Ref`` and
``Fn::Sub`` of pseudo parameters (``AWS::AccountId``, ``AWS::Partition``, ...) and of the
template's parameters, ``Fn::GetAtt Role.Arn`` of an IAM role or user of the same
template, ``Fn::Join``. A parameter takes the value given on the command line, else its
``Default`` (reported as an assumption); the account, when not given, is the stand-in
``000000000000``, also reported. Anything else (``Fn::If``, ``Fn::ImportValue``, a
``GetAtt`` of another resource) cannot be resolved offline, and the policy is reported as
not judged, never as clean.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from attested.errors import MalformedError

__all__ = [
    "KEY_TYPES",
    "MAX_TEMPLATE_SIZE",
    "STAND_IN_ACCOUNT",
    "Resolver",
    "Unresolved",
    "load_yaml_template",
]

MAX_TEMPLATE_SIZE = 1024 * 1024
"""Bytes; CloudFormation takes templates up to 1 MB (from S3), 51,200 bytes inline."""
STAND_IN_ACCOUNT = "000000000000"
KEY_TYPES = ("AWS::KMS::Key", "AWS::KMS::ReplicaKey")

_SHORT_TAGS = frozenset(
    {
        "And",
        "Base64",
        "Cidr",
        "Condition",
        "Equals",
        "FindInMap",
        "ForEach",
        "GetAZs",
        "GetAtt",
        "If",
        "ImportValue",
        "Join",
        "Length",
        "Not",
        "Or",
        "Ref",
        "Select",
        "Split",
        "Sub",
        "ToJsonString",
        "Transform",
    }
)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _TemplateLoader(yaml.SafeLoader):
    """A safe loader with CloudFormation's tags, no aliases, no duplicate keys, no dates."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class attribute, replaced
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases are not supported in CloudFormation", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in keys
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a scalar", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r:.60}", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    name = suffix
    if name not in _SHORT_TAGS:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown tag !{name[:40]}", node.start_mark
        )
    value: object
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if name == "Ref":
        return {"Ref": value}
    if name == "Condition":
        return {"Condition": value}
    if name == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{name}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def load_yaml_template(data: bytes) -> object:
    """Decode a YAML CloudFormation template (at most :data:`MAX_TEMPLATE_SIZE` bytes).

    Raises:
        MalformedError: too large, not UTF-8, not YAML, or YAML CloudFormation refuses.
    """
    if len(data) > MAX_TEMPLATE_SIZE:
        raise MalformedError(
            f"template is {len(data)} bytes, more than the limit of {MAX_TEMPLATE_SIZE}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"not UTF-8 (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise MalformedError(f"not valid YAML: {problem}{at}") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise MalformedError(f"not acceptable YAML: {str(exc)[:120]}") from None


class Unresolved(Exception):
    """An intrinsic that cannot be resolved offline; the message says which and where."""


_PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::Region": "us-east-1",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_IAM_TYPES = {"AWS::IAM::Role": "role", "AWS::IAM::User": "user"}


@dataclass
class Resolver:
    """Resolves the intrinsics of one template, recording what it had to assume.

    Attributes:
        template: the decoded template.
        given: values given for parameters and pseudo parameters (``AWS::AccountId``).
        assumptions: what was assumed, one line each (a parameter's default, the
            stand-in account), in the order first needed.
    """

    template: Mapping[str, object]
    given: Mapping[str, str]
    assumptions: list[str] = field(default_factory=list)

    def _assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)

    def _resources(self) -> Mapping[str, object]:
        resources = self.template.get("Resources")
        return resources if isinstance(resources, dict) else {}

    def _parameter(self, name: str, where: str) -> str:
        if name in self.given:
            return self.given[name]
        if name == "AWS::AccountId":
            self._assume(f"AWS::AccountId = {STAND_IN_ACCOUNT} (a stand-in; --parameter sets it)")
            return STAND_IN_ACCOUNT
        if name in _PSEUDO:
            return _PSEUDO[name]
        parameters = self.template.get("Parameters")
        declared = parameters.get(name) if isinstance(parameters, dict) else None
        if isinstance(declared, dict) and isinstance(declared.get("Default"), str | int):
            default = str(declared["Default"])
            self._assume(f"parameter {name} = {default[:100]} (its Default)")
            return default
        raise Unresolved(f"Ref {name!r:.60} at {where} has no value (give --parameter)")

    def _principal_arn(self, logical_id: str, attribute: str, where: str) -> str:
        resource = self._resources().get(logical_id)
        kind = _IAM_TYPES.get(resource.get("Type", "")) if isinstance(resource, dict) else None
        if kind is None or attribute != "Arn":
            raise Unresolved(f"Fn::GetAtt {logical_id}.{attribute} at {where}"[:200])
        properties = resource.get("Properties") if isinstance(resource, dict) else None
        properties = properties if isinstance(properties, dict) else {}
        name_key = "RoleName" if kind == "role" else "UserName"
        try:
            name = self._string(properties.get(name_key, logical_id), f"{where}.{name_key}")
            path = self._string(properties.get("Path", "/"), f"{where}.Path")
        except Unresolved:
            name, path = logical_id, "/"
        account = self._parameter("AWS::AccountId", where)
        partition = self._parameter("AWS::Partition", where)
        return f"arn:{partition}:iam::{account}:{kind}{path}{name}"

    def _ref(self, name: object, where: str) -> str:
        if not isinstance(name, str):
            raise Unresolved(f"Ref at {where} is not a name")
        resource = self._resources().get(name)
        if isinstance(resource, dict) and resource.get("Type") in _IAM_TYPES:
            properties = resource.get("Properties")
            key = "RoleName" if resource.get("Type") == "AWS::IAM::Role" else "UserName"
            if isinstance(properties, dict) and isinstance(properties.get(key), str):
                return str(properties[key])
            return name
        if isinstance(resource, dict):
            raise Unresolved(f"Ref {name!r:.60} (a {str(resource.get('Type'))[:40]}) at {where}")
        return self._parameter(name, where)

    def _sub(self, value: object, where: str) -> str:
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
            text, variables = value
        else:
            text, variables = value, {}
        if not isinstance(text, str):
            raise Unresolved(f"Fn::Sub at {where} is not a string")

        def replace(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return self._string(variables[inner], f"{where}.{inner}")
            if "." in inner and not inner.startswith("AWS::"):
                logical_id, attribute = inner.split(".", 1)
                return self._principal_arn(logical_id, attribute, where)
            return self._ref(inner, where)

        return _SUB_VARIABLE.sub(replace, text)

    def _string(self, value: object, where: str) -> str:
        resolved = self.resolve(value, where)
        if isinstance(resolved, bool) or not isinstance(resolved, str | int | float):
            raise Unresolved(f"the value at {where} is not a string")
        return str(resolved)

    def _join(self, value: object, where: str) -> str:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            raise Unresolved(f"Fn::Join at {where} is not [delimiter, [values]]")
        parts = self.resolve(value[1], where)
        if not isinstance(parts, list):
            raise Unresolved(f"Fn::Join at {where} does not join a list")
        return value[0].join(self._string(part, where) for part in parts)

    def _get_att(self, value: object, where: str) -> str:
        if isinstance(value, str) and "." in value:
            value = value.split(".", 1)
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return self._principal_arn(value[0], value[1], where)
        raise Unresolved(f"Fn::GetAtt at {where}")

    def resolve(self, value: object, where: str) -> object:
        """``value`` with every intrinsic replaced by its value.

        Raises:
            Unresolved: an intrinsic cannot be resolved offline.
        """
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, argument),) = value.items()
                handler = self._handlers().get(key)
                if handler is not None:
                    return handler(argument, where)
                if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                    raise Unresolved(f"{key[:40]} at {where}")
            return {
                k: self.resolve(v, f"{where}.{k}") for k, v in value.items() if not _is_no_value(v)
            }
        if isinstance(value, list):
            return [
                self.resolve(item, f"{where}[{i}]")
                for i, item in enumerate(value)
                if not _is_no_value(item)
            ]
        return value

    def _handlers(self) -> Mapping[str, Callable[[object, str], str]]:
        return {
            "Ref": self._ref,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::GetAtt": self._get_att,
        }


def _is_no_value(value: object) -> bool:
    return value == {"Ref": "AWS::NoValue"}
