"""The simulated NSM's state directory: one root shared by several processes.

Layout of ``DIR``:

``root.pem``
    The root certificate. The only file other tools read (``attested verify --root
    DIR/root.pem``, the KMS emulator). Mode 0644.
``root-key.pem``
    The root's private key, PKCS#8 PEM, unencrypted, mode 0600. Anyone who reads it can
    make documents that verify against ``root.pem``; that is all it protects.
``.lock``
    Taken with :func:`fcntl.flock` while the root is read or created.

``DIR`` itself is created with mode 0700. Creation is safe against processes racing:
the first to take the lock creates the key and then the certificate, each written to a
temporary file and renamed into place, so ``root.pem`` never appears half written and
never appears before its key. Intermediate CAs and signing certificates are not stored:
each process makes its own under the shared root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from attested.errors import ConfigurationError
from attested.simulator._pki import CertifiedKey, build_root

__all__ = ["ROOT_CERT_FILE", "ROOT_KEY_FILE", "load_or_create_root"]

ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root-key.pem"
_LOCK_FILE = ".lock"
_MAX_FILE_SIZE = 64 * 1024


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    fd = os.open(state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(_MAX_FILE_SIZE + 1)
    if len(data) > _MAX_FILE_SIZE:
        raise ConfigurationError(f"{path} is larger than {_MAX_FILE_SIZE} bytes")
    return data


def _load(state_dir: Path) -> CertifiedKey:
    key_path, cert_path = state_dir / ROOT_KEY_FILE, state_dir / ROOT_CERT_FILE
    mode = key_path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigurationError(
            f"{key_path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {key_path}"
        )
    try:
        key = load_pem_private_key(_read(key_path), password=None)
        certificate = x509.load_pem_x509_certificate(_read(cert_path))
    except ValueError as exc:
        raise ConfigurationError(
            f"the simulated NSM state in {state_dir} is unreadable ({exc}); delete the "
            "directory to start over"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
        certificate.public_key()
    ):
        raise ConfigurationError(
            f"{key_path} does not belong to {cert_path}; delete {state_dir} to start over"
        )
    return CertifiedKey(certificate, key)


def load_or_create_root(state_dir: str | os.PathLike[str], *, now: datetime) -> CertifiedKey:
    """Load the simulated root from ``state_dir``, creating the directory and root if needed.

    Args:
        state_dir: the state directory (created with mode 0700 if missing).
        now: the time a new root must be valid at (it starts an hour earlier).

    Returns:
        The root certificate and its private key.

    Raises:
        ConfigurationError: the directory cannot be created or written, the key file is
            readable by others, or the files are damaged or do not match.
    """
    directory = Path(state_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(directory):
            key_exists = (directory / ROOT_KEY_FILE).exists()
            cert_exists = (directory / ROOT_CERT_FILE).exists()
            if key_exists and cert_exists:
                return _load(directory)
            if cert_exists:
                raise ConfigurationError(
                    f"{directory / ROOT_CERT_FILE} exists without its key; delete {directory} "
                    "to start over"
                )
            # No root yet (or a creator died between the two writes): make one. The key
            # goes first, so root.pem never exists without it.
            root = build_root(now=now)
            key_pem = root.private_key.private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
            _write_atomically(directory / ROOT_KEY_FILE, key_pem, 0o600)
            _write_atomically(
                directory / ROOT_CERT_FILE, root.certificate.public_bytes(Encoding.PEM), 0o644
            )
            return root
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use {directory} as the simulated NSM state directory: {exc.strerror or exc}"
        ) from exc
