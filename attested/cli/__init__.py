"""The ``attested`` command line: a thin consumer of the library.

This package is the only code that reads ``argv``, prints, or chooses an exit status.
One voice for every subcommand (ADR 0075):

* exit status 0: success (for ``verify``: the document is verified); 1: the input was
  judged and the answer is no (not verified, refused, error-level lint findings); 2:
  usage error or invalid input (the arguments, or a file that is not what the command
  reads); 3: I/O or environment error (unreadable file, no device, service unreachable);
  130: interrupted (Ctrl-C);
* a failure is one line on stderr, ``attested COMMAND: MESSAGE``, never a traceback;
  with ``--json`` it is also ``{"error": {"code": CODE, "message": MESSAGE}}`` on stdout;
* a reader that stops reading (``attested verify DOC | head -1``) ends the output
  quietly and leaves the exit status as it would have been;
* ``exec`` uses these until its app has started, then passes on the app's own status
  (128 + N for signal N); 126 and 127 mean the app's command cannot run (docs/exec.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from attested import __version__
from attested.cli import (
    _cms,
    _completion,
    _connect,
    _demo,
    _docs,
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
from attested.cli._common import (
    CODE_USAGE,
    EXIT_ENV,
    EXIT_USAGE,
    ArgumentParser,
    CliError,
    QuietPipe,
    UsageError,
    epilog,
    takes_json,
)

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
    _connect.register,
    _docs.register,
    _completion.register,
)


def build_parser() -> ArgumentParser:
    """The argument parser with every subcommand."""
    parser = ArgumentParser(
        prog="attested",
        description="Use secrets safely inside AWS Nitro Enclaves, and check that others do.",
        epilog=epilog(
            [
                "attested demo",
                "attested verify doc.cbor --pcr 0=HEX --nonce HEX",
                "attested docs",
            ],
            extra="Every command has --help. The guides are 'attested docs TOPIC'; "
            "'attested completion bash' prints shell completion.",
        ),
    )
    parser.add_argument("--version", action="version", version=f"attested {__version__}")
    subparsers = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )
    for register in _COMMANDS:
        register(subparsers)
    for each in parsers(parser):
        each.set_defaults(cli_parser=each)  # the innermost one wins: errors name it
    return parser


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: once
                yield from parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when ``None``.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    saved, guarded = sys.stdout, QuietPipe(sys.stdout)
    sys.stdout = guarded
    try:
        return _main(arguments)
    finally:
        guarded.flush()
        sys.stdout = saved


def _main(arguments: list[str]) -> int:
    parser = build_parser()
    wants_json = (
        "--json" in arguments[: arguments.index("--")]
        if "--" in arguments
        else ("--json" in arguments)
    )
    try:
        args, extra = parser.parse_known_args(arguments)
        if extra:
            raise UsageError(args.cli_parser, f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as exc:
        prog = exc.parser.prog
        return _report(
            prog,
            f"{exc} (see: {prog} --help)",
            EXIT_USAGE,
            CODE_USAGE,
            as_json=wants_json and takes_json(exc.parser),
        )
    except SystemExit as exc:  # argparse exits on --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    prog = args.cli_parser.prog
    try:
        return handler(args)
    except CliError as exc:
        return _report(prog, str(exc), exc.status, exc.code, as_json=getattr(args, "json", False))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError as exc:  # not stdout (QuietPipe takes care of that): a socket
        return _report(prog, f"broken pipe: {exc}", EXIT_ENV, "io", as_json=False)


def _report(prog: str, message: str, status: int, code: str, *, as_json: bool) -> int:
    """One line on stderr; with ``--json``, also the error object on stdout."""
    line = " ".join(message.split())
    if as_json:
        print(json.dumps({"error": {"code": code, "message": line}}, indent=2))
    print(f"{prog}: {line}", file=sys.stderr)
    return status
