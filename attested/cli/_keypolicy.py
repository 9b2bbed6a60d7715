"""``attested keypolicy generate``, ``lint`` and ``audit``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ProfileNotFound

from attested import __version__
from attested._aws import REGION
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
from attested.document import Profile
from attested.errors import ConfigurationError, MalformedError, SecurityWarning, UnavailableError
from attested.keypolicy import (
    ATTESTED_OPERATIONS,
    DEFAULT_OPERATIONS,
    KeyAudit,
    KmsReader,
    MeasurementSet,
    Severity,
    audit_keys,
    generate_nitrotpm_policy,
    generate_policy,
    lint_policy,
    parse_measurements,
    render_policy,
)
from attested.keypolicy._iac import (
    DEFAULT_CLOUDFORMATION_ID,
    DEFAULT_TERRAFORM_NAME,
    render_cloudformation,
    render_terraform,
)
from attested.keypolicy._measurements import MAX_MEASUREMENTS_SIZE
from attested.keypolicy._sources import (
    MAX_INPUT_SIZE,
    PolicyInput,
    PolicySource,
    read_policy_input,
)


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
        help="check key policies (a policy file, a Terraform plan, a CloudFormation "
        "template) for attestation mistakes",
        description="Lint KMS key policies for attestation mistakes: can anyone decrypt "
        "without the enclave? The input is found by "
        "its shape: a key policy or IAM identity policy, 'aws kms get-key-policy' output, a "
        "Terraform plan or state ('terraform show -json'), or a CloudFormation template "
        "(JSON or YAML). In a plan or template every enclave key is linted (its policy "
        "names kms:RecipientAttestation, or it is tagged attested:enclave=true) and "
        "findings name the resource; a policy that cannot be judged (known only after "
        "apply, an intrinsic that cannot be resolved) is an error.",
        epilog=epilog(
            [
                "attested keypolicy lint policy.json",
                "terraform show -json plan.out > plan.json && attested keypolicy lint plan.json",
                "aws kms get-key-policy --key-id KEY --policy-name default | "
                "attested keypolicy lint - --json",
            ],
            ok="no error-level finding (warnings may be printed)",
            fail="at least one error-level finding",
            usage="the input is none of these",
            env="the file cannot be read",
            topic="keypolicy",
        ),
    )
    lint.add_argument(
        "policy", metavar="FILE", help="the policy, plan or template file, or - for stdin"
    )
    lint.add_argument("--json", action="store_true", help="print one JSON object")
    lint.add_argument(
        "--all",
        action="store_true",
        help="in a plan or template, lint every KMS key policy, not only enclave keys",
    )
    lint.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_parameter_argument,
        help="a CloudFormation parameter's value (also AWS::AccountId, AWS::Region, "
        "AWS::Partition); repeatable. Without it a parameter's Default is used and said",
    )
    lint.set_defaults(handler=_run_lint)
    _register_audit(commands)


def _register_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit",
        help="lint the key policy of every enclave key in an account",
        description="List the account's customer managed KMS keys in one region, read each "
        "key policy and lint every enclave key: its policy names kms:RecipientAttestation, "
        "it is tagged attested:enclave=true, or an alias starts with alias/enclave/. One "
        "line per key. Credentials come from botocore's usual chain (environment, "
        "AWS_PROFILE or --profile, web identity (IRSA), container (EKS Pod Identity) or "
        "instance role); the caller needs kms:ListKeys and kms:ListAliases, and "
        "kms:DescribeKey, kms:GetKeyPolicy and kms:ListResourceTags on each key.",
        epilog=epilog(
            [
                "attested keypolicy audit --region us-east-1",
                "attested keypolicy audit --region eu-west-1 --profile security --json",
            ],
            ok="every enclave key is clean",
            fail="a key has an error-level finding or its policy cannot be read",
            usage="the arguments are wrong",
            env="the keys cannot be listed (credentials, permission, network)",
            topic="keypolicy",
        ),
    )
    audit.add_argument("--region", required=True, metavar="REGION", help="the region to audit")
    audit.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="another KMS endpoint (a VPC endpoint, the emulator). AWS_ENDPOINT_URL_KMS and "
        "configured endpoints are ignored: only this option redirects the audit",
    )
    audit.add_argument("--profile", metavar="NAME", help="a profile of the AWS config files")
    audit.add_argument(
        "--all", action="store_true", help="lint every customer managed key, not only enclave keys"
    )
    audit.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        metavar="N",
        help="requests per call, throttled ones included (botocore's standard retry mode "
        "with exponential backoff; default 8)",
    )
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.set_defaults(handler=_run_audit)


def _register_generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    generate = commands.add_parser(
        "generate",
        help="generate a key policy from enclave (or Attestable AMI) measurements",
        description="Generate a least-privilege key policy that lets only the measured "
        "enclave images use the key. Measurements come from --eif, --measurements (JSON "
        "printed by nitro-cli build-enclave, describe-eif or describe-enclaves) or --pcr; "
        "each EIF, file entry or the --pcr values form one set, and several sets become "
        "lists of accepted values. With --nitrotpm the key is for EC2 instances launched "
        "from an Attestable AMI: --measurements reads the build's tpm_pcr.json "
        "(nitro-tpm-pcr-compute), --instance-role names the instances' role, and the policy "
        "pins NitroTPMPCR4 with NitroTPMPCR12 (standard boot) or, with --secure-boot, "
        "NitroTPMPCR7.",
        epilog=epilog(
            [
                "attested keypolicy generate --eif app.eif --account 111122223333 "
                "--enclave-role arn:aws:iam::111122223333:role/enclave-parent "
                "--admin-role arn:aws:iam::111122223333:role/KeyAdmin --output policy.json",
                "attested keypolicy generate --measurements measurements.json "
                "--account 111122223333 --enclave-role arn:aws:iam::111122223333:role/parent "
                "--admin-role arn:aws:iam::111122223333:role/KeyAdmin "
                "--deny-without-attestation",
                "attested keypolicy generate --nitrotpm --measurements tpm_pcr.json "
                "--account 111122223333 --instance-role arn:aws:iam::111122223333:role/app "
                "--admin-role arn:aws:iam::111122223333:role/KeyAdmin",
            ],
            ok="the policy was written",
            fail="an --eif fails its checks (CRC, section table, signature)",
            usage="an input is not an EIF or measurements, or is refused "
            "(all-zero PCRs without --allow-debug; with --secure-boot, a PCR7 of Secure "
            "Boot off)",
            env="a file cannot be read or written",
            topic="keypolicy",
        ),
    )
    generate.add_argument("--account", required=True, metavar="ID", help="the key's account")
    generate.add_argument(
        "--enclave-role", metavar="ARN", help="the parent instance's role (required for enclaves)"
    )
    generate.add_argument(
        "--nitrotpm",
        action="store_true",
        help="a key for EC2 instances launched from an Attestable AMI (NitroTPM), not enclaves",
    )
    generate.add_argument(
        "--instance-role",
        metavar="ARN",
        help="with --nitrotpm: the instances' role (required)",
    )
    generate.add_argument(
        "--secure-boot",
        action="store_true",
        help="with --nitrotpm: pin NitroTPMPCR7 (the AMI boots with Secure Boot) instead of "
        "NitroTPMPCR4 and NitroTPMPCR12",
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
        help="nitro-cli JSON output, or with --nitrotpm tpm_pcr.json (repeatable)",
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
    generate.add_argument(
        "--format",
        choices=_FORMATS,
        default="json",
        help="json: the policy (default); terraform: an aws_kms_key carrying it; "
        "cloudformation: a template with an AWS::KMS::Key carrying it, in YAML "
        "(cloudformation-json: the same in JSON). The key is tagged attested:enclave=true",
    )
    generate.add_argument(
        "--resource-name",
        metavar="NAME",
        help="the key's Terraform resource name (default enclave) or CloudFormation "
        "logical id (default EnclaveKey)",
    )
    generate.add_argument("--output", "-o", metavar="FILE", help="write here, not to stdout")
    generate.set_defaults(handler=_run_generate)


_FORMATS = ("json", "terraform", "cloudformation", "cloudformation-json")


def _render(policy: dict[str, object], args: argparse.Namespace) -> str:
    if args.resource_name is not None and args.format == "json":
        raise usage_error("--resource-name applies to --format terraform and cloudformation")
    try:
        if args.format == "terraform":
            return render_terraform(policy, name=args.resource_name or DEFAULT_TERRAFORM_NAME)
        if args.format.startswith("cloudformation"):
            return render_cloudformation(
                policy,
                syntax="json" if args.format == "cloudformation-json" else "yaml",
                logical_id=args.resource_name or DEFAULT_CLOUDFORMATION_ID,
            )
    except ConfigurationError as exc:
        raise usage_error(str(exc)) from exc
    return render_policy(policy)


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


_ENCLAVE_ONLY = (
    ("eif", "--eif"),
    ("pcrs", "--pcrs"),
    ("role_arn", "--role-arn"),
    ("instance_id", "--instance-id"),
    ("allow_debug", "--allow-debug"),
    ("enclave_role", "--enclave-role"),
)


def _check_kind(args: argparse.Namespace) -> None:
    """Refuse the options of the other kind of key (enclave or NitroTPM)."""
    if args.nitrotpm:
        for name, flag in _ENCLAVE_ONLY:
            if getattr(args, name):
                hint = " (use --instance-role)" if name == "enclave_role" else ""
                raise usage_error(f"{flag} is for enclave keys, not with --nitrotpm{hint}")
        if args.instance_role is None:
            raise usage_error("--nitrotpm needs --instance-role ARN (the instances' role)")
        return
    for name, flag in (("instance_role", "--instance-role"), ("secure_boot", "--secure-boot")):
        if getattr(args, name):
            raise usage_error(f"{flag} is for NitroTPM keys: add --nitrotpm")
    if args.enclave_role is None:
        raise usage_error("the following arguments are required: --enclave-role")


def _nitrotpm_sets(args: argparse.Namespace) -> list[MeasurementSet]:
    sets: list[MeasurementSet] = []
    for path in args.measurements:
        data = read_input(path, what="measurements", max_size=MAX_MEASUREMENTS_SIZE)
        try:
            sets.extend(parse_measurements(data, source=path, profile=Profile.NITROTPM))
        except MalformedError as exc:
            raise invalid_input(f"--measurements {path}: {exc}") from exc
    if args.pcr:
        values: dict[int, bytes] = {}
        for index, value in args.pcr:
            if index in values:
                raise usage_error(f"--pcr {index} given twice")
            if index > 23:
                raise usage_error(f"--pcr {index}: a NitroTPM has PCR0 to PCR23")
            values[index] = value
        sets.append(MeasurementSet(pcrs=values, source="--pcr", profile=Profile.NITROTPM))
    if not sets:
        raise usage_error("give measurements with --measurements tpm_pcr.json or --pcr")
    return sets


def _operations(args: argparse.Namespace) -> list[str]:
    if not args.operations:
        return list(DEFAULT_OPERATIONS)
    return [op.strip() for item in args.operations for op in item.split(",") if op.strip()]


def _generated(args: argparse.Namespace) -> dict[str, Any]:
    if args.nitrotpm:
        return generate_nitrotpm_policy(
            account=args.account,
            instance_role=args.instance_role,
            admin_role=args.admin_role,
            measurements=_nitrotpm_sets(args),
            operations=_operations(args),
            secure_boot=args.secure_boot,
            encryptors=args.encryptor,
            deny_without_attestation=args.deny_without_attestation,
        )
    return generate_policy(
        account=args.account,
        enclave_role=args.enclave_role,
        admin_role=args.admin_role,
        measurements=_measurement_sets(args),
        operations=_operations(args),
        pcrs=args.pcrs,
        role_arn=args.role_arn,
        instance_ids=args.instance_id,
        encryptors=args.encryptor,
        deny_without_attestation=args.deny_without_attestation,
        allow_debug=args.allow_debug,
    )


def _run_generate(args: argparse.Namespace) -> int:
    _check_kind(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecurityWarning)
        try:
            policy = _generated(args)
        except ConfigurationError as exc:
            raise usage_error(str(exc)) from exc
    text = _render(policy, args)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="ascii")
        except OSError as exc:
            raise env_error(f"cannot write {args.output!r}: {exc.strerror or exc}") from exc
    return EXIT_OK


def _parameter_argument(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r:.60}")
    return name, text


def _run_lint(args: argparse.Namespace) -> int:
    data = read_input(args.policy, what="input", max_size=MAX_INPUT_SIZE)
    try:
        found = read_policy_input(data, parameters=dict(args.parameter))
    except MalformedError as exc:
        raise invalid_input(f"{args.policy}: {exc}") from exc
    single = found.kind in ("policy", "get-key-policy")
    rows: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for source in found.sources:
        row = _lint_source(source, lint=single or args.all or source.marker is not None)
        rows.append(row)
        findings.extend(row.pop("findings"))
    errors = sum(1 for f in findings if f["severity"] == Severity.ERROR.value)
    warnings_count = len(findings) - errors
    if args.json:
        out: dict[str, Any] = {"input": found.kind, "findings": findings}
        if not single:
            out["resources"] = rows
        out.update(errors=errors, warnings=warnings_count)
        print(json.dumps(out, indent=2))
    else:
        _print_lint(found, rows, findings, errors, warnings_count)
    return EXIT_FAIL if errors else EXIT_OK


def _lint_source(source: PolicySource, *, lint: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "resource": source.resource,
        "type": source.resource_type,
        "marker": source.marker,
        "assumptions": list(source.assumptions),
        "findings": [],
    }
    if not lint:
        row["status"] = "skipped"
        row["problem"] = source.problem
        return row
    if source.policy is None:
        row["status"] = "not-judged"
        row["problem"] = source.problem
        row["findings"] = [
            {
                "severity": Severity.ERROR.value,
                "rule": "not-judged",
                "resource": source.resource,
                "statement": None,
                "index": None,
                "message": f"cannot be judged: {source.problem}",
            }
        ]
        return row
    row["status"] = "linted"
    row["statements"] = len(source.policy.statements)
    row["identity_policy"] = source.policy.is_identity_policy
    row["findings"] = [
        {
            "severity": f.severity.value,
            "rule": f.rule,
            "resource": source.resource,
            "statement": f.statement,
            "index": f.index,
            "message": f.message,
        }
        for f in lint_policy(source.policy)
    ]
    return row


def _print_lint(
    found: PolicyInput,
    rows: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    errors: int,
    warnings_count: int,
) -> None:
    for finding in findings:
        where = [p for p in (finding["resource"], finding["statement"]) if p]
        print(
            f"{finding['severity']:<8} {finding['rule']}: {': '.join(where)}: {finding['message']}"
        )
    if found.kind in ("policy", "get-key-policy"):
        row = rows[0]
        kind = "identity policy" if row["identity_policy"] else "key policy"
        print(
            f"{kind}, {row['statements']} statement(s): {errors} error(s), "
            f"{warnings_count} warning(s)"
        )
        return
    for row in rows:
        if row["status"] == "skipped":
            why = f" ({row['problem']})" if row["problem"] else ""
            print(
                f"skipped  {row['resource']}: not an enclave key: its policy does not name "
                f"kms:RecipientAttestation and no attested:enclave=true tag marks it{why}; "
                "--all lints it"
            )
            continue
        for assumption in row["assumptions"]:
            print(f"assumed  {row['resource']}: {assumption}")
        if row["status"] == "linted":
            count = sum(1 for f in findings if f["resource"] == row["resource"])
            print(
                f"judged   {row['resource']}: enclave key ({row['marker'] or '--all'}), "
                f"{row['statements']} statement(s), {count} finding(s)"
            )
    linted = sum(1 for row in rows if row["status"] != "skipped")
    print(
        f"{found.kind}, {len(rows)} KMS key polic{'y' if len(rows) == 1 else 'ies'}, "
        f"{linted} judged: {errors} error(s), {warnings_count} warning(s)"
    )


def _kms_client(args: argparse.Namespace) -> KmsReader:
    """A boto3 KMS client with botocore's credential chain and standard retries."""
    if not REGION.fullmatch(args.region):
        raise usage_error(f"--region {args.region!r:.40} is not a region name")
    if not 1 <= args.max_attempts <= 20:
        raise usage_error("--max-attempts must be 1..20")
    if args.endpoint_url is not None:
        parts = urlsplit(args.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise usage_error("--endpoint-url must be an http:// or https:// URL without user info")
    try:
        session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    except ProfileNotFound as exc:
        raise usage_error(str(exc)) from exc
    if session.get_credentials() is None:
        raise env_error(
            "no AWS credentials: botocore's chain found none (environment, profile, web "
            "identity, container or instance role)"
        )
    settings: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": args.max_attempts},
        "connect_timeout": 5,
        "read_timeout": 30,
        "user_agent_extra": f"attested/{__version__} keypolicy-audit",
        # As the KMS client: only --endpoint-url sends the audit elsewhere.
        "ignore_configured_endpoint_urls": True,
    }
    client: Any = session.client(  # boto3's typed client has the calls KmsReader names
        "kms", region_name=args.region, endpoint_url=args.endpoint_url, config=Config(**settings)
    )
    reader: KmsReader = client
    return reader


