"""``attested exec``: the enclave image's entrypoint; runs the app with its secrets.

Exit statuses (docs/exec.md): the app's own status once it has started (128 + N when
signal N ended it); before that, 1 a secret was refused (KMS, its answer, a store, or
the stored value), 2 usage or configuration, 3 I/O or environment (also when a part of
``exec`` died while the app ran), 126 the command cannot be executed, 127 no such
command, 128 + N a stop signal N arrived first.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from attested.cli._common import EXIT_ENV, EXIT_FAIL, EXIT_OK, EXIT_USAGE, epilog, usage_error
from attested.cli._daemon import (
    _raise_nofile,
    add_daemon_arguments,
    diagnostics_on_stderr,
    write_ready_file,
)
from attested.cli._serve import config_error
from attested.errors import (
    AttestedError,
    ConfigError,
    ConfigurationError,
    KmsError,
    KmsKeyNotFound,
    KmsThrottled,
    MalformedError,
    VerificationError,
)
from attested.exec import (
    AppNotStarted,
    ExecConfig,
    SecretsNotOpened,
    StoppedBeforeStart,
    StoreAccessDenied,
    load_exec_config,
    run,
)
from attested.net import Address
from attested.service import ENV_VARS

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``exec``."""
    command = subparsers.add_parser(
        "exec",
        help="run an app in the enclave with its secrets, network and logs (the entrypoint)",
        usage="attested exec [--config FILE] [--check] [--ready-file PATH] "
        "[--log-level LEVEL] -- CMD [ARGS...]",
        description="The enclave image's entrypoint (it may be PID 1). Brings lo up and "
        "writes [[hosts]] into the hosts file; runs the local API, the egress relay, the "
        "[[hosts]] tunnels, [[ingress]] and log shipping in this process; opens every "
        "[[secrets]] entry with KMS and attestation, in parallel; then runs CMD with the "
        "plaintexts in its environment and files, ships its output line by line, forwards "
        "SIGTERM, SIGINT and SIGHUP, reaps orphans, and exits with CMD's status. The "
        "configuration is serve's TOML plus [[secrets]], [[hosts]], [[ingress]] and [exec].",
        epilog=epilog(
            [
                "attested exec --config /etc/attested/enclave.toml --check",
                "attested exec --config /etc/attested/enclave.toml -- python3 /app/app.py",
            ],
            extra="Once CMD has started, exec exits with CMD's own status (128+N when signal "
            "N ended it). Before that, the table below holds, and also: 126 CMD cannot be "
            "executed, 127 no such CMD, 128+N a stop signal N arrived first. Environment "
            f"overrides: {', '.join(ENV_VARS)}.",
            ok="--check: the configuration is valid",
            fail="a required secret was refused (KMS, its answer, a store, the stored value)",
            usage="the configuration is not valid (every problem is printed)",
            env="cannot start (unreadable file, no NSM, KMS or a store unreachable), or a part "
            "of exec died while CMD ran",
            topic="exec",
        ),
    )
    command.add_argument(
        "--config", metavar="FILE", type=Path, help="TOML configuration (default: none)"
    )
    command.add_argument(
        "--check", action="store_true", help="check the configuration, print a summary, exit"
    )
    add_daemon_arguments(
        command, ready='once the app has started, write {"pid": N, "listeners": {...}} here'
    )
    command.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- CMD [ARGS...]",
        help="the app's command and its arguments, after --",
    )
    command.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    # Diagnostics are shown as they come, not held until start-up succeeded as serve's
    # are: exec is the enclave's entrypoint, opening secrets may take a while, and the
    # console is the only place to watch it.
    with diagnostics_on_stderr(args.log_level, hold=False):
        try:
            config = load_exec_config(args.config, os.environ)
        except ConfigError as exc:
            raise config_error(exc, command="exec", outcome="the app was not started") from exc
        if args.check:
            print(f"attested exec: {args.config or 'the environment'}: valid ({_summary(config)})")
            return EXIT_OK
        if not argv:
            raise usage_error("give the app's command after --: attested exec ... -- CMD")
        return _exec(config, argv, args.ready_file)


def _summary(config: ExecConfig) -> str:
    return (
        f"{len(config.secrets)} secret(s), {len(config.hosts)} host(s), "
        f"{len(config.ingress)} ingress forward(s)"
    )


def _exec(config: ExecConfig, argv: list[str], ready_file: Path | None) -> int:
    _raise_nofile()
    if ready_file is not None:
        with contextlib.suppress(FileNotFoundError):
            ready_file.unlink()  # a stale file from an earlier run must not look ready

    def on_ready(listeners: Mapping[str, Address]) -> None:
        if ready_file is not None:
            write_ready_file(ready_file, listeners)
        for name, address in listeners.items():
            print(f"attested exec: {name} listening on {address}", file=sys.stderr)

    try:
        ended = run(config, argv, console=(sys.stdout.buffer, sys.stderr.buffer), on_ready=on_ready)
    except SecretsNotOpened as exc:
        for failure in exc.failures:
            print(f"attested exec: {failure}", file=sys.stderr)
        print("attested exec: a required secret was not opened; the app was not started",
              file=sys.stderr)  # fmt: skip
        return _secret_status(exc)
    except AppNotStarted as exc:
        print(f"attested exec: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
    except StoppedBeforeStart as exc:
        print(f"attested exec: {exc}; the app was not started", file=sys.stderr)
        return 128 + exc.signal
    except (AttestedError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"attested exec: cannot start: {detail}; the app was not started", file=sys.stderr)
        return EXIT_ENV
    finally:
        if ready_file is not None:
            with contextlib.suppress(OSError):
                ready_file.unlink()
    if ended.part_failed:
        print("attested exec: a part stopped unexpectedly; the app was stopped", file=sys.stderr)
        return EXIT_ENV
    return ended.status


def _secret_status(exc: SecretsNotOpened) -> int:
    """1 if any required secret was refused, 2 for configuration, else 3 (see docs)."""
    causes = [failure.error for failure in exc.failures if not failure.optional]
    refused = (VerificationError, MalformedError, StoreAccessDenied)
    if any(
        isinstance(cause, refused)
        or (isinstance(cause, KmsError) and not isinstance(cause, KmsThrottled | KmsKeyNotFound))
        for cause in causes
    ):
        return EXIT_FAIL
    if any(isinstance(cause, ConfigurationError) for cause in causes):
        return EXIT_USAGE
    return EXIT_ENV
