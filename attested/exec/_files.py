"""Secret files: created whole with their final mode, in memory-backed directories only.

A secret file is written to a new temporary file in the target's own directory, created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and the final mode (0400 or 0440) from the first
instant, given its owner with ``fchown``, then renamed over the target. So the file is
never readable with a wider mode, never half-written under its name, and a link planted
at the temporary name is not followed. The directory must be one nobody else can write
to (owned by root or by this user, not group- or world-writable), so nobody can swap the
file between our write and the app's read; a missing directory is created 0755.

Where the directory is not on tmpfs or ramfs (``statfs``), the plaintext would reach a
disk: ``[exec] tmpfs = "require"`` (the default) refuses, ``"warn"`` logs a warning. In
a Nitro enclave the root file system is in memory, so any path qualifies.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import stat

from attested.exec._errors import SetupError

__all__ = ["RAMFS_MAGIC", "TMPFS_MAGIC", "filesystem_type", "remove_files", "write_secret_file"]

log = logging.getLogger("attested.exec")

TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
_STATFS_SIZE = 256  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first


def filesystem_type(path: str) -> int:
    """The ``f_type`` that ``statfs(2)`` reports for ``path`` (the file system's magic).

    Raises:
        OSError: ``statfs`` failed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(_STATFS_SIZE)
    if libc.statfs(os.fsencode(path), buffer) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), path)
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


def _prepare_directory(directory: str, tmpfs: str, secret: str) -> None:
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        info = os.stat(directory)
        kind = filesystem_type(directory)
    except OSError as exc:
        raise SetupError(
            f"cannot use the directory {directory}: {exc.strerror or exc}",
            step="secret file",
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SetupError(f"{directory} is not a directory", step="secret file")
    if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        raise SetupError(
            f"the directory {directory} can be written by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}); use a directory "
            "only root or this user can write to, such as /run/secrets",
            step="secret file",
        )
    if kind not in (TMPFS_MAGIC, RAMFS_MAGIC):
        message = (
            f"the directory {directory} is not on tmpfs or ramfs "
            f"(file system magic 0x{kind:x}): the plaintext would be written to a disk"
        )
        if tmpfs == "require":
            raise SetupError(
                message + '; mount a tmpfs there, or set [exec] tmpfs = "warn"',
                step="secret file",
            )
        log.warning('secret %r: %s ([exec] tmpfs = "warn")', secret, message)


def write_secret_file(
    path: str,
    data: bytes | bytearray,
    *,
    mode: int,
    owner: tuple[int, int] | None,
    tmpfs: str,
    secret: str,
) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (and ``owner``) from the start.

    Args:
        path: the absolute target path.
        data: the plaintext.
        mode: 0o400 or 0o440.
        owner: ``(uid, gid)`` (``-1``: unchanged), or ``None``.
        tmpfs: ``require`` or ``warn``, for a directory not in memory.
        secret: the secret's name, for messages.

    Raises:
        SetupError: the directory is not safe or not in memory (with ``require``), or the
            file cannot be written or given its owner.
    """
    directory = os.path.dirname(path) or "/"
    _prepare_directory(directory, tmpfs, secret)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(temporary, flags, mode)
        try:
            os.fchmod(descriptor, mode)  # exactly mode, whatever the umask took away
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if owner is not None:
                os.fchown(descriptor, *owner)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        hint = ""
        if owner is not None and exc.errno == errno.EPERM:  # from fchown
            hint = " (setting the owner needs root)"
        raise SetupError(
            f"cannot write {path}: {exc.strerror or exc}{hint}",
            step="secret file",
        ) from exc


def remove_files(paths: list[str]) -> None:
    """Remove the secret files written (at exit, or when start-up fails)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
