"""The ``attested`` command line: a thin consumer of the library.

This package is the only code that reads ``argv``, prints, or chooses an exit status.
Exit statuses, for every subcommand:

* 0: success (for ``verify``: the document is verified);
* 1: the evidence is not acceptable (not verified, malformed, refused);
* 2: usage error (bad arguments);
* 3: I/O or environment error (unreadable file, no device, service unreachable).

``exec`` uses these until its app has started, then passes on the app's own status
(128 + N for signal N); 126 and 127 mean the app's command cannot run (docs/exec.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from attested import __version__
from attested.cli import (
    _cms,
    _demo,
    _eif,
    _emulator,
    _exec,
    _keypolicy,
    _parent,
    _relay,
    _serve,
    _simulate,
    _verify,
)
from attested.cli._common import EXIT_ENV, EXIT_USAGE, CliError

__all__ = ["main"]

# Each subcommand module exposes register(subparsers); the handler it sets returns an
# exit status. Add new subcommands here.
_COMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    _verify.register,
    _demo.register,
    _simulate.register,
    _emulator.register,
    _cms.register,
    _eif.register,
    _keypolicy.register,
    _relay.register,
    _serve.register,
    _parent.register,
    _exec.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="attested",
        description="Use secrets safely inside AWS Nitro Enclaves, and check that others do.",
        epilog="Exit status: 0 ok, 1 not verified or refused, 2 usage error, 3 I/O or "
        "environment error.",
    )
    parser.add_argument("--version", action="version", version=f"attested {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when ``None``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"attested {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ENV
