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
