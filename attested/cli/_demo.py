"""``attested demo``: the main job on an embedded default, no AWS account or hardware needed.

By default it runs the whole system on this machine (:mod:`attested.cli._demo_system`):
the KMS emulator, the parent companion and two simulated enclaves running the service.
``--offline`` verifies the real attestation document shipped with the package instead,
the way a relying party would, and shows why the same document is refused today.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from importlib import resources
from pathlib import Path

from cryptography import x509

from attested.cli._common import EXIT_FAIL, EXIT_OK, epilog, rfc3339
from attested.errors import ChainError, PolicyError, SecurityWarning
from attested.policy import Policy
from attested.verify import Verifier

# PCR0 (the enclave image) of the bundled document, as its source's tests state it.
_EXAMPLE_PCR0 = bytes.fromhex(
    "189038eccf28a3a098949e402f3b3d86a876f4915c5b02d546abb5d8c507ceb1"
    "755b8192d8cfca66e8f226160ca4c7a6"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    demo = subparsers.add_parser(
        "demo",
        help="run the demonstration on built-in data (no AWS account, no Nitro hardware)",
        description="Run the whole system on this machine, step by step: the KMS emulator "
        "playing AWS KMS, the parent companion, and two simulated enclaves running the "
        "secrets service, connected through the relays over loopback TCP standing in for "
        "vsock. Everything it starts or writes is stopped and removed on exit, Ctrl-C "
        "included.",
        epilog=epilog(
            ["attested demo", "attested demo --nitrotpm --keep", "attested demo --offline"],
            ok="every step turned out as it must",
            fail="a step did not (the message says which)",
            topic="service",
        ),
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (key policy, configurations, logs) to look at "
        "afterwards; processes are still stopped",
    )
    demo.add_argument(
        "--nitrotpm",
        action="store_true",
        help="run the EC2 instance flow instead: an Attestable AMI's key policy, a "
        "simulated NitroTPM, `attested serve` on the instance",
    )
    demo.add_argument(
        "--offline",
        action="store_true",
        help="instead, verify the real attestation document shipped with attested",
    )
    demo.set_defaults(handler=_run)


def _step(text: str) -> None:
    print(f"\n== {text}")


def _run(args: argparse.Namespace) -> int:
    if args.offline:
        return _run_offline()
    from attested.cli import _demo_system  # imports boto3 and the emulator: only when used

    workdir = Path(tempfile.mkdtemp(prefix="attested-demo-")) if args.keep else None
    try:
        _demo_system.run_demo(workdir=workdir, nitrotpm=args.nitrotpm)
    except _demo_system.DemoFailure as exc:
        print(f"\nattested demo: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.nitrotpm:
        print("\nDone: the instance of the measured AMI got its secret; the other was refused.")
    else:
        print("\nDone: the measured enclave got its secret; the modified one was refused.")
    if workdir is not None:
        kept = (
            "tpm_pcr.json, key-policy.json, instance-*/serve.toml"
            if args.nitrotpm
            else "key-policy.json, parent.toml, enclave-*/serve.toml, enclave-a-exec/enclave.toml"
        )
        print(f"Kept {workdir}: {kept}, the logs.")
    return EXIT_OK


def _run_offline() -> int:
    data = resources.files("attested._store").joinpath("example_attestation.cbor").read_bytes()
    verifier = Verifier.aws_nitro()
    print("attested demo: offline verification of a real Nitro attestation document")
    print(f"  document: {len(data)} bytes, made by a Nitro enclave on 2024-12-13")
    print(f"  trust root: {verifier.trust_root.name} (pinned by SHA-256 fingerprint)")

    _step("1. verify it now, expecting the image's PCR0")
    policy = Policy(pcrs={0: _EXAMPLE_PCR0})
    try:
        verifier.verify(data, policy=policy)
    except ChainError as exc:
        print(f"  refused, as it must be: {exc}")
        print("  (NSM certificates live 3 hours to 20 days; an old document cannot pass today)")
    else:
        print("  unexpectedly accepted: the bundled document should have expired")
        return EXIT_FAIL

    _step("2. verify it at its own timestamp, as an auditor of archived documents would")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        verified = verifier.verify(data, policy=policy, at_document_time=True)
    print(f"  VERIFIED at {rfc3339(verified.verified_at)}: module {verified.module_id}")
    print(f"  PCR0 = {verified.pcrs[0].hex()}")
    print(f"  chain: {' <- '.join(_cn(c) for c in reversed(verified.chain))}")

    _step("3. a different expected image is refused, naming what differs")
    other = Policy(pcrs={0: bytes(range(48))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        try:
            verifier.verify(data, policy=other, at_document_time=True)
        except PolicyError as exc:
            for failure in exc.failures:
                print(f"  refused: {failure}")
        else:
            print("  unexpectedly accepted")
            return EXIT_FAIL

    print("\nDone: verification with the pinned AWS root, the chain rules and PCR pinning.")
    return EXIT_OK


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
