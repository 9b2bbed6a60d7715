"""Checks of blocks that are not run: configuration examples and excerpts."""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import shlex
import subprocess
import tempfile
import tomllib
from pathlib import Path

import yaml

from tests.docs.blocks import Block, shell_script, undefined_names


def check_python(block: Block) -> list[str]:
    """It compiles, and every name it uses comes from somewhere a reader can see."""
    try:
        compile(block.text, block.where, "exec")
    except SyntaxError as exc:
        return [f"{block.where}: not valid Python (block line {exc.lineno}): {exc.msg}"]
    missing = undefined_names(block.text, block.where)
    if missing:
        return [
            f"{block.where}: uses {', '.join(missing)} without defining or importing "
            "it; a reader cannot tell where it comes from"
        ]
    return []


def check_shell(block: Block) -> list[str]:
    """``bash -n``: the commands at least parse; and every ``attested`` command line does."""
    script = shell_script(block)
    result = subprocess.run(
        ["bash", "-n"], input=script.encode(), capture_output=True, timeout=30, check=False
    )
    if result.returncode != 0:
        return [f"{block.where}: not valid bash: {result.stderr.decode(errors='replace')}"]
    return [
        f"{block.where}: this CLI does not take: {shlex.join(argv)}"
        for argv in attested_commands(script)
        if not _parses(argv[1:])
    ]


def attested_commands(script: str) -> list[list[str]]:
    """The plain ``attested ...`` command lines of a script (no variables, no pipes)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        try:
            argv = shlex.split(line, comments=True)
        except ValueError:
            continue
        plain = not any(
            "$" in word or word in {"|", "||", "&&", ";", "&"} or word.startswith((">", "<"))
            for word in argv
        )
        if argv and argv[0] == "attested" and plain:
            commands.append(argv)
    return commands


def _parses(args: list[str]) -> bool:
    from attested.cli import build_parser
    from attested.cli._common import UsageError

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(args)
        except UsageError:  # the CLI's parser raises it for a usage error
            return False
        except SystemExit as exc:  # --help, --version
            return exc.code in (0, None)
    return True


def check_config(block: Block) -> list[str]:
    """The block parses in its language, and its kind's loader accepts it."""
    try:
        document = _parse(block)
    except Exception as exc:
        return [f"{block.where}: not valid {block.language}: {exc}"]
    if not block.kind or block.excerpt:
        return []
    try:
        _load(block, document)
    except Exception as exc:
        return [f"{block.where}: {block.kind} refused by its loader: {exc}"]
    return []


def _parse(block: Block) -> object:
    if block.language == "toml":
        return tomllib.loads(block.text)
    if block.language == "json":
        return json.loads(block.text)
    if block.language == "yaml":
        return yaml.safe_load(block.text)
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(block.text, source=block.where)
    return parser


def _load(block: Block, document: object) -> None:
    with tempfile.TemporaryDirectory(prefix="att-doc-check-") as directory:
        base = Path(directory)
        if block.kind == "serve-config":
            from attested.service import load_config

            path = base / "serve.toml"
            path.write_text(block.text)
            load_config(path, {})
        elif block.kind == "parent-config":
            from attested.parent import parse_parent_config

            parse_parent_config(block.text, base=base)
        elif block.kind == "identities":
            from attested.emulator import load_identities

            path = base / f"identities.{block.language}"
            path.write_text(block.text)
            path.chmod(0o600)
            load_identities(path)
        elif block.kind == "allowlist":
            from attested.relay import Allowlist

            Allowlist.from_yaml(block.text)
        elif block.kind == "key-policy":
            from attested.keypolicy import parse_policy_json

            parse_policy_json(block.text.encode())
        elif block.kind == "systemd-unit":
            assert isinstance(document, configparser.RawConfigParser)
            _check_unit_commands(document)
        else:  # pragma: no cover - parse_info refuses unknown kinds
            raise AssertionError(block.kind)


def _check_unit_commands(unit: configparser.RawConfigParser) -> None:
    """Every ``Exec*=`` line that runs ``attested`` parses with this CLI."""
    for section in unit.sections():
        for key, value in unit.items(section):
            if not key.startswith("Exec"):
                continue
            argv = shlex.split(value.replace("\\\n", " ").lstrip("-+!@"))
            if not argv or Path(argv[0]).name != "attested":
                continue
            if not _parses(argv[1:]):
                raise AssertionError(f"{key}= does not parse: {shlex.join(argv)}")
