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

``DIR`` itself is created with mode 0700 (and any missing parents too). Like ssh's
``StrictModes``, a directory another local user could change is refused, with its path and
mode: ``DIR`` or one of its parents owned by someone other than the user or root, ``DIR``
writable by its group or others, a parent writable by them without the sticky bit (they
could rename ``DIR`` away and put their own in its place), and files inside owned by
someone else, writable by others, or not regular files. Otherwise another user could swap
the root that the emulator and the service trust. Creation is safe against processes racing:
the first to take the lock creates the key and then the certificate, each written to a
temporary file and renamed into place, so ``root.pem`` never appears half written and
never appears before its key. Intermediate CAs and signing certificates are not stored:
each process makes its own under the shared root.
"""

from __future__ import annotations

import contextlib
import errno
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

__all__ = ["ROOT_CERT_FILE", "ROOT_KEY_FILE", "load_or_create_root", "read_root_certificate"]

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


def _owner_problem(path: Path, info: os.stat_result) -> str | None:
    if info.st_uid in (os.geteuid(), 0):
        return None
    return (
        f"{path} is owned by another user (uid {info.st_uid}): that user could replace the "
        "simulated root; use a directory of your own"
    )


def _check_directory(path: Path, *, parent: bool) -> None:
    """Refuse a directory another local user could change (ssh's ``StrictModes``)."""
    info = os.stat(path)
    problem = _owner_problem(path, info)
    mode = stat.S_IMODE(info.st_mode)
    if problem is None and mode & 0o022 and not (parent and mode & stat.S_ISVTX):
        who = "others" if mode & 0o002 else "its group"
        problem = (
            f"{path} is writable by {who} (mode {mode:04o}): another user could replace the "
            f"simulated root; run: chmod go-w {path}"
        )
    if problem is not None:
        raise ConfigurationError(f"unsafe simulated NSM state directory: {problem}")


def _check_state_dir(state_dir: Path) -> None:
    """Check ``state_dir`` and every directory above it, as written and as resolved."""
    if not state_dir.is_dir():
        raise ConfigurationError(
            f"cannot use {state_dir} as the simulated NSM state directory: not a directory"
        )
    _check_directory(state_dir, parent=False)
    seen: set[Path] = set()
    for path in (Path(os.path.abspath(state_dir)), Path(os.path.realpath(state_dir))):
        for above in path.parents:
            if above not in seen:
                seen.add(above)
                _check_directory(above, parent=True)


def _read(path: Path, *, private: bool = False) -> bytes:
    """Read a file of the state directory: a regular file, ours, not writable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigurationError(
                f"unsafe simulated NSM state: {path} is a symbolic link"
            ) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        problem = _owner_problem(path, info)
        if not stat.S_ISREG(info.st_mode):
            problem = f"{path} is not a regular file"
        elif problem is None and private and mode & 0o077:
            problem = f"{path} is readable by others (mode {mode:04o}); run: chmod 600 {path}"
        elif problem is None and mode & 0o022:
            problem = (
                f"{path} is writable by others (mode {mode:04o}): another user could replace "
                f"the simulated root; run: chmod go-w {path}"
            )
        if problem is not None:
            raise ConfigurationError(f"unsafe simulated NSM state: {problem}")
        data = handle.read(_MAX_FILE_SIZE + 1)
    if len(data) > _MAX_FILE_SIZE:
        raise ConfigurationError(f"{path} is larger than {_MAX_FILE_SIZE} bytes")
    return data


def _load(state_dir: Path) -> CertifiedKey:
    key_path, cert_path = state_dir / ROOT_KEY_FILE, state_dir / ROOT_CERT_FILE
    key_pem = _read(key_path, private=True)
    cert_pem = _read(cert_path)
    try:
        key = load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(cert_pem)
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
        ConfigurationError: the directory cannot be created or written; it, a directory
            above it or a file in it could be changed by another local user (see the
            module's documentation); the key file is readable by others; or the files are
            damaged or do not match.
    """
    directory = Path(state_dir)
    try:
        _make_private_directories(directory)
        _check_state_dir(directory)
        with _locked(directory):
            key_exists = os.path.lexists(directory / ROOT_KEY_FILE)
            cert_exists = os.path.lexists(directory / ROOT_CERT_FILE)
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


def read_root_certificate(state_dir: str | os.PathLike[str]) -> bytes:
    """``state_dir/root.pem``, after the same checks as :func:`load_or_create_root`.

    For processes that only trust the root (the KMS emulator's ``--simulated-state``):
    nothing is created.

    Raises:
        ConfigurationError: the directory or ``root.pem`` is missing, could be changed by
            another local user, or ``root.pem`` is larger than 64 KiB.
    """
    directory = Path(state_dir)
    try:
        _check_state_dir(directory)
        return _read(directory / ROOT_CERT_FILE)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {directory / ROOT_CERT_FILE}: {exc.strerror or exc}"
        ) from exc


def _make_private_directories(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (``mkdir -p -m 700``)."""
    missing: list[Path] = []
    for path in (directory, *directory.parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process was first
            path.mkdir(mode=0o700)
