"""``attested serve``: the enclave secrets service, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from attested.cli._common import EXIT_OK, EXIT_USAGE, env_error
from attested.cli._daemon import write_ready_file
from attested.errors import AttestedError, ConfigError
from attested.relay import VsockLogHandler
from attested.service import ENV_VARS, Service, load_config

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    overrides = ", ".join(ENV_VARS)
    serve = subparsers.add_parser(
        "serve",
        help="run the enclave secrets service (KMS with attestation behind a local API)",
        description="Serve the local HTTP/JSON API (decrypt, generate-data-key, "
        "generate-data-key-pair, generate-random, derive-shared-secret, attestation, health, "
        "metrics) on a Unix domain socket, and optionally loopback TCP and vsock. Every KMS "
        "call carries a fresh attestation document. Logs go to stderr. SIGTERM or SIGINT "
        "stops it gracefully. See docs/service.md.",
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
        "--log-level", default="INFO", type=str.upper, choices=_LEVELS, help="default INFO"
    )
    serve.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger("attested")
    root.addHandler(handler)
    root.setLevel(args.log_level)
    root.propagate = False
    try:
        return _serve(args)
    finally:
        root.removeHandler(handler)


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
    ready: Path | None = args.ready_file
    if ready is not None:
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()  # a stale file from an earlier run must not look ready
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    shipper: VsockLogHandler | None = None
    if config.logs_ship_to:
        # The same records as stderr, also to the parent's log sink (a production enclave
        # has no console). The handler buffers and never blocks the service.
        shipper = VsockLogHandler(config.logs_ship_to, source="attested-serve")
        logging.getLogger("attested").addHandler(shipper)
    service = Service(config)
    try:
        try:
            service.start()
        except (AttestedError, OSError) as exc:
            raise env_error(f"cannot start: {exc}") from exc
        if ready is not None:
            write_ready_file(ready, service.listeners)
        while not stop.wait(1.0):
            pass
        logging.getLogger("attested.service").info("stopping (signal received)")
    finally:
        service.stop(deadline=10.0)
        if ready is not None:
            with contextlib.suppress(OSError):
                ready.unlink()
        for signum, old in previous.items():
            signal.signal(signum, old)
        if shipper is not None:
            logging.getLogger("attested").removeHandler(shipper)
            shipper.close()  # waits briefly for the buffer to drain
    return EXIT_OK
