"""``attested keypolicy generate`` and ``attested keypolicy lint``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from attested import _json
from attested.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    env_error,
    epilog,
    invalid_input,
    parse_hex,
    pcr_index,
    read_input,
    refused,
    usage_error,
)
from attested.cli._eif import read_eif_file
from attested.errors import ConfigurationError, MalformedError, SecurityWarning
from attested.keypolicy import (
    ATTESTED_OPERATIONS,
    DEFAULT_OPERATIONS,
    MeasurementSet,
    Severity,
    generate_policy,
    lint_policy,
    parse_measurements,
    parse_policy_json,
    render_policy,
)
from attested.keypolicy._measurements import MAX_MEASUREMENTS_SIZE
from attested.keypolicy._policy import MAX_POLICY_SIZE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keypolicy`` with ``generate`` and ``lint``."""
    group = subparsers.add_parser(
        "keypolicy",
        help="generate and lint KMS key policies for enclaves",
        description="Generate KMS key policies from enclave measurements, and lint key "
        "policies and IAM policies for attestation mistakes.",
        epilog=epilog(
            [
                "attested keypolicy generate --help",
                "attested keypolicy lint policy.json",
            ],
            topic="keypolicy",
        ),
    )
    commands = group.add_subparsers(dest="keypolicy_command", metavar="COMMAND", required=True)
    _register_generate(commands)
    lint = commands.add_parser(
        "lint",
        help="check a key policy or IAM policy for attestation mistakes",
        description="Lint a KMS key policy or IAM identity policy (also the output of "
        "'aws kms get-key-policy'): can anyone decrypt without the enclave?",
        epilog=epilog(
            [
                "attested keypolicy lint policy.json",
                "aws kms get-key-policy --key-id KEY --policy-name default | "
                "attested keypolicy lint - --json",
            ],
            ok="no error-level finding (warnings may be printed)",
            fail="at least one error-level finding",
            usage="the file is not a policy",
            env="the file cannot be read",
            topic="keypolicy",
        ),
    )
    lint.add_argument("policy", metavar="POLICY.json", help="the policy file, or - for stdin")
    lint.add_argument("--json", action="store_true", help="print one JSON object")
    lint.set_defaults(handler=_run_lint)


def _register_generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    generate = commands.add_parser(
        "generate",
        help="generate a key policy from enclave measurements",
        description="Generate a least-privilege key policy that lets only the measured "
        "enclave images use the key. Measurements come from --eif, --measurements (JSON "
        "printed by nitro-cli build-enclave, describe-eif or describe-enclaves) or --pcr; "
        "each EIF, file entry or the --pcr values form one set, and several sets become "
        "lists of accepted values.",
        epilog=epilog(
            [
                "attested keypolicy generate --eif app.eif --account 111122223333 "
                "--enclave-role arn:aws:iam::111122223333:role/enclave-parent "
                "--admin-role arn:aws:iam::111122223333:role/KeyAdmin --output policy.json",
                "attested keypolicy generate --measurements measurements.json "
                "--account 111122223333 --enclave-role arn:aws:iam::111122223333:role/parent "
                "--admin-role arn:aws:iam::111122223333:role/KeyAdmin "
                "--deny-without-attestation",
            ],
            ok="the policy was written",
            fail="an --eif fails its checks (CRC, section table, signature)",
            usage="an input is not an EIF or measurements, or is refused "
            "(all-zero PCRs without --allow-debug)",
            env="a file cannot be read or written",
            topic="keypolicy",
        ),
    )
    generate.add_argument("--account", required=True, metavar="ID", help="the key's account")
    generate.add_argument(
        "--enclave-role", required=True, metavar="ARN", help="the parent instance's role"
    )
    generate.add_argument(
        "--admin-role", required=True, metavar="ARN", help="the role that administers the key"
    )
    generate.add_argument(
        "--eif", action="append", default=[], metavar="FILE", help="measure an EIF (repeatable)"
    )
    generate.add_argument(
        "--measurements",
        action="append",
        default=[],
        metavar="FILE",
        help="nitro-cli JSON output (repeatable)",
    )
    generate.add_argument(
        "--pcr",
        action="append",
        default=[],
        metavar="N=HEX",
        type=_pcr_argument,
        help="one PCR value; all --pcr values form one set (repeatable)",
    )
    generate.add_argument(
        "--operations",
        action="append",
        metavar="OP[,OP...]",
        help="attested operations to allow (default: "
        f"{','.join(op.removeprefix('kms:') for op in DEFAULT_OPERATIONS)}; choose from "
        f"{','.join(op.removeprefix('kms:') for op in ATTESTED_OPERATIONS)})",
    )
    generate.add_argument(
        "--pcrs",
        type=_index_list,
        metavar="N[,N...]",
        help="PCRs to pin (default: those of 0,1,2,8 present in every set)",
    )
    generate.add_argument("--role-arn", metavar="ARN", help="pin PCR3 to the parent's role ARN")
    generate.add_argument(
        "--instance-id",
        action="append",
        default=[],
        metavar="ID",
        help="pin PCR4 to a parent instance id (repeatable)",
    )
    generate.add_argument(
        "--encryptor",
        action="append",
        default=[],
        metavar="ARN",
        help="let this principal encrypt to the key without attestation (kms:Encrypt and "
        "GenerateDataKeyWithoutPlaintext only; it can never decrypt). Repeatable",
    )
    generate.add_argument(
        "--deny-without-attestation",
        action="store_true",
        help="add a Deny of the operations, for everyone, when no attestation is present",
    )
    generate.add_argument(
        "--allow-debug",
        action="store_true",
        help="accept all-zero PCRs. Danger: debug-mode enclaves' memory is readable by "
        "the parent instance",
    )
    generate.add_argument("--output", "-o", metavar="FILE", help="write here, not to stdout")
    generate.set_defaults(handler=_run_generate)


