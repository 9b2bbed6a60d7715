"""``attested parent``: run everything the enclave needs on the parent, from one file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attested.cli._common import EXIT_ENV, EXIT_OK, EXIT_USAGE
from attested.cli._daemon import LOG_LEVELS, diagnostics_on_stderr, run_part
from attested.errors import ConfigError
from attested.parent import Parent, load_parent_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``parent``."""
    parent = subparsers.add_parser(
        "parent",
        help="on the parent instance: egress allowlist, credentials, ingress, log sink",
        description="Runs, from one TOML file, everything an enclave needs on its parent: "
        "the egress relay with its allowlist (deny by default), the instance role's "
        "credentials for allowed enclave CIDs, ingress forwards, and the log sink. "
        "SIGTERM or SIGINT stops everything gracefully (exit 0); SIGHUP reopens the "
        "log file. See docs/parent.md.",
    )
    parent.add_argument("--config", required=True, metavar="FILE", help="the TOML file")
    parent.add_argument(
        "--check",
        action="store_true",
        help="only check the file: print every problem and exit 2, or exit 0",
    )
    parent.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help='once every listener is up, write {"pid": N, "listeners": {NAME: ADDRESS}} '
        "here (atomically); removed on exit",
    )
    parent.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, how long open connections may finish (default 10)",
    )
    parent.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="diagnostics on stderr (default INFO)",
    )
    parent.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_parent_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"attested parent: {args.config}: {problem}", file=sys.stderr)
        return EXIT_ENV if isinstance(exc.__cause__, OSError) else EXIT_USAGE
    if args.check:
        names = ", ".join(config.listener_names())
        print(f"attested parent: {args.config}: valid ({names})")
        return EXIT_OK
    with diagnostics_on_stderr(args.log_level):
        parent = Parent(config)
        return run_part(
            parent,
            command="parent",
            what="a part of the parent",
            ready_file=args.ready_file,
            deadline=args.shutdown_timeout,
            reopen=parent.reopen,
        )
