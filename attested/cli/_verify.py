"""``attested verify`` and ``attested inspect``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import timedelta
from typing import Any

from attested.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    binary_or_base64,
    epilog,
    hex_argument,
    hex_or_none,
    invalid_input,
    parse_time,
    pcr_argument,
    pcr_map,
    read_input,
    rfc3339,
    usage_error,
)
from attested.document import AttestationDocument, Profile, parse_attestation
from attested.eif._format import MAGIC as EIF_MAGIC
from attested.errors import MalformedError, SecurityWarning
from attested.policy import Policy
from attested.trust import TrustRoot
from attested.verify import TimeSource, VerificationReport, Verifier

# COSE_Sign1 starts with an array of 4 (0x84) or tag 18 (0xd2).
_DOC_FIRST_BYTES = b"\x84\xd2"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``verify`` and ``inspect``."""
    verify = subparsers.add_parser(
        "verify",
        help="verify an attestation document offline",
        description="Verify a Nitro attestation document: signature, certificate chain to "
        "the trust root, and the expected values given. Every failing check is named. "
        "Enclave documents unless --nitrotpm is given; the other kind is refused.",
        epilog=epilog(
            [
                "attested verify doc.cbor --pcr 0=HEX --nonce HEX",
                "attested verify --nitrotpm doc.cbor --pcr 4=HEX --pcr 12=HEX --nonce HEX",
                "attested verify doc.cbor --root sim/root.pem --json",
            ],
            ok="verified",
            fail="at least one check failed (each is named)",
            usage="DOC is not an attestation document",
            env="DOC or --root cannot be read",
            topic="cli",
        ),
    )
    _add_doc_argument(verify)
    _add_profile_argument(verify)
    add_pcr_and_root_arguments(verify)
    verify.add_argument(
        "--nonce",
        metavar="HEX",
        type=hex_argument("--nonce"),
        help="the nonce you sent with the request for this document: proves it is fresh",
    )
    verify.add_argument(
        "--user-data",
        metavar="HEX",
        type=hex_argument("--user-data"),
        help="expected user_data field",
    )
    verify.add_argument(
        "--public-key",
        metavar="HEX",
        type=hex_argument("--public-key"),
        help="expected public_key field (DER, as hex)",
    )
    verify.add_argument(
        "--max-age", metavar="SECONDS", type=_positive_seconds, help="oldest acceptable document"
    )
    verify.add_argument(
        "--allow-debug",
        action="store_true",
        help="accept debug-mode enclaves (all-zero PCR0). Danger: their memory is readable "
        "by the parent instance. Not with --nitrotpm (instances have no debug mode)",
    )
    when = verify.add_mutually_exclusive_group()
    when.add_argument(
        "--at", metavar="RFC3339", type=parse_time, help="verify at this time instead of now"
    )
    when.add_argument(
        "--at-document-time",
        action="store_true",
        help="verify at the document's own timestamp (for archived documents). Danger: "
        "shows only that the document was valid when made",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(handler=_run_verify)

    inspect = subparsers.add_parser(
        "inspect",
        help="show an attestation document without verifying it",
        description="Decode a Nitro attestation document and show its fields. Nothing is "
        "verified: use 'attested verify' before trusting any of it.",
        epilog=epilog(
            ["attested inspect doc.cbor", "attested inspect - --json < doc.b64"],
            ok="decoded (not verified)",
            usage="DOC is not an attestation document",
            env="DOC cannot be read",
            topic="cli",
        ),
    )
    _add_doc_argument(inspect)
    _add_profile_argument(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_run_inspect)


def add_pcr_and_root_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pcr N=HEX`` (repeatable) and ``--root PEM``, for :func:`_trust_root`."""
    parser.add_argument(
        "--pcr",
        action="append",
        default=[],
        metavar="N=HEX",
        type=pcr_argument,
        help="expected value of PCR N (repeatable); without any, no PCR is pinned",
    )
    parser.add_argument(
        "--root",
        metavar="PEM",
        help="trust this root instead of the AWS Nitro Enclaves Root-G1 "
        "(for example DIR/root.pem of a simulated NSM)",
    )


def _add_doc_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "doc", metavar="DOC", help="document file, or - for stdin; raw CBOR or base64"
    )


def _add_profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nitrotpm",
        action="store_true",
        help="DOC is a NitroTPM document from an EC2 instance (PCRs in nitrotpm_pcrs), "
        "not an enclave's; each kind is refused unless asked for",
    )


def _profile(args: argparse.Namespace) -> Profile:
    return Profile.NITROTPM if args.nitrotpm else Profile.ENCLAVE


def _positive_seconds(value: str) -> timedelta:
    try:
        seconds = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from exc
    if not seconds > 0 or seconds > 10**9:
        raise argparse.ArgumentTypeError("--max-age must be a positive number of seconds")
    return timedelta(seconds=seconds)


def _load_document_bytes(source: str) -> bytes:
    raw = read_input(source, what="attestation document")
    if raw.startswith(EIF_MAGIC):
        name = "stdin" if source == "-" else source
        raise invalid_input(
            f"{name} is an Enclave Image File (EIF), not an attestation document; "
            f"'attested eif describe {name}' reads EIFs"
        )
    return binary_or_base64(raw, looks_binary=_DOC_FIRST_BYTES)


def _parse(source: str, data: bytes, profile: Profile) -> AttestationDocument:
    try:
        return parse_attestation(data, profile=profile)
    except MalformedError as exc:
        name = "stdin" if source == "-" else source
        raise invalid_input(f"{name} is not an attestation document: {exc}") from exc


def _policy_from_args(args: argparse.Namespace) -> tuple[Policy, list[str]]:
    pcrs = pcr_map(args.pcr)
    if args.max_age is not None and args.at_document_time:
        raise usage_error("--max-age means nothing with --at-document-time")
    if args.allow_debug and args.nitrotpm:
        raise usage_error(
            "--allow-debug means nothing with --nitrotpm: instances have no debug mode"
        )
    notes = []
    if not pcrs:
        made = "which AMI the instance booted" if args.nitrotpm else "which enclave image made it"
        notes.append(f"no --pcr given: this shows the document is genuine, not {made}")
    if args.allow_debug:
        notes.append("--allow-debug: debug-mode enclaves are accepted")
    if args.at_document_time:
        notes.append(
            "--at-document-time: checked at the document's own time; it may not be valid now"
        )
    with warnings.catch_warnings():
        # The notes above say the same to the user, once.
        warnings.simplefilter("ignore", SecurityWarning)
        try:
            policy = Policy(
                pcrs=pcrs,
                nonce=args.nonce,
                user_data=args.user_data,
                public_key=args.public_key,
                max_age=args.max_age,
                allow_debug=args.allow_debug,
                unsafe_any_pcrs=not pcrs,
            )
        except ValueError as exc:
            raise usage_error(str(exc)) from exc
    return policy, notes


def _trust_root(path: str | None) -> TrustRoot:
    if path is None:
        return TrustRoot.aws_nitro()
    data = read_input(path, what="trust root")
    try:
        return TrustRoot.from_pem(data, name=f"root from {path}")
    except MalformedError as exc:
        raise invalid_input(f"--root {path}: {exc}") from exc


def _run_verify(args: argparse.Namespace) -> int:
    policy, notes = _policy_from_args(args)
    root = _trust_root(args.root)
    data = _load_document_bytes(args.doc)
    profile = _profile(args)
    verifier = Verifier(trust_root=root, profile=profile)
    document = _parse(args.doc, data, profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        try:
            report = verifier.check(
                document, policy=policy, at=args.at, at_document_time=args.at_document_time
            )
        except MalformedError as exc:
            name = "stdin" if args.doc == "-" else args.doc
            raise invalid_input(f"{name} is not an attestation document: {exc}") from exc
    if args.json:
        out = _fields(document, verified=report.ok, failures=list(report.failures))
        out["verified_at"] = rfc3339(report.verified_at)
        out["time_source"] = report.time_source.value
        out["trust_root"] = root.name
        out["notes"] = notes
        print(json.dumps(out, indent=2))
    else:
        _print_report(report, root, notes)
    return EXIT_OK if report.ok else EXIT_FAIL


def _run_inspect(args: argparse.Namespace) -> int:
    document = _parse(args.doc, _load_document_bytes(args.doc), _profile(args))
    note = "inspected only: nothing was verified"
    if args.json:
        out = _fields(document, verified=False, failures=[])
        out["note"] = note
        print(json.dumps(out, indent=2))
    else:
        print(f"NOT VERIFIED ({note}); use 'attested verify' before trusting any of it")
        _print_fields(document)
    return EXIT_OK


def _fields(
    document: AttestationDocument, *, verified: bool, failures: list[str]
) -> dict[str, Any]:
    cert = document.signing_certificate
    return {
        "verified": verified,
        "profile": document.profile.value,
        "module_id": document.module_id,
        "timestamp": rfc3339(document.timestamp),
        "digest": document.digest,
        "pcrs": {str(i): v.hex() for i, v in document.pcrs.items()},
        "public_key": hex_or_none(document.public_key),
        "user_data": hex_or_none(document.user_data),
        "nonce": hex_or_none(document.nonce),
        "certificate": {
            "subject": cert.subject.rfc4514_string(),
            "not_before": rfc3339(cert.not_valid_before_utc),
            "not_after": rfc3339(cert.not_valid_after_utc),
        },
        "failures": failures,
    }


def _print_report(report: VerificationReport, root: TrustRoot, notes: list[str]) -> None:
    if report.ok:
        print(f"VERIFIED: attestation document from {report.document.module_id}")
    else:
        count = len(report.failures)
        print(f"NOT VERIFIED: {count} check{'s' if count != 1 else ''} failed")
        for failure in report.failures:
            print(f"  - {failure}")
    when = rfc3339(report.verified_at)
    source = {
        TimeSource.NOW: "now",
        TimeSource.GIVEN: "given with --at",
        TimeSource.DOCUMENT: "the document's own time",
    }[report.time_source]
    print(f"  trust root:  {root.name}")
    print(f"  checked at:  {when} ({source})")
    _print_fields(report.document)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _print_fields(document: AttestationDocument) -> None:
    cert = document.signing_certificate
    kind = {Profile.ENCLAVE: "enclave", Profile.NITROTPM: "NitroTPM (EC2 instance)"}
    print(f"  kind:        {kind[document.profile]}")
    print(f"  module id:   {document.module_id}")
    print(f"  timestamp:   {rfc3339(document.timestamp)}")
    print(
        f"  certificate: {cert.subject.rfc4514_string()}\n"
        f"               valid {rfc3339(cert.not_valid_before_utc)} "
        f"to {rfc3339(cert.not_valid_after_utc)}"
    )
    zero = [i for i, v in document.pcrs.items() if not any(v)]
    for index, value in document.pcrs.items():
        if index not in zero:
            print(f"  PCR{index:<2}       {value.hex()}")
    if zero:
        print(f"  all-zero:    PCR {', '.join(str(i) for i in zero)}")
    for name in ("public_key", "user_data", "nonce"):
        value = getattr(document, name)
        shown = "absent" if value is None else (f"{value.hex()}" if value else "empty")
        if value is not None and len(value) > 64:
            shown = f"{value[:32].hex()}... ({len(value)} bytes)"
        print(f"  {name + ':':<12} {shown}")
