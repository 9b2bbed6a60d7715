"""``attested parent``: run everything the enclave needs on the parent, from one file."""

from __future__ import annotations

import argparse
import sys

from attested.cli._common import EXIT_OK, env_error, epilog, invalid_input
from attested.cli._daemon import add_daemon_arguments, diagnostics_on_stderr, run_part
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
        "log file.",
        epilog=epilog(
            [
                "attested parent --config /etc/attested/parent.toml --check",
                "attested parent --config /etc/attested/parent.toml --ready-file "
                "/run/attested/parent.json",
            ],
            ok="stopped by SIGTERM or SIGINT (with --check: the file is valid)",
            usage="the file is not valid (every problem is printed)",
            env="the file cannot be read, a listener cannot start, or a part stopped unexpectedly",
            topic="parent",
        ),
    )
    parent.add_argument(
        "--config", required=True, metavar="FILE", help="the TOML file (see attested docs parent)"
    )
    parent.add_argument(
        "--check",
        action="store_true",
        help="only check the file: print every problem and exit 2, or exit 0",
    )
    add_daemon_arguments(
        parent,
        ready='once every listener is up, write {"pid": N, "listeners": {NAME: ADDRESS}} '
        "here (atomically); removed on exit",
        shutdown="open connections",
    )
    parent.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_parent_config(args.config)
    except ConfigError as exc:
        if isinstance(exc.__cause__, OSError):  # unreadable: that alone is the problem
            raise env_error(f"{args.config}: {exc.problems[0]}") from exc
        *others, last = exc.problems  # every problem, one per line
        for problem in others:
            print(f"attested parent: {args.config}: {problem}", file=sys.stderr)
        raise invalid_input(f"{args.config}: {last}") from exc
    if args.check:
        names = ", ".join(config.listener_names())
        print(f"attested parent: {args.config}: valid ({names})")
        return EXIT_OK
    with diagnostics_on_stderr(args.log_level) as diagnostics:
        parent = Parent(config)
        return run_part(
            parent,
            command="parent",
            what="a part of the parent",
            ready_file=args.ready_file,
            deadline=args.shutdown_timeout,
            reopen=parent.reopen,
            diagnostics=diagnostics,
        )
