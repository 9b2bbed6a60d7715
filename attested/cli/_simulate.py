"""``attested simulate``: documents from the simulated NSM, for testing verifiers.

**Danger**: a simulated document proves nothing about any enclave (see
:mod:`attested.simulator`). It verifies only against the state directory's own root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attested.cli._common import (
    EXIT_OK,
    env_error,
    epilog,
    hex_argument,
    invalid_input,
    pcr_argument,
    pcr_map,
    read_input,
    rfc3339,
    usage_error,
)
from attested.cli._daemon import Diagnostics, diagnostics_on_stderr
from attested.document import parse_attestation
from attested.errors import ConfigurationError
from attested.simulator import ROOT_CERT_FILE, SimulatedNsm
from nsm import REQUEST_MAX_SIZE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` and its subcommands."""
    simulate = subparsers.add_parser(
        "simulate",
        help="a simulated NSM for development and tests (never for production)",
        description="A simulated Nitro Secure Module. Its documents are signed by a root "
        "generated in the state directory and prove nothing about any enclave.",
        epilog=epilog(["attested simulate attest --state sim --out doc.cbor"], topic="nsm"),
    )
    commands = simulate.add_subparsers(dest="simulate_command", metavar="COMMAND", required=True)
    attest = commands.add_parser(
        "attest",
        help="write one simulated attestation document",
        description="Write one attestation document from a simulated NSM. The PKI is "
        "created in the state directory on first use; verify with "
        "'attested verify DOC --root DIR/root.pem'. Like a real one, the document expires "
        "with its signing certificate, at most 3 hours after it was made (the expiry is "
        "printed).",
        epilog=epilog(
            [
                "attested simulate attest --state sim --out doc.cbor",
                "attested simulate attest --state sim --role-arn "
                "arn:aws:iam::111122223333:role/parent --nonce 0102 --out - | attested inspect -",
            ],
            ok="the document was written",
            usage="the state directory holds a corrupt root",
            env="the state directory cannot be used (unsafe mode, unreadable) or --out "
            "cannot be written",
            topic="nsm",
        ),
    )
    attest.add_argument(
        "--state",
        required=True,
        metavar="DIR",
        help="state directory holding the simulated root (created with mode 0700; refused, "
        "exit 3, if another user could change it, e.g. mode 0777)",
    )
    attest.add_argument(
        "--pcr",
        action="append",
        default=[],
        metavar="N=HEX",
        type=pcr_argument,
        help="value of PCR N, 0-15, 48 bytes (repeatable)",
    )
    attest.add_argument("--role-arn", metavar="ARN", help="set PCR3 from this IAM role ARN")
    attest.add_argument("--instance-id", metavar="ID", help="set PCR4 from this instance id")
    attest.add_argument(
        "--nonce", metavar="HEX", type=hex_argument("--nonce"), help="the nonce field"
    )
    attest.add_argument(
        "--user-data", metavar="HEX", type=hex_argument("--user-data"), help="the user_data field"
    )
    attest.add_argument(
        "--public-key-file", metavar="DER", help="file whose bytes become the public_key field"
    )
    attest.add_argument(
        "--out", required=True, metavar="DOC", help="where to write the document (- for stdout)"
    )
    attest.set_defaults(handler=_run_attest)


def _run_attest(args: argparse.Namespace) -> int:
    with diagnostics_on_stderr("WARNING") as diagnostics:
        return _attest(args, diagnostics)


def _attest(args: argparse.Namespace, diagnostics: Diagnostics) -> int:
    pcrs = pcr_map(args.pcr)
    public_key = None
    if args.public_key_file is not None:
        public_key = read_input(args.public_key_file, what="public key", max_size=REQUEST_MAX_SIZE)
    try:
        simulator = SimulatedNsm(
            state_dir=args.state,
            pcrs=pcrs,
            role_arn=args.role_arn,
            instance_id=args.instance_id,
        )
    except ValueError as exc:
        raise usage_error(str(exc)) from exc
    except ConfigurationError as exc:
        if isinstance(exc.__cause__, ValueError):  # a corrupt root or key in the state
            raise invalid_input(str(exc)) from exc
        raise env_error(str(exc)) from exc
    with simulator:
        try:
            document = simulator.get_attestation_document(
                user_data=args.user_data, nonce=args.nonce, public_key=public_key
            )
        except ValueError as exc:
            raise usage_error(str(exc)) from exc
    root = Path(args.state) / ROOT_CERT_FILE
    if args.out == "-":
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
    else:
        try:
            Path(args.out).write_bytes(document)
        except OSError as exc:
            raise env_error(f"cannot write {args.out!r}: {exc.strerror or exc}") from exc
    expires = parse_attestation(document).signing_certificate.not_valid_after_utc
    diagnostics.show()  # the simulator's warning: only once the command succeeded
    print(
        f"wrote a SIMULATED attestation document ({len(document)} bytes, module "
        f"{simulator.module_id}), valid until {rfc3339(expires)} (3 hours at most, as on "
        f"Nitro hardware); it verifies only against {root}: "
        f"attested verify {args.out} --root {root}",
        file=sys.stderr,
    )
    return EXIT_OK
