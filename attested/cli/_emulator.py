"""``attested emulator kms``: run the local KMS emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attested.cli._common import env_error, epilog, invalid_input, read_input, usage_error
from attested.cli._daemon import add_daemon_arguments, diagnostics_on_stderr, run_part
from attested.emulator import (
    DEV_ACCESS_KEY_ID,
    DEV_ARN,
    DEV_SECRET_ACCESS_KEY,
    EmulatorConfig,
    KmsEmulator,
)
from attested.emulator._config import emulator_config
from attested.errors import ConfigError, ConfigurationError, MalformedError
from attested.net import is_loopback
from attested.simulator import ROOT_CERT_FILE, read_root_certificate
from attested.trust import TrustRoot


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emulator`` with its ``kms`` subcommand."""
    emulator = subparsers.add_parser(
        "emulator",
        help="run local emulators of AWS services (development only)",
        description="Local emulators of AWS services, for development and tests only.",
        epilog=epilog(["attested emulator kms --simulated-state sim"], topic="emulator"),
    )
    kinds = emulator.add_subparsers(dest="emulator", metavar="SERVICE", required=True)
    kms = kinds.add_parser(
        "kms",
        help="a local KMS that verifies Recipient attestation documents",
        description="Run a local KMS speaking the AWS JSON protocol (boto3 endpoint_url). It "
        "verifies Recipient attestation documents against a trust root, evaluates key "
        "policies with kms:RecipientAttestation:* condition keys, and answers with KMS's "
        "CMS envelope. Prints the endpoint URL as the first line of stdout, then export "
        "lines to paste into another shell (AWS CLI, SDKs), logs to stderr, and runs until "
        "SIGINT or SIGTERM (SIGHUP is harmless). DEVELOPMENT ONLY.",
        epilog=epilog(
            [
                "attested emulator kms --simulated-state sim",
                "attested emulator kms --aws-root --state kms.sqlite --port 4566 "
                "--accept-any-credentials",
            ],
            ok="stopped by SIGTERM or SIGINT",
            usage="a flag, the trust root or the identities file is not valid (every problem "
            "is printed)",
            env="a file cannot be read, the port cannot be bound, or the emulator stopped "
            "unexpectedly",
            topic="emulator",
        ),
    )
    kms.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)"
    )
    kms.add_argument("--port", type=_port, default=0, help="TCP port (default: a free one)")
    kms.add_argument("--region", default="us-east-1", help="region in ARNs and SigV4 scopes")
    kms.add_argument(
        "--account",
        metavar="ID",
        help="account that owns the keys (12 digits; default: the identities' account)",
    )
    root = kms.add_mutually_exclusive_group(required=True)
    root.add_argument(
        "--simulated-state",
        metavar="DIR",
        help="trust the simulated NSM whose state is in DIR (reads DIR/root.pem)",
    )
    root.add_argument("--trust-root", metavar="PEM", help="trust this root certificate")
    root.add_argument(
        "--aws-root",
        action="store_true",
        help="trust the AWS Nitro Enclaves Root-G1 (documents from real enclaves)",
    )
    kms.add_argument(
        "--identities",
        metavar="FILE",
        help="JSON or TOML file of access keys and ARNs (default: the built-in development "
        f"identity {DEV_ACCESS_KEY_ID})",
    )
    kms.add_argument(
        "--state", metavar="FILE", help="SQLite file keeping keys across restarts (mode 0600)"
    )
    kms.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    kms.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    kms.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host. Danger: anyone who can reach it can use its keys",
    )
    kms.add_argument(
        "--accept-any-credentials",
        action="store_true",
        help="take a caller with an unknown access key id to be the development identity, "
        "checking no signature (as other local AWS emulators do). Danger: nothing is "
        "authenticated; development only",
    )
    faults = kms.add_argument_group("fault injection (seeded, for testing clients)")
    faults.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    faults.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="plus a uniformly random delay up to this",
    )
    faults.add_argument(
        "--throttle-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="answer ThrottlingException with probability P",
    )
    faults.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="answer KMSInternalException (500) with probability P",
    )
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="close the connection without an answer with probability P",
    )
    faults.add_argument(
        "--fault-seed", type=int, default=0, metavar="N", help="seed of the draws (default 0)"
    )
    faults.add_argument(
        "--max-faults", type=int, default=None, metavar="N", help="inject at most N faults"
    )
    add_daemon_arguments(
        kms,
        ready='once listening, write {"pid": N, "listeners": {"kms": ADDRESS}} here '
        "(atomically); removed on exit",
        log_level="diagnostics on stderr (default INFO: one line per request)",
    )
    kms.set_defaults(handler=_run_kms)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is between 0 and 65535")
    return port