def _audit_line(result: KeyAudit) -> str:
    names = ",".join(result.aliases) or "-"
    head = {"ok": "ok", "error": "ERROR", "unreadable": "ERROR"}.get(result.status, "skip")
    if result.status == "aws-managed":
        why = "AWS managed"
    elif result.status == "not-enclave":
        why = "not an enclave key"
    elif result.status == "unreadable":
        why = f"not judged, a read failed: {result.problem}"
    elif result.problem is not None:
        why = f"{result.marker}: {result.problem}"
    else:
        errors = [f for f in result.findings if f.severity is Severity.ERROR]
        rules = ", ".join(f"{f.rule} ({f.statement})" for f in errors)
        warnings_count = len(result.findings) - len(errors)
        counts = f"{len(errors)} error(s)" + (f": {rules}" if rules else "")
        why = f"enclave key ({result.marker or '--all'}): {counts}, {warnings_count} warning(s)"
    state = "" if result.state in (None, "Enabled") else f" [{result.state}]"
    return f"{head:<6} {result.key_id} {names}{state}: {why}"


def _run_audit(args: argparse.Namespace) -> int:
    client = _kms_client(args)
    results: list[KeyAudit] = []
    try:
        for result in audit_keys(client, lint_all=args.all):
            results.append(result)
            if not args.json:
                print(_audit_line(result), flush=True)
    except UnavailableError as exc:
        raise env_error(str(exc)) from exc
    failed = sum(1 for r in results if r.failed)
    if args.json:
        out = {
            "region": args.region,
            "keys": [
                {
                    "key_id": r.key_id,
                    "arn": r.arn,
                    "aliases": list(r.aliases),
                    "state": r.state,
                    "status": r.status,
                    "marker": r.marker,
                    "problem": r.problem,
                    "findings": [
                        {
                            "severity": f.severity.value,
                            "rule": f.rule,
                            "statement": f.statement,
                            "index": f.index,
                            "message": f.message,
                        }
                        for f in r.findings
                    ],
                }
                for r in results
            ],
            "failed": failed,
        }
        print(json.dumps(out, indent=2))
    else:
        judged = sum(1 for r in results if r.status in ("ok", "error"))
        skipped = sum(1 for r in results if r.status in ("aws-managed", "not-enclave"))
        print(
            f"{len(results)} key(s) in {args.region}: {judged} judged, {failed} failed, "
            f"{skipped} skipped"
        )
    return EXIT_FAIL if failed else EXIT_OK
