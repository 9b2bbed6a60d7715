"""Checks of blocks that are not run: configuration examples and excerpts."""

from __future__ import annotations

import configparser
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
    """``bash -n``: the commands at least parse."""
    result = subprocess.run(
        ["bash", "-n"],
        input=shell_script(block).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return [f"{block.where}: not valid bash: {result.stderr.decode(errors='replace')}"]
    return []


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
    from attested.cli import build_parser

    for section in unit.sections():
        for key, value in unit.items(section):
            if not key.startswith("Exec"):
                continue
            argv = shlex.split(value.replace("\\\n", " ").lstrip("-+!@"))
            if not argv or Path(argv[0]).name != "attested":
                continue
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                raise AssertionError(f"{key}= does not parse: {shlex.join(argv)}") from exc
