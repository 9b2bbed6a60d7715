"""Check raw KMS answers against botocore's KMS model.

botocore's parser silently drops members its model does not define, so a test that only
looks at parsed answers cannot see an extra member; these checks read the raw body.
Every boto3 client the emulator tests make (``conftest.client``) runs them on every
answer, so every operation any test calls is checked.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from botocore.model import OperationModel, Shape


def answer_problems(operation: OperationModel, status: int, body: bytes) -> list[str]:
    """What is wrong with a raw answer to ``operation``: [] when it fits the model.

    A success (2xx) is an empty body or a JSON object whose members, at every depth, are
    defined by the output shape, with the JSON type the shape says and, for enums, one of
    its values. An error is a JSON object with a string ``__type`` and a message.
    """
    if not body:
        return [] if 200 <= status < 300 else [f"error {status} with an empty body"]
    try:
        doc = json.loads(body)
    except ValueError:
        return [f"the body is not JSON: {body[:80]!r}"]
    if not 200 <= status < 300:
        if not isinstance(doc, dict) or not isinstance(doc.get("__type"), str):
            return [f"error {status} without __type: {doc!r:.200}"]
        if not isinstance(doc.get("message", doc.get("Message")), str):
            return [f"error {status} without a message: {doc!r:.200}"]
        return []
    shape = operation.output_shape
    if shape is None:  # Smithy: an empty body SHOULD be sent; clients MUST accept {}
        return [] if doc == {} else [f"{operation.name} has no output, yet got {doc!r:.200}"]
    problems: list[str] = []
    _check(shape, doc, operation.name, problems)
    return problems


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {value!r:.80}")
            return
        members = shape.members  # type: ignore[attr-defined]
        for name, item in value.items():
            if name not in members:
                problems.append(f"{path}.{name}: not a member of {shape.name} in the model")
            else:
                _check(members[name], item, f"{path}.{name}", problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array")
            return
        for n, item in enumerate(value):
            _check(shape.member, item, f"{path}[{n}]", problems)  # type: ignore[attr-defined]
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object (map)")
            return
        for key, item in value.items():
            _check(shape.value, item, f"{path}[{key!r}]", problems)  # type: ignore[attr-defined]
    else:
        _check_scalar(shape, value, path, problems)


def _check_scalar(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string")
        elif shape.metadata.get("enum") and value not in shape.metadata["enum"]:
            problems.append(f"{path}: {value!r} is not one of {shape.name}'s values")
    elif kind == "blob":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            problems.append(f"{path}: expected base64 text")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: expected an integer")
    elif kind == "timestamp":
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{path}: expected epoch seconds")
    else:  # pragma: no cover - KMS uses no other types
        problems.append(f"{path}: unexpected model type {kind}")
