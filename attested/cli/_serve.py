"""``attested serve``: the enclave secrets service, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from attested.cli._common import CliError, env_error, epilog, invalid_input
from attested.cli._daemon import (
    Diagnostics,
    add_daemon_arguments,
    diagnostics_on_stderr,
    run_part,
)
from attested.errors import ConfigError
from attested.relay import VsockLogHandler
from attested.service import ENV_VARS, Service, load_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    overrides = ", ".join(ENV_VARS)
    serve = subparsers.add_parser(
        "serve",
        help="run the enclave secrets service (KMS with attestation behind a local API)",
        description="Serve the local HTTP/JSON API (decrypt, generate-data-key, "
        "generate-data-key-pair, generate-random, derive-shared-secret, attestation, health, "
        "metrics) on a Unix domain socket, and optionally loopback TCP and vsock; with "
        "[kms_endpoint], also KMS's own protocol on loopback for stock AWS SDKs "
        "('attested docs kms-endpoint'). Every KMS call carries a fresh attestation document. "
        "Logs go to stderr. SIGTERM or SIGINT stops it gracefully; under systemd, "
        "Type=notify and WatchdogSec= work.",
        epilog=epilog(
            [
                "attested serve --config /etc/attested/service.toml --ready-file "
                "/run/attested/ready.json",
                "ATTESTED_NSM_BACKEND=simulated attested serve --config service.toml",
            ],
            extra=f"Environment overrides: {overrides}.",
            ok="stopped by SIGTERM or SIGINT",
            usage="the configuration is not valid (every problem is printed)",
            env="cannot start (configuration file unreadable, no NSM, socket in use, no "
            "permission) or stopped unexpectedly",
            topic="service",
        ),
    )
    serve.add_argument(
        "--config", metavar="FILE", type=Path, help="TOML configuration (default: none)"
    )
    add_daemon_arguments(
        serve, ready='when every listener is up, write {"pid": N, "listeners": {...}} here'
    )
    serve.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    with diagnostics_on_stderr(args.log_level) as diagnostics:
        return _serve(args, diagnostics)


def _serve(args: argparse.Namespace, diagnostics: Diagnostics) -> int:
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        raise config_error(exc, command="serve") from exc
    shipper: VsockLogHandler | None = None
    if config.logs_ship_to:
        # The same records as stderr, also to the parent's log sink (a production enclave
        # has no console). The handler buffers and never blocks the service.
        shipper = VsockLogHandler(config.logs_ship_to, source="attested-serve")
        logging.getLogger("attested").addHandler(shipper)
    try:
        service = Service(config)
        return run_part(
            service,
            command="serve",
            what="the service",
            ready_file=args.ready_file,
            diagnostics=diagnostics,
        )
    finally:
        if shipper is not None:
            logging.getLogger("attested").removeHandler(shipper)
            shipper.close()  # waits briefly for the buffer to drain


def config_error(exc: ConfigError, *, command: str, outcome: str = "not started") -> CliError:
    """A configuration that cannot be used: one line, or one per problem and a summary.

    A file that cannot be read is an I/O error (exit 3) and the only problem reported;
    anything else is invalid input (exit 2), every problem at once.

    Args:
        exc: the configuration's problems.
        command: the subcommand, for the lines printed here (``serve``, ``exec``).
        outcome: what did not happen, at the end of the line.
    """
    if isinstance(exc.__cause__, OSError):
        return env_error(f"configuration: {exc.problems[0]}")
    if len(exc.problems) == 1:
        return invalid_input(f"configuration: {exc.problems[0]}; {outcome}")
    for problem in exc.problems:
        print(f"attested {command}: configuration: {problem}", file=sys.stderr)
    return invalid_input(f"{len(exc.problems)} configuration problems; {outcome}")
