"""``attested cms decrypt``: open a KMS CiphertextForRecipient outside an enclave."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from attested.cli._common import (
    EXIT_OK,
    binary_or_base64,
    env_error,
    epilog,
    invalid_input,
    read_input,
    refused,
)
from attested.errors import EnvelopeDecryptionError, EnvelopeNotForRecipient, MalformedEnvelope
from attested.kms import RecipientKey, open_envelope
from attested.kms._cms import MAX_ENVELOPE_SIZE

_MAX_KEY_FILE = 64 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cms decrypt``."""
    cms = subparsers.add_parser(
        "cms",
        help="work with KMS CiphertextForRecipient envelopes",
        description="Work with the CMS envelopes KMS returns as CiphertextForRecipient.",
        epilog=epilog(["attested cms decrypt --key key.pem envelope.bin"], topic="kms-client"),
    )
    actions = cms.add_subparsers(dest="cms_command", metavar="ACTION", required=True)
    decrypt = actions.add_parser(
        "decrypt",
        help="open an envelope with its RSA private key",
        description="Open a KMS CiphertextForRecipient with the RSA private key whose public "
        "key was in the attestation document, to debug envelopes outside an enclave. The "
        "envelope is read strictly (the checks the KMS client applies). Danger: the "
        "plaintext is written as raw bytes; do not paste it anywhere.",
        epilog=epilog(
            [
                "attested cms decrypt --key key.pem envelope.bin --out secret.bin",
                "attested cms decrypt --key key.pem - < envelope.b64",
            ],
            ok="the plaintext was written",
            fail="the envelope is for another key, or does not decrypt",
            usage="the key or the envelope is malformed",
            env="a file cannot be read or written",
            topic="kms-client",
        ),
    )
    decrypt.add_argument(
        "--key", required=True, metavar="KEY.pem", help="RSA private key, PKCS#1 or PKCS#8 PEM"
    )
    decrypt.add_argument("blob", metavar="BLOB", help="envelope file, raw or base64; - for stdin")
    decrypt.add_argument(
        "--out", metavar="FILE", help="write the plaintext here (mode 0600) instead of stdout"
    )
    decrypt.set_defaults(handler=_run_decrypt)


def _load_key(path: str) -> RecipientKey:
    data = read_input(path, what="key", max_size=_MAX_KEY_FILE)
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise invalid_input(f"{path}: the key is encrypted; decrypt it first") from None
    except ValueError:
        raise invalid_input(f"{path}: not a PEM private key (PKCS#1 or PKCS#8)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise invalid_input(f"{path}: not an RSA private key")
    try:
        return RecipientKey.from_private_key(key)
    except ValueError as exc:
        raise invalid_input(f"{path}: {exc}") from None


def _write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".attested-", suffix=".tmp")
    except OSError as exc:
        raise env_error(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp creates it with mode 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise env_error(f"cannot write {path}: {exc.strerror or exc}") from None


def _run_decrypt(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    raw = read_input(args.blob, what="envelope", max_size=2 * MAX_ENVELOPE_SIZE)
    blob = binary_or_base64(raw, looks_binary=b"\x30")
    try:
        plaintext = open_envelope(blob, key)
    except MalformedEnvelope as exc:
        raise invalid_input(f"{args.blob} is not a KMS envelope: {exc}") from None
    except (EnvelopeNotForRecipient, EnvelopeDecryptionError) as exc:
        raise refused(f"cannot open the envelope: {exc}") from None
    if args.out:
        _write_private(args.out, plaintext)
    else:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.buffer.flush()
    return EXIT_OK