def _pcr_argument(value: str) -> tuple[int, bytes]:
    index_text, sep, hex_text = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected N=HEX, got {value!r:.40}")
    index = pcr_index(index_text)
    data = parse_hex(hex_text, what=f"PCR{index}")
    if len(data) != 48:
        raise argparse.ArgumentTypeError(
            f"PCR{index} must be 96 hex digits (SHA-384), got {len(hex_text.strip())}"
        )
    return index, data


def _index_list(value: str) -> list[int]:
    return [pcr_index(part.strip()) for part in value.split(",") if part.strip()]


def _measurement_sets(args: argparse.Namespace) -> list[MeasurementSet]:
    sets: list[MeasurementSet] = []
    for path in args.eif:
        try:
            image = read_eif_file(path)
        except MalformedError as exc:
            raise invalid_input(f"--eif {path}: not a well-formed EIF: {exc}") from exc
        if not image.intact:
            problems = []
            if not image.crc_ok:
                problems.append("its CRC does not match")
            if image.inconsistencies:
                problems.append("its section table disagrees with its sections")
            if image.signature is not None and not image.signature.valid:
                problems.append(f"its signature is invalid ({image.signature.problem})")
            raise refused(
                f"--eif {path}: refusing to pin an image whose checks fail: " + "; ".join(problems)
            )
        sets.append(MeasurementSet(pcrs=image.pcrs, source=path))
    for path in args.measurements:
        data = read_input(path, what="measurements", max_size=MAX_MEASUREMENTS_SIZE)
        try:
            sets.extend(parse_measurements(data, source=path))
        except MalformedError as exc:
            raise invalid_input(f"--measurements {path}: {exc}") from exc
    if args.pcr:
        values: dict[int, bytes] = {}
        for index, value in args.pcr:
            if index in values:
                raise usage_error(f"--pcr {index} given twice")
            values[index] = value
        sets.append(MeasurementSet(pcrs=values, source="--pcr"))
    if not sets:
        raise usage_error("give measurements with --eif, --measurements or --pcr")
    return sets


def _run_generate(args: argparse.Namespace) -> int:
    sets = _measurement_sets(args)
    operations = (
        [op.strip() for item in args.operations for op in item.split(",") if op.strip()]
        if args.operations
        else list(DEFAULT_OPERATIONS)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecurityWarning)
        try:
            policy = generate_policy(
                account=args.account,
                enclave_role=args.enclave_role,
                admin_role=args.admin_role,
                measurements=sets,
                operations=operations,
                pcrs=args.pcrs,
                role_arn=args.role_arn,
                instance_ids=args.instance_id,
                encryptors=args.encryptor,
                deny_without_attestation=args.deny_without_attestation,
                allow_debug=args.allow_debug,
            )
        except ConfigurationError as exc:
            raise usage_error(str(exc)) from exc
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    text = render_policy(policy)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="ascii")
        except OSError as exc:
            raise env_error(f"cannot write {args.output!r}: {exc.strerror or exc}") from exc
    return EXIT_OK


def _unwrap(data: bytes) -> bytes:
    """The policy inside ``aws kms get-key-policy`` output (``{"Policy": "..."}``)."""
    try:
        outer = _json.loads(data, what="policy", max_size=MAX_POLICY_SIZE, max_depth=16)
    except MalformedError:
        return data
    if isinstance(outer, dict) and "Statement" not in outer:
        inner = outer.get("Policy")
        if isinstance(inner, str):
            return inner.encode("utf-8")
    return data


def _run_lint(args: argparse.Namespace) -> int:
    data = read_input(args.policy, what="policy", max_size=MAX_POLICY_SIZE)
    try:
        policy = parse_policy_json(_unwrap(data))
    except MalformedError as exc:
        raise invalid_input(f"{args.policy}: not a policy: {exc}") from exc
    findings = lint_policy(policy)
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    warnings_count = len(findings) - errors
    if args.json:
        out = {
            "findings": [
                {
                    "severity": f.severity.value,
                    "rule": f.rule,
                    "statement": f.statement,
                    "index": f.index,
                    "message": f.message,
                }
                for f in findings
            ],
            "errors": errors,
            "warnings": warnings_count,
        }
        print(json.dumps(out, indent=2))
    else:
        for finding in findings:
            print(
                f"{finding.severity.value:<8} {finding.rule}: {finding.statement}: "
                f"{finding.message}"
            )
        kind = "identity policy" if policy.is_identity_policy else "key policy"
        print(
            f"{kind}, {len(policy.statements)} statement(s): {errors} error(s), "
            f"{warnings_count} warning(s)"
        )
    return EXIT_FAIL if errors else EXIT_OK
