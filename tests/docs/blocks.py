"""Fenced blocks of the project's Markdown files, as the docs tests see them.

Every fence names what it holds in its info string (see docs/house-rules.md, "Writing
docs"): a language, optionally the kind of configuration it is, and ``excerpt`` for a
block that is deliberately not run::

    ```sh                    run with bash -euo pipefail
    ```console               the ``$ `` lines are run the same way; the rest is output
    ```python                run as a script with the project's interpreter
    ```toml parent-config    parsed, then checked by the loader the kind names
    ```python excerpt        not run: compiled, and every name it uses is defined
    ```text                  output, usage, diagrams: not checked

This module only reads; the tests decide what to do with each block.
"""

from __future__ import annotations

import builtins
import re
import symtable
from dataclasses import dataclass
from pathlib import Path

SHELLS = frozenset({"sh", "bash", "console"})
CONFIGS = frozenset({"toml", "json", "yaml", "ini"})
# Shown, never run by the docs test: no Docker daemon, Terraform, Go or Java toolchain in
# CI. What they show is tested elsewhere where it can be (the JavaScript SDK against the
# KMS endpoint in tests/kms_endpoint; keypolicy generate --format terraform's output).
SHOWN = frozenset({"dockerfile", "go", "hcl", "java", "js"})
LANGUAGES = SHELLS | CONFIGS | SHOWN | {"python", "text"}
# What a configuration block is, and so which loader checks it beyond its syntax.
KINDS = {
    "serve-config": "toml",
    "parent-config": "toml",
    "identities": ("json", "toml"),
    "allowlist": "yaml",
    "key-policy": "json",
    "systemd-unit": "ini",
}
EXCERPT = "excerpt"

ROOT = Path(__file__).resolve().parents[2]
_SKIPPED_DIRS = {".git", ".venv", "build", "dist", "node_modules"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class FenceError(ValueError):
    """A fence that breaks the rules; the message names the file and line."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, what its info string says, and its text."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    kind: str
    excerpt: bool
    text: str

    @property
    def where(self) -> str:
        """``docs/service.md:50``."""
        try:
            name = self.path.relative_to(ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"

    @property
    def runnable(self) -> bool:
        """Run by the docs test (shell and Python blocks that are not excerpts)."""
        return not self.excerpt and (self.language in SHELLS or self.language == "python")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown file of the project (not those of tools and build output)."""
    found = []
    for path in sorted(root.rglob("*.md")):
        parts = path.relative_to(root).parts
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in parts[:-1]):
            continue
        found.append(path)
    return found


def parse_info(info: str, where: str) -> tuple[str, str, bool]:
    """Split an info string into language, kind and the excerpt flag, or raise FenceError."""
    words = info.split()
    if not words:
        raise FenceError(
            f"{where}: a fence without a language; say what the block is "
            f"({', '.join(sorted(LANGUAGES))}; add 'excerpt' if it is not meant to run)"
        )
    language, rest = words[0], words[1:]
    if language not in LANGUAGES:
        raise FenceError(
            f"{where}: unknown fence language {language!r}; use one of "
            f"{', '.join(sorted(LANGUAGES))}"
        )
    excerpt = EXCERPT in rest
    rest = [word for word in rest if word != EXCERPT]
    kind = ""
    if rest:
        kind = rest.pop(0)
        allowed = KINDS.get(kind)
        if allowed is None or language not in allowed:
            fitting = sorted(k for k, langs in KINDS.items() if language in langs)
            raise FenceError(
                f"{where}: {kind!r} is not a kind of {language} block"
                + (f" (known: {', '.join(fitting)})" if fitting else "")
            )
    if rest:
        raise FenceError(f"{where}: unexpected words in the info string: {' '.join(rest)}")
    if excerpt and language == "text":
        raise FenceError(f"{where}: a text block is never run; 'excerpt' says nothing here")
    return language, kind, excerpt


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order; FenceError for a broken fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None or (match["fence"][0] == "`" and "`" in match["info"]):
            index += 1
            continue
        start = index
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{start + 1}"
        language, kind, excerpt = parse_info(match["info"], where)
        fence, indent = match["fence"], len(match["indent"])
        body: list[str] = []
        index += 1
        while True:
            if index == len(lines):
                raise FenceError(f"{where}: the fence is never closed")
            closing = _FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[index]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            index += 1
        index += 1
        found.append(
            Block(
                path=path,
                line=start + 1,
                language=language,
                kind=kind,
                excerpt=excerpt,
                text="\n".join(body) + "\n",
            )
        )
    return found


def console_commands(text: str) -> str:
    """The commands of a console transcript: ``$ `` lines and their ``\\`` continuations."""
    commands: list[str] = []
    continued = False
    for line in text.splitlines():
        if continued:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


def shell_script(block: Block) -> str:
    """What bash runs for a shell block."""
    return console_commands(block.text) if block.language == "console" else block.text


def undefined_names(source: str, filename: str) -> list[str]:
    """Names a Python block uses but never defines, imports or gets from builtins."""
    table = symtable.symtable(source, filename, "exec")
    defined = {
        symbol.get_name()
        for symbol in table.get_symbols()
        if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()
    }
    known = defined | set(dir(builtins))
    missing: set[str] = set()

    def walk(scope: symtable.SymbolTable, top: bool) -> None:
        for symbol in scope.get_symbols():
            name = symbol.get_name()
            if not symbol.is_referenced() or name in known:
                continue
            if top or (symbol.is_global() and not symbol.is_declared_global()):
                missing.add(name)
        for child in scope.get_children():
            walk(child, top=False)

    walk(table, top=True)
    return sorted(missing)
