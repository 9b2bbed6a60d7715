"""The nsm package's boundaries: stdlib only, ctypes in one module, nothing loaded on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import nsm

PACKAGE = Path(nsm.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_the_standard_library_and_nsm_itself(path) -> None:
    foreign = {
        name
        for name in _imports(path)
        if name not in sys.stdlib_module_names and name not in {"nsm", "__future__"}
    }
    assert foreign == set()


def test_ctypes_is_imported_by_lib_only() -> None:
    users = {path.name for path in MODULES if "ctypes" in _imports(path)}
    assert users == {"_lib.py"}


def test_import_needs_neither_attested_nor_libnsm() -> None:
    code = (
        "import sys, nsm, nsm._lib\n"
        "assert not any(m == 'attested' or m.startswith('attested.') for m in sys.modules)\n"
        "assert nsm._lib._loaded == {}\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_all_is_sorted_and_defined(path) -> None:
    name = "nsm" if path.stem == "__init__" else f"nsm.{path.stem}"
    module = __import__(name, fromlist=["__all__"])
    assert module.__all__ == sorted(module.__all__)
    assert all(hasattr(module, item) for item in module.__all__)


def test_results_are_frozen() -> None:
    info = nsm.PcrInfo(index=1, locked=True, value=b"\x00" * 48)
    with pytest.raises(AttributeError):
        info.locked = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        nsm.PcrInfo(1, True, b"")  # type: ignore[call-arg]  # keyword-only


def test_error_for_code_refuses_success() -> None:
    with pytest.raises(ValueError, match="SUCCESS"):
        nsm.errors.error_for_code(nsm.ErrorCode.SUCCESS, "x")
