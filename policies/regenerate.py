"""Regenerate policies/generated/ from policies/manifest.json.

    python policies/regenerate.py      # with the project's environment active (.venv)

Each entry of the manifest is one ``attested keypolicy generate`` run, with paths relative
to this directory. ``tests/keypolicy/test_policies.py`` runs the same entries and compares
the output with the files here byte for byte, so they cannot drift from the generator.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def entries() -> list[dict[str, object]]:
    """The manifest."""
    result: list[dict[str, object]] = json.loads((HERE / "manifest.json").read_text())
    return result


def main() -> int:
    """Write every file of the manifest; return the first failing exit status, else 0."""
    try:
        from attested.cli import main as attested
    except ImportError as exc:  # run with an interpreter that lacks the project
        print(
            f"policies/regenerate.py: {sys.executable} cannot import attested ({exc}).\n"
            "Run it with the project's environment, from the root of the checkout:\n"
            "    ./run attested --version           # creates .venv once\n"
            "    .venv/bin/python policies/regenerate.py\n"
            "or activate it first (. .venv/bin/activate) and run python policies/regenerate.py",
            file=sys.stderr,
        )
        return 3

    os.chdir(HERE)
    for entry in entries():
        args = [str(a) for a in entry["args"]]  # type: ignore[attr-defined]
        status = attested(["keypolicy", "generate", *args, "--output", str(entry["output"])])
        if status != 0:
            print(f"failed: {entry['output']}", file=sys.stderr)
            return status
        print(entry["output"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
