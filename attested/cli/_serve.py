"""``attested serve``: the enclave secrets service, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from attested.cli._common import EXIT_USAGE
from attested.cli._daemon import LOG_LEVELS, diagnostics_on_stderr, run_part
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
        "(docs/kms-endpoint.md). Every KMS call carries a fresh attestation document. Logs "
        "go to stderr. SIGTERM or SIGINT stops it gracefully; under systemd, Type=notify and "
        "WatchdogSec= work. See docs/service.md.",
        epilog=f"Environment overrides: {overrides}.",
    )
    serve.add_argument(
        "--config", metavar="FILE", type=Path, help="TOML configuration (default: none)"
    )
    serve.add_argument(
        "--ready-file",
        metavar="PATH",
        type=Path,
        help='when every listener is up, write {"pid": N, "listeners": {...}} here',
    )
    serve.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="default INFO"
    )
    serve.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    with diagnostics_on_stderr(args.log_level):
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"attested serve: configuration: {problem}", file=sys.stderr)
        print(
            f"attested serve: {len(exc.problems)} configuration problem(s); not started",
            file=sys.stderr,
        )
        return EXIT_USAGE
    shipper: VsockLogHandler | None = None
    if config.logs_ship_to:
        # The same records as stderr, also to the parent's log sink (a production enclave
        # has no console). The handler buffers and never blocks the service.
        shipper = VsockLogHandler(config.logs_ship_to, source="attested-serve")
        logging.getLogger("attested").addHandler(shipper)
    try:
        service = Service(config)
        return run_part(service, command="serve", what="the service", ready_file=args.ready_file)
    finally:
        if shipper is not None:
            logging.getLogger("attested").removeHandler(shipper)
            shipper.close()  # waits briefly for the buffer to drain
