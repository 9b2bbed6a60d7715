"""``attested parent``: run everything the enclave needs on the parent, from one file."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from attested.cli._common import EXIT_ENV, EXIT_OK, EXIT_USAGE, env_error
from attested.cli._daemon import (
    LOG_LEVELS,
    diagnostics_on_stderr,
    raise_nofile,
    wait_for_stop_signal,
    write_ready_file,
)
from attested.errors import ConfigError, UnavailableError
from attested.parent import Parent, ParentConfig, load_parent_config


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
        return _serve(args, config)


def _serve(args: argparse.Namespace, config: ParentConfig) -> int:
    raise_nofile()
    parent = Parent(config)
    try:
        parent.start()
    except UnavailableError as exc:
        raise env_error(str(exc)) from exc
    ready: Path | None = args.ready_file

    def announce() -> None:
        for name, address in parent.listeners.items():
            print(f"attested parent: {name} listening on {address}", file=sys.stderr, flush=True)
        if ready is not None:
            write_ready_file(ready, parent.listeners)

    try:
        wait_for_stop_signal(
            running=lambda: parent.running,
            reopen=parent.reopen,
            what="a part of the parent",
            on_ready=announce,
        )
    finally:
        parent.stop(max(args.shutdown_timeout, 0.0))
        if ready is not None:
            with contextlib.suppress(OSError):
                ready.unlink()
    print("attested parent: stopped", file=sys.stderr, flush=True)
    return EXIT_OK
