"""The house's layers, checked on the source: what the pure core and production code import.

* The **pure core** (attestation documents, verification, policies, key policies and
  their evaluator) opens no socket, starts no process and loads no native library: it
  imports none of the I/O modules below, and every ``attested`` module it imports is
  pure too (the closure is computed here, so a new import cannot slip one in).
* **Production code** never loads the development-only packages (the KMS emulator, the
  simulated NSM) unless a simulated backend is chosen on purpose.

``nsm/`` has the same kind of test of its own (tests/nsm/test_package.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import attested

PACKAGE = Path(attested.__file__).parent
ROOT = PACKAGE.parent

PURE = {
    "attested",
    "attested._aws",
    "attested._cbor",
    "attested._certs",
    "attested._chain",
    "attested._cose",
    "attested._json",
    "attested.document",
    "attested.errors",
    "attested.limits",
    "attested.nitrotpm._tpm2",
    "attested.pcr",
    "attested.policy",
    "attested.provider",
    "attested.trust",
    "attested.verify",
    "attested.keypolicy",
    "attested.keypolicy._audit",
    "attested.keypolicy._cloudformation",
    "attested.keypolicy._evaluate",
    "attested.keypolicy._generate",
    "attested.keypolicy._iac",
    "attested.keypolicy._keys",
    "attested.keypolicy._lint",
    "attested.keypolicy._marker",
    "attested.keypolicy._measurements",
    "attested.keypolicy._operators",
    "attested.keypolicy._policy",
    "attested.keypolicy._reach",
    "attested.keypolicy._render",
    "attested.keypolicy._sources",
}
IO_MODULES = {
    "asyncio",
    "boto3",
    "botocore",
    "ctypes",
    "http",
    "multiprocessing",
    "nsm",
    "selectors",
    "signal",
    "socket",
    "socketserver",
    "ssl",
    "subprocess",
    "urllib",
}
DEVELOPMENT = ("attested.emulator", "attested.simulator")


def _path(module: str) -> Path:
    parts = module.split(".")
    package = PACKAGE.parent.joinpath(*parts)
    return package / "__init__.py" if package.is_dir() else package.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """Every module ``module`` imports, anywhere in its source (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(_path(module).read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:  # from attested import _json: a module
                candidate = f"{node.module}.{alias.name}"
                if candidate.startswith("attested") and _path(candidate).exists():
                    found.add(candidate)
    return found


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in _imports(module) if m.split(".")[0] == "attested")
    return seen


@pytest.mark.parametrize("module", sorted(PURE))
def test_the_pure_core_does_no_io(module: str) -> None:
    top = {name.split(".")[0] for name in _imports(module)}
    assert top & IO_MODULES == set(), f"{module} imports {sorted(top & IO_MODULES)}"


def test_the_pure_core_imports_only_the_pure_core() -> None:
    assert _closure(PURE) - PURE == set()


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("emulator", "simulator", "cli")
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_production_code_imports_development_code_only_when_chosen(path: Path) -> None:
    """At module level, no production module imports the emulator or the simulator."""
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only; a function may choose the simulator
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            assert not any(n.startswith(DEVELOPMENT) for n in names), (path, names)


def test_loading_the_enclave_side_loads_no_development_code() -> None:
    code = (
        "import sys\n"
        "import attested, attested.enclave, attested.service, attested.kms, attested.relay\n"
        "import attested.parent, attested.keypolicy, attested.eif\n"
        f"bad = [m for m in sys.modules if m.startswith({DEVELOPMENT!r})]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_the_simulated_backend_is_loaded_when_chosen(tmp_path: Path) -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from attested.enclave import open_provider\n"
        "assert 'attested.simulator' not in sys.modules\n"
        "with open_provider('simulated') as provider:\n"
        "    assert provider.backend == 'simulated'\n"
        "print('attested.simulator' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n"
