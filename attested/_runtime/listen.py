"""Listening sockets: one way to open a Unix, loopback TCP or vsock listener.

* Unix: the file mode is set at bind time through the umask (no window in which the
  socket is more open than asked), a socket file left by a dead server is removed, a
  live server's socket or any other file is never replaced, and on close the file is
  removed only if it is still the one this listener made.
* TCP: ``SO_REUSEADDR``, IPv4 or IPv6 by the host literal (see :class:`attested.net.Address`).
* vsock: ``AF_VSOCK`` where the platform has it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading

from attested.net import Address

__all__ = ["Listener", "make_socket_directory", "open_listener", "remove_stale_socket"]

_BACKLOG = 256
_PROBE_TIMEOUT = 1.0
# The umask is process-wide: binds that change it must not overlap.
_UMASK_LOCK = threading.Lock()


class Listener:
    """A bound, listening stream socket.

    Attributes:
        sock: the listening socket (blocking).
        address: the address actually bound: a TCP or vsock port of 0 is replaced by the
            port the system chose; the host and CID are kept as asked.
    """

    def __init__(self, sock: socket.socket, address: Address, created: tuple[int, int] | None):
        self.sock = sock
        self.address = address
        self._created = created  # (st_dev, st_ino) of the Unix socket file we made
        self._closed = False

    def close(self) -> None:
        """Close the socket and remove the Unix socket file this listener made. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        path = self.address.path
        if self.address.kind != "unix" or not path or self._created is None:
            return
        try:
            found = os.lstat(path)
        except OSError:
            return
        if (found.st_dev, found.st_ino) == self._created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __repr__(self) -> str:
        return f"Listener({self.address})"


def open_listener(
    address: Address, *, socket_mode: int | None = 0o660, backlog: int = _BACKLOG
) -> Listener:
    """Bind and listen on ``address``.

    Args:
        address: ``tcp:``, ``unix:`` or ``vsock:``.
        socket_mode: file mode of a Unix socket (ignored otherwise); ``None`` leaves it
            to the process umask.
        backlog: the listen queue length.

    Raises:
        OSError: the address cannot be bound (in use, no permission, no such family);
            for a Unix path, also when it is not a socket (``EEXIST``) or a running
            server owns it (``EADDRINUSE``).
    """
    if address.kind == "unix":
        return _open_unix(address, socket_mode, backlog)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address.sockaddr())
        sock.listen(backlog)
        port = int(sock.getsockname()[1])
    except BaseException:
        sock.close()
        raise
    if address.kind == "vsock":
        return Listener(sock, Address(kind="vsock", cid=address.cid, port=port), None)
    return Listener(sock, Address(kind="tcp", host=address.host, port=port), None)


def _open_unix(address: Address, mode: int | None, backlog: int) -> Listener:
    path = address.path
    if not path:
        raise OSError(errno.EINVAL, "a unix listener needs a path")
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if mode is None:
            sock.bind(path)
        else:
            with _UMASK_LOCK:
                old = os.umask(0o777 ^ (mode & 0o777))
                try:
                    sock.bind(path)
                finally:
                    os.umask(old)
            os.chmod(path, mode)
        created = os.lstat(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Listener(sock, address, (created.st_dev, created.st_ino))


def make_socket_directory(path: str, *, mode: int = 0o755) -> str | None:
    """Create the directory of the Unix socket ``path`` if it is missing: that one only.

    ``/run/attested`` usually does not exist in a fresh enclave image, so the socket's
    own directory is made; its parents are not, so that a typo (``/nonexistent/dir``)
    fails instead of silently growing a tree.

    Args:
        path: the socket's path.
        mode: the new directory's mode (before the umask).

    Returns:
        The directory created, or ``None`` when it existed (or ``path`` has none).

    Raises:
        OSError: ``ENOENT`` naming the missing parent, or the error of ``mkdir``.
    """
    directory = os.path.dirname(path)
    if not directory or os.path.isdir(directory):
        return None
    try:
        os.mkdir(directory, mode)
    except FileExistsError:
        return None  # made meanwhile; if it is not a directory, bind will say so
    except FileNotFoundError:
        parent = os.path.dirname(directory) or "."
        raise FileNotFoundError(
            errno.ENOENT,
            f"the directory {parent} does not exist (only the socket's own directory, "
            f"{directory}, is created)",
        ) from None
    return directory


def remove_stale_socket(path: str) -> None:
    """Remove a Unix socket file left by a dead server; refuse anything else.

    A socket file is stale when connecting to it is refused. A file that is not a
    socket, and a socket a live server answers on, are left alone; a probe that fails
    otherwise (no permission, timeout) raises rather than remove what it could not check.

    Raises:
        OSError: ``EEXIST`` if the path is not a socket, ``EADDRINUSE`` if a running
            server listens there, or the probe's own error.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(_PROBE_TIMEOUT)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by another running server")
