"""``attested emulator kms``: run the local KMS emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attested.cli._common import env_error, read_input, usage_error
from attested.cli._daemon import LOG_LEVELS, diagnostics_on_stderr, run_part
from attested.emulator import DEV_ACCESS_KEY_ID, DEV_ARN, EmulatorConfig, KmsEmulator
from attested.emulator._config import emulator_config
from attested.errors import ConfigurationError, MalformedError
from attested.net import is_loopback
from attested.simulator import ROOT_CERT_FILE, read_root_certificate
from attested.trust import TrustRoot


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emulator`` with its ``kms`` subcommand."""
    emulator = subparsers.add_parser(
        "emulator",
        help="run local emulators of AWS services (development only)",
        description="Local emulators of AWS services, for development and tests only.",
    )
    kinds = emulator.add_subparsers(dest="emulator", metavar="SERVICE", required=True)
    kms = kinds.add_parser(
        "kms",
        help="a local KMS that verifies Recipient attestation documents",
        description="Run a local KMS speaking the AWS JSON protocol (boto3 endpoint_url). It "
        "verifies Recipient attestation documents against a trust root, evaluates key "
        "policies with kms:RecipientAttestation:* condition keys, and answers with KMS's "
        "CMS envelope. Prints the endpoint URL as the first line of stdout, logs to stderr, "
        "and runs until SIGINT or SIGTERM (SIGHUP is harmless). DEVELOPMENT ONLY: see "
        "docs/emulator.md.",
    )
    kms.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    kms.add_argument("--port", type=_port, default=0, help="TCP port (default: a free one)")
    kms.add_argument("--region", default="us-east-1", help="region in ARNs and SigV4 scopes")
    kms.add_argument("--account", metavar="ID", help="account that owns the keys (12 digits)")
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
    faults = kms.add_argument_group("fault injection (seeded, for testing clients)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument("--latency-jitter", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument("--throttle-rate", type=float, default=0.0, metavar="P")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="P")
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="P")
    faults.add_argument("--fault-seed", type=int, default=0, metavar="N")
    faults.add_argument("--max-faults", type=int, default=None, metavar="N")
    kms.add_argument(
        "--ready-file",
        metavar="PATH",
        type=Path,
        help='once listening, write {"pid": N, "listeners": {"kms": ADDRESS}} here '
        "(atomically); removed on exit",
    )
    kms.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
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
        raise usage_error(f"{path}: {exc}") from exc


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
        )
    except ConfigurationError as exc:
        raise usage_error(str(exc)) from exc


def _run_kms(args: argparse.Namespace) -> int:
    with diagnostics_on_stderr(args.log_level):
        config = _config(args)
        try:
            emulator = KmsEmulator(config)
        except ConfigurationError as exc:
            raise usage_error(str(exc)) from exc

        def announce() -> None:
            print(emulator.endpoint_url, flush=True)
            if args.identities is None:
                print(
                    f"attested emulator kms: built-in development identity {DEV_ARN}, access "
                    f"key id {DEV_ACCESS_KEY_ID} (secret: attested.emulator."
                    "DEV_SECRET_ACCESS_KEY, see docs/emulator.md). Development only.",
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
        )
