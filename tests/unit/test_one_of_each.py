"""One of each: the runtime kit's parts and the policy evaluator have no second copy.

The runtime-kit issue replaced two HTTP servers, four ways of listening, three config
readers, five start/stop shapes and two policy evaluators with one each. These checks
read the source, so a second copy cannot come back unnoticed. (The config reader and the
parallel stop have their own checks: tests/runtime/test_config.py, test_parts.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import attested

PACKAGE = Path(attested.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(PACKAGE.parent)): ast.parse(path.read_text(), str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _importers(*names: str) -> set[str]:
    found = set()
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            else:
                continue
            if any(i == n or i.startswith(n + ".") for i in imported for n in names):
                found.add(path)
    return found


def _callers(method: str) -> set[str]:
    return {
        path
        for path, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
    }


def test_one_http_server() -> None:
    assert _importers("http.server", "socketserver", "h11") == {"attested/_runtime/request.py"}


def test_one_listener_helper() -> None:
    assert _callers("bind") | _callers("listen") == {"attested/_runtime/listen.py"}


def test_one_policy_evaluator() -> None:
    """The emulator decides with the linter's evaluator (attested.keypolicy._evaluate)."""
    defining = {
        path
        for path, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("evaluate", "condition_holds")
    }
    defining.discard("attested/policy.py")  # attestation policies: Policy.evaluate
    assert defining == {"attested/keypolicy/_evaluate.py", "attested/keypolicy/_operators.py"}


def _string_constants(tree: ast.Module) -> list[str]:
    """String literals that are code, not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_one_kms_wire_protocol() -> None:
    """KMS's JSON 1.1 protocol has one home, shared by the emulator and the KMS endpoint.

    attested/kms/_wire.py loads botocore's KMS model, parses requests against it, encodes
    answers and error shapes, and names the target prefix and the content type; no other
    module does any of it (so production code never needs the emulator's copy: ADR 0094).
    """
    wire = "attested/kms/_wire.py"
    # Loading the model, and reading operations' input and output shapes from it.
    assert _callers("get_service_model") == {wire}
    assert _callers("operation_model") == {wire}
    defining = {
        path
        for path, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and node.name in ("encode_response", "model_members", "parse_authorization", "kms_model")
    }
    assert defining == {wire}
    protocol_words = ("TrentService", "x-amz-json-1", "__type", "AWS4-HMAC-SHA256")
    speaking = {
        path
        for path, tree in _modules().items()
        if any(word in text for text in _string_constants(tree) for word in protocol_words)
    }
    assert speaking == {wire}
    assert not (PACKAGE / "emulator" / "_protocol.py").exists()


def test_one_prometheus_exposition() -> None:
    """Metrics are rendered in one place, for the service and the parent alike."""
    rendering = {
        path
        for path, tree in _modules().items()
        if any("# TYPE" in text or "# HELP" in text for text in _string_constants(tree))
    }
    assert rendering == {"attested/_runtime/metrics.py"}
