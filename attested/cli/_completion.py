"""``attested completion bash|zsh|fish``: a shell completion script, made from the parser.

shtab writes a static script from the argparse tree (ADR 0075): nothing runs at TAB time,
so completing costs no Python start-up, and a new option completes as soon as the script
is regenerated. It is imported only by this command.
"""

from __future__ import annotations

import argparse
import sys

from attested.cli._common import EXIT_OK, epilog

SHELLS = ("bash", "zsh", "fish")
_FILE_OPTIONS = (
    "--config",
    "--ready-file",
    "--root",
    "--trust-root",
    "--simulated-state",
    "--identities",
    "--state",
    "--tls-cert",
    "--tls-key",
    "--allowlist",
    "--out",
    "--output",
    "--eif",
    "--measurements",
    "--input",
    "--signing-cert",
    "--key",
    "--public-key-file",
)


_FILES = ("doc", "eif", "policy", "blob")  # positional arguments that name files


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``completion``."""
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script for the shell named, made from this "
        "version's commands and options. Load it in the shell's start-up file, or install "
        "it where the shell looks for completions.",
        epilog=epilog(
            [
                "attested completion bash > ~/.local/share/bash-completion/completions/attested",
                "attested completion zsh > ~/.zfunc/_attested  # fpath+=(~/.zfunc) in .zshrc",
                "attested completion fish > ~/.config/fish/completions/attested.fish",
            ],
            ok="the script was printed",
            topic="cli",
        ),
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    completion.set_defaults(handler=_run)


def script(shell: str) -> str:
    """The completion script of ``attested`` for ``shell``."""
    import shtab  # only this command needs it

    from attested.cli import build_parser, parsers  # that module imports this one

    parser = build_parser()
    for each in parsers(parser):
        for action in each._actions:
            options = action.option_strings
            if any(o in _FILE_OPTIONS for o in options) or (not options and action.dest in _FILES):
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _run(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return EXIT_OK