def _trust_root(args: argparse.Namespace) -> TrustRoot:
    if args.aws_root:
        return TrustRoot.aws_nitro()
    if args.simulated_state is not None:
        path = Path(args.simulated_state) / ROOT_CERT_FILE
        if not path.is_file():
            raise env_error(
                f"{path} does not exist: the simulated NSM has not been set up in "
                f"{args.simulated_state}. Run `attested simulate attest --state "
                f"{args.simulated_state} ...` (or `attested demo`) first"
            )
        name = f"simulated NSM root ({args.simulated_state})"
        try:  # refused if another local user could have swapped it (ssh's StrictModes)
            data = read_root_certificate(args.simulated_state)
        except ConfigurationError as exc:
            raise env_error(str(exc)) from exc
    else:
        path = Path(args.trust_root)
        name = f"trust root {path}"
        data = read_input(str(path), what="trust root")
    try:
        return TrustRoot.from_pem(data, name=name)
    except MalformedError as exc:
        raise invalid_input(f"{path}: {exc}") from exc


def _config(args: argparse.Namespace) -> EmulatorConfig:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise usage_error("give both --tls-cert and --tls-key, or neither")
    faults = {"seed": args.fault_seed, "max_faults": args.max_faults}
    for name in ("latency", "latency_jitter", "throttle_rate", "error_rate", "drop_rate"):
        faults[name] = getattr(args, name)
    try:  # every problem of the flags and the identities file at once
        return emulator_config(
            faults=faults,
            identities_file=args.identities,
            trust_root=_trust_root(args),
            host=args.host,
            port=args.port,
            region=args.region,
            account_id=args.account,
            state_path=None if args.state is None else Path(args.state),
            tls=None if args.tls_cert is None else (args.tls_cert, args.tls_key),
            allow_remote=args.allow_remote,
            accept_any_credentials=args.accept_any_credentials,
        )
    except ConfigError as exc:
        if isinstance(exc.__cause__, OSError):  # the identities file cannot be read
            raise env_error(f"{exc.source}: {exc.problems[0]}") from exc
        if len(exc.problems) == 1:
            raise invalid_input(str(exc)) from exc
        for problem in exc.problems:
            print(f"attested emulator kms: {problem}", file=sys.stderr)
        raise invalid_input(f"{len(exc.problems)} problems; not started") from exc
    except ConfigurationError as exc:
        raise invalid_input(str(exc)) from exc


def _run_kms(args: argparse.Namespace) -> int:
    with diagnostics_on_stderr(args.log_level) as diagnostics:
        config = _config(args)
        try:
            emulator = KmsEmulator(config)
        except ConfigurationError as exc:
            raise invalid_input(str(exc)) from exc

        def announce() -> None:
            print(banner(emulator.endpoint_url, config, args.identities), flush=True)
            if config.accept_any_credentials:
                print(
                    "attested emulator kms: WARNING: --accept-any-credentials: a caller "
                    "with an unknown access key id is taken to be the development identity, "
                    "and no signature of theirs is checked. Development only.",
                    file=sys.stderr,
                    flush=True,
                )
            if not is_loopback(config.host):
                print(
                    f"attested emulator kms: WARNING: listening on {config.host}, reachable "
                    "from other machines. This is a development tool with development "
                    "credentials.",
                    file=sys.stderr,
                    flush=True,
                )

        return run_part(
            emulator,
            command="emulator kms",
            what="the emulator",
            ready_file=args.ready_file,
            usage_errors=(ConfigurationError,),
            on_ready=announce,
            diagnostics=diagnostics,
        )


def banner(url: str, config: EmulatorConfig, identities: str | None) -> str:
    """What the emulator prints on stdout: its URL first, then lines to paste elsewhere.

    The first line is the endpoint URL alone (scripts read it with ``head -n 1``); the
    rest are shell lines: ``export`` of the standard AWS variables that the AWS CLI and
    the SDKs read, and comments. Secrets from an identities file are never printed.
    """
    lines = [
        url,
        "# In another shell, for the AWS CLI and the AWS SDKs (development only):",
        f"export AWS_ENDPOINT_URL_KMS={url}",
    ]
    if identities is None or config.accept_any_credentials:
        lines += [
            f"export AWS_ACCESS_KEY_ID={DEV_ACCESS_KEY_ID}",
            f"export AWS_SECRET_ACCESS_KEY={DEV_SECRET_ACCESS_KEY}",
        ]
    else:
        lines.append(
            f"# and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY of an identity in {identities}"
        )
    lines += [f"export AWS_REGION={config.region}", f"export AWS_DEFAULT_REGION={config.region}"]
    if config.tls is not None:
        lines.append("# HTTPS: also export AWS_CA_BUNDLE=CA.pem, the CA of --tls-cert")
    who = DEV_ARN if identities is None else "the identities' ARNs"
    lines.append(f"# Callers are {who}; see: attested docs emulator")
    return "\n".join(lines)
