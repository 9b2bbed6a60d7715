"""``attested eif describe``, ``attested eif compare`` and ``attested pcr``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from attested import pcr
from attested.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    env_error,
    epilog,
    invalid_input,
    pcr_index,
    read_input,
    usage_error,
)
from attested.eif import (
    EifComparison,
    EifImage,
    SectionDigest,
    compare_eifs,
    minimum_memory_mib,
    read_eif,
    read_sections,
)
from attested.eif._sizing import MINIMUM_MEMORY_RULE
from attested.errors import MalformedError

HASH_ALGORITHM = "Sha384 { ... }"
"""The spelling ``nitro-cli`` up to 1.4 prints (1.5 prints ``Sha512_48 { .. }``)."""

_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
}
_SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
}
_MAX_CERT_FILE = 64 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eif`` (with ``describe``) and ``pcr``."""
    eif = subparsers.add_parser(
        "eif",
        help="inspect Enclave Image Files",
        description="Inspect Enclave Image Files (EIF) offline.",
        epilog=epilog(
            ["attested eif describe app.eif", "attested eif compare a.eif b.eif"], topic="keypolicy"
        ),
    )
    commands = eif.add_subparsers(dest="eif_command", metavar="COMMAND", required=True)
    describe = commands.add_parser(
        "describe",
        help="measure an EIF and check its CRC, section table and signature",
        description="Parse an EIF, compute PCR0, PCR1, PCR2 (and PCR8 when signed), and "
        "check its CRC, that its offset table agrees with its sections, and its signature. "
        "The JSON form mirrors 'nitro-cli describe-eif'.",
        epilog=epilog(
            ["attested eif describe app.eif", "attested eif describe app.eif --json"],
            ok="every check passes",
            fail="a check fails (CRC, section table, signature)",
            usage="the file is not an EIF",
            env="the file cannot be read",
            topic="keypolicy",
        ),
    )
    describe.add_argument("eif", metavar="FILE.eif", help="the image file")
    describe.add_argument("--json", action="store_true", help="print describe-eif's JSON")
    describe.set_defaults(handler=_run_describe)
    _register_compare(commands)

    parser = subparsers.add_parser(
        "pcr",
        help="compute a PCR value the way nitro-cli and the AWS guide do",
        description="Compute one PCR value and print it as 'nitro-cli pcr' does. --input "
        "and --signing-cert extend an all-zero PCR with the SHA-384 of the content (PCR8 "
        "is --signing-cert: the certificate's DER); --string, --role-arn (PCR3) and "
        "--instance-id (PCR4) extend it with the raw UTF-8 text.",
        epilog=epilog(
            [
                "attested pcr --role-arn arn:aws:iam::111122223333:role/enclave-parent",
                "attested pcr --signing-cert signing.pem",
            ],
            ok="the PCR was printed",
            usage="--signing-cert is not a PEM certificate",
            env="the file cannot be read",
            topic="keypolicy",
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", metavar="FILE", help="a file's content (- for stdin)")
    what.add_argument("--string", metavar="TEXT", help="a string extended as is")
    what.add_argument("--role-arn", metavar="ARN", help="PCR3: the parent's IAM role ARN")
    what.add_argument("--instance-id", metavar="ID", help="PCR4: the parent's instance id")
    what.add_argument(
        "--signing-cert",
        "--signing-certificate",
        dest="signing_cert",
        metavar="PEM",
        help="PCR8: the EIF signing certificate",
    )
    parser.set_defaults(handler=_run_pcr)


def _register_compare(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two EIFs PCR by PCR and section by section",
        description="Compare two EIFs: PCR0, PCR1, PCR2 and PCR8, and each section (kernel, "
        "cmdline, each ramdisk, signature, metadata), saying which differ and which PCR each "
        "difference moves. Metadata is not measured: it may differ while every PCR is equal.",
        epilog=epilog(
            [
                "attested eif compare pinned.eif rebuilt.eif",
                "attested eif compare a.eif b.eif --json",
            ],
            ok="the compared PCRs are equal and both images pass their checks",
            fail="a compared PCR differs, or a check (CRC, section table, signature) fails",
            usage="a file is not a well-formed EIF",
            env="a file cannot be read",
            topic="keypolicy",
        ),
    )
    compare.add_argument("first", metavar="A.eif", help="the first image (e.g. the pinned one)")
    compare.add_argument("second", metavar="B.eif", help="the second image (e.g. a rebuild)")
    compare.add_argument(
        "--pcrs",
        type=_pcr_list,
        default=(0, 1, 2),
        metavar="N[,N...]",
        help="the PCRs whose difference fails the comparison (default 0,1,2; add 8 when "
        "a key policy pins the signing certificate)",
    )
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.set_defaults(handler=_run_compare)


def _pcr_list(value: str) -> tuple[int, ...]:
    indexes = tuple(pcr_index(part.strip()) for part in value.split(",") if part.strip())
    unknown = [i for i in indexes if i not in (0, 1, 2, 8)]
    if unknown or not indexes:
        raise argparse.ArgumentTypeError("an EIF measures PCR0, 1, 2 and 8 only")
    return indexes


def read_eif_file(path: str) -> EifImage:
    """Read and measure an EIF from a path (hashing on two threads).

    Raises:
        CliError: the file cannot be read (exit 3).
        MalformedError: the file is not a well-formed EIF.
    """
    try:
        with Path(path).open("rb", buffering=0) as handle:
            return read_eif(handle, parallel=True)
    except OSError as exc:
        raise env_error(f"cannot read EIF {path!r}: {exc.strerror or exc}") from exc


def _run_describe(args: argparse.Namespace) -> int:
    try:
        image = read_eif_file(args.eif)
    except MalformedError as exc:
        raise invalid_input(f"{args.eif} is not a well-formed EIF: {exc}") from exc
    if args.json:
        print(json.dumps(describe_json(image), indent=2))
    else:
        _print_describe(image)
    return EXIT_OK if image.intact else EXIT_FAIL


def _measure_both(path: str, label: str) -> tuple[EifImage, tuple[SectionDigest, ...]]:
    try:
        image = read_eif_file(path)
        with Path(path).open("rb", buffering=0) as handle:
            sections = read_sections(handle)
    except OSError as exc:
        raise env_error(f"cannot read EIF {path!r}: {exc.strerror or exc}") from exc
    except MalformedError as exc:
        raise invalid_input(f"{label} {path}: not a well-formed EIF: {exc}") from exc
    return image, sections


def _checks(image: EifImage) -> list[str]:
    problems = []
    if not image.crc_ok:
        problems.append("CRC mismatch")
    if image.inconsistencies:
        problems.append("the section table disagrees with the sections")
    if image.signature is not None and not image.signature.valid:
        problems.append(f"invalid signature ({image.signature.problem})")
    return problems


def _run_compare(args: argparse.Namespace) -> int:
    a, a_sections = _measure_both(args.first, "A")
    b, b_sections = _measure_both(args.second, "B")
    try:
        result = compare_eifs(a, a_sections, b, b_sections)
    except MalformedError as exc:
        raise invalid_input(str(exc)) from exc
    differing = result.differing(args.pcrs)
    problems = {"A": _checks(a), "B": _checks(b)}
    if args.json:
        print(json.dumps(_compare_json(result, args.pcrs, problems), indent=2))
    else:
        _print_compare(result, args.pcrs, problems)
    failed = differing or problems["A"] or problems["B"]
    return EXIT_FAIL if failed else EXIT_OK


def _side(section: SectionDigest | None) -> dict[str, Any] | None:
    if section is None:
        return None
    return {"Size": section.header.size, "Sha384": section.sha384.hex()}


def _compare_json(
    result: EifComparison, decisive: tuple[int, ...], problems: dict[str, list[str]]
) -> dict[str, Any]:
    differing = result.differing(decisive)
    return {
        "Equal": not differing and not problems["A"] and not problems["B"],
        "ComparedPCRs": [f"PCR{i}" for i in decisive],
        "DifferingPCRs": [f"PCR{i}" for i in result.differing()],
        "PCRs": {
            f"PCR{d.index}": {
                "A": None if d.a is None else d.a.hex(),
                "B": None if d.b is None else d.b.hex(),
                "Equal": d.equal,
            }
            for d in result.pcrs
        },
        "Sections": [
            {
                "Section": s.name,
                "MeasuredIn": [f"PCR{i}" for i in s.measured_in],
                "A": _side(s.a),
                "B": _side(s.b),
                "Equal": s.equal,
                "Meaning": s.why,
            }
            for s in result.sections
        ],
        "MetadataDifferences": list(result.metadata_fields),
        "CheckProblems": problems,
    }


def _print_compare(
    result: EifComparison, decisive: tuple[int, ...], problems: dict[str, list[str]]
) -> None:
    for d in result.pcrs:
        if d.a is None and d.b is None:
            print(f"PCR{d.index}  absent   (both images are unsigned)")
            continue
        state = "equal" if d.equal else "DIFFERS"
        left = "absent (unsigned)" if d.a is None else d.a.hex()
        print(f"PCR{d.index}  {state:<8} A {left}")
        if not d.equal:
            right = "absent (unsigned)" if d.b is None else d.b.hex()
            print(f"{'':15}B {right}")
    for s in result.sections:
        state = "equal" if s.equal else "DIFFERS"
        sizes = ""
        if not s.equal and s.a is not None and s.b is not None:
            sizes = f" ({s.a.header.size} vs {s.b.header.size} bytes)"
        print(f"  {s.name:<10} {state}{sizes}: {s.why}")
    if result.metadata_fields:
        print(f"  metadata fields that differ: {', '.join(result.metadata_fields)}")
    for label, found in problems.items():
        for problem in found:
            print(f"{label}: CHECK FAILED: {problem}")
    differing = result.differing(decisive)
    if differing:
        names = ", ".join(f"PCR{i}" for i in differing)
        print(f"DIFFERENT: {names} differ; a key policy pinning A's values refuses B")
    else:
        names = ", ".join(f"PCR{i}" for i in decisive)
        others = [i for i in result.differing() if i not in decisive]
        tail = f" (PCR{others[0]} differs, not compared)" if others else ""
        print(f"SAME MEASUREMENTS: {names} are equal{tail}")


def _openssl_time(when: datetime) -> str:
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


def _certificate_info(certificate: x509.Certificate) -> dict[str, Any]:
    issuer = {}
    for attribute in certificate.issuer:
        name = _NAMES.get(attribute.oid, attribute.oid.dotted_string)
        value = attribute.value
        issuer[name] = value if isinstance(value, str) else value.hex()
    return {
        "IssuerName": dict(sorted(issuer.items())),
        "Algorithm": _SIGNATURE_ALGORITHMS.get(
            certificate.signature_algorithm_oid,
            certificate.signature_algorithm_oid.dotted_string,
        ),
        "NotBefore": _openssl_time(certificate.not_valid_before_utc),
        "NotAfter": _openssl_time(certificate.not_valid_after_utc),
        "Signature": ":".join(f"{byte:02X}" for byte in certificate.signature),
    }


def describe_json(image: EifImage) -> dict[str, Any]:
    """``nitro-cli describe-eif``'s JSON for ``image``, plus an ``Attested`` object."""
    measurements: dict[str, Any] = {"HashAlgorithm": HASH_ALGORITHM}
    measurements.update({f"PCR{i}": value.hex() for i, value in image.pcrs.items()})
    out: dict[str, Any] = {
        "EifVersion": image.header.version,
        "Measurements": measurements,
        "IsSigned": image.signature is not None,
    }
    if image.signature is not None:
        out["SigningCertificate"] = _certificate_info(image.signature.certificate)
    out["CheckCRC"] = image.crc_ok
    if image.signature is not None:
        out["SignatureCheck"] = image.signature.valid
    if image.metadata is not None:
        meta = image.metadata
        out["ImageName"] = meta.image_name
        out["ImageVersion"] = meta.image_version
        described: dict[str, Any] = {
            "BuildTime": meta.build_time,
            "BuildTool": meta.build_tool,
            "BuildToolVersion": meta.build_tool_version,
            "OperatingSystem": meta.operating_system,
            "KernelVersion": meta.kernel_version,
            "DockerInfo": meta.docker_info,
        }
        if isinstance(meta.custom, dict):
            described.update({k: v for k, v in meta.custom.items() if k not in described})
        elif meta.custom is not None:
            described["CustomMetadata"] = meta.custom
        out["Metadata"] = described
    extra: dict[str, Any] = {
        "Arch": image.header.arch,
        "FileSize": image.size,
        "MinimumMemoryMiB": minimum_memory_mib(image.size),
        "MinimumMemoryRule": MINIMUM_MEMORY_RULE,
        "StoredCRC32": f"{image.header.crc32:08x}",
        "ComputedCRC32": f"{image.computed_crc32:08x}",
        "SectionTableCheck": not image.inconsistencies,
        "SectionTableProblems": list(image.inconsistencies),
        "Sections": [
            {"Type": s.type.label, "Offset": s.offset, "Size": s.size} for s in image.sections
        ],
    }
    if image.signature is not None and image.signature.problem is not None:
        extra["SignatureProblem"] = image.signature.problem
    out["Attested"] = extra
    return out


def _print_describe(image: EifImage) -> None:
    verdict = "OK" if image.intact else "CHECKS FAILED"
    print(
        f"{verdict}: EIF version {image.header.version} ({image.header.arch}), "
        f"{image.size} bytes, {len(image.sections)} sections"
    )
    for index, value in image.pcrs.items():
        print(f"  PCR{index}       {value.hex()}")
    if image.signature is None:
        print("  PCR8       none: the image is unsigned")
    stored, computed = image.header.crc32, image.computed_crc32
    crc = "ok" if image.crc_ok else f"MISMATCH (stored {stored:08x}, computed {computed:08x})"
    print(f"  CRC:       {crc}")
    signature = image.signature
    if signature is None:
        print("  signature: none")
    else:
        subject = signature.certificate.subject.rfc4514_string()
        state = "valid" if signature.valid else f"INVALID: {signature.problem}"
        print(f"  signature: {state} ({signature.algorithm}, signed by {subject})")
    if image.inconsistencies:
        print(f"  sections:  {len(image.inconsistencies)} table problem(s):")
        for problem in image.inconsistencies:
            print(f"             - {problem}")
    else:
        print("  sections:  the offset table agrees with the section headers")
    for section in image.sections:
        print(f"             {section.type.label:<9} at {section.offset:>10}, {section.size} bytes")
    print(
        f"  memory:    at least {minimum_memory_mib(image.size)} MiB to launch "
        "(nitro-cli: 4 x the file size, at least 64 MiB; the app's own needs come on top)"
    )
    if image.metadata is not None:
        meta = image.metadata
        print(
            f"  metadata:  {meta.image_name} {meta.image_version}, built {meta.build_time} "
            f"by {meta.build_tool} {meta.build_tool_version} (not measured)"
        )
    if image.pcr0 == pcr.ZERO:
        print("note: PCR0 is all zeros", file=sys.stderr)


def _sha384(stream: BinaryIO) -> bytes:
    digest = hashlib.sha384()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.digest()


def _file_pcr(path: str) -> bytes:
    """``nitro-cli pcr --input``: the file is streamed, whatever its size."""
    try:
        if path == "-":
            digest = _sha384(sys.stdin.buffer)
        else:
            with Path(path).open("rb") as handle:
                digest = _sha384(handle)
    except OSError as exc:
        raise env_error(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    return pcr.extend(pcr.ZERO, digest)


def _certificate_pcr(path: str) -> bytes:
    data = read_input(path, what="signing certificate", max_size=_MAX_CERT_FILE)
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise invalid_input(f"{path}: not a PEM X.509 certificate") from exc
    return pcr.pcr8_from_certificate(certificate.public_bytes(Encoding.DER))


def _run_pcr(args: argparse.Namespace) -> int:
    try:
        if args.input is not None:
            value = _file_pcr(args.input)
        elif args.signing_cert is not None:
            value = _certificate_pcr(args.signing_cert)
        elif args.role_arn is not None:
            value = pcr.pcr3_from_role_arn(args.role_arn)
        elif args.instance_id is not None:
            value = pcr.pcr4_from_instance_id(args.instance_id)
        else:
            value = pcr.from_string(args.string)
    except ValueError as exc:
        raise usage_error(str(exc)) from exc
    print(json.dumps({"PCR": value.hex()}, indent=2))
    return EXIT_OK
