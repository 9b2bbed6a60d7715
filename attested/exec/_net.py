"""Step 1: the enclave's own network: ``lo`` up with 127.0.0.1/8, and the hosts file.

An enclave boots with ``lo`` down: nothing on 127.0.0.1 (the egress proxy, the local
API's TCP listener, the app's port) is reachable until it is up. :func:`bring_up_loopback`
does what ``ip addr add 127.0.0.1/8 dev lo; ip link set lo up`` does, with ioctls (no
``ip`` binary in the image); it needs ``CAP_NET_ADMIN`` only when there is something to
change. :func:`write_hosts` puts the ``[[hosts]]`` names into the hosts file, between
marker lines, so that a second run replaces its own block and keeps the rest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

from attested.exec._config import HostEntry
from attested.exec._errors import SetupError

__all__ = ["HOSTS_BEGIN", "HOSTS_END", "bring_up_loopback", "loopback_state", "write_hosts"]

log = logging.getLogger("attested.exec")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCGIFADDR = 0x8915
_SIOCSIFADDR = 0x8916
_SIOCSIFNETMASK = 0x891C
_IFF_UP = 0x1
_IFNAME = b"lo"
_MAX_HOSTS_FILE = 1024 * 1024

HOSTS_BEGIN = "# BEGIN attested exec [[hosts]]"
HOSTS_END = "# END attested exec [[hosts]]"


def _ifreq_address(address: str) -> bytes:
    sockaddr = struct.pack("=H2s4s8x", socket.AF_INET, b"", socket.inet_aton(address))
    return struct.pack("16s16s8x", _IFNAME, sockaddr)


def loopback_state() -> tuple[bool, str | None]:
    """Whether ``lo`` is up, and its IPv4 address (``None``: none). Needs no privilege."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        answer = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", _IFNAME, 0))
        up = bool(struct.unpack_from("16sh", answer)[1] & _IFF_UP)
        try:
            answer = fcntl.ioctl(sock, _SIOCGIFADDR, _ifreq_address("0.0.0.0"))  # noqa: S104 - a query
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            return up, None
        return up, socket.inet_ntoa(answer[20:24])


def bring_up_loopback() -> bool:
    """Give ``lo`` 127.0.0.1/8 and bring it up, unless it is so already.

    Returns:
        ``True`` if something was changed, ``False`` if ``lo`` was up with 127.0.0.1.

    Raises:
        SetupError: it had to change and could not (``CAP_NET_ADMIN`` is missing).
    """
    try:
        up, address = loopback_state()
        if up and address == "127.0.0.1":
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if address != "127.0.0.1":
                fcntl.ioctl(sock, _SIOCSIFADDR, _ifreq_address("127.0.0.1"))
                fcntl.ioctl(sock, _SIOCSIFNETMASK, _ifreq_address("255.0.0.0"))
            answer = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", _IFNAME, 0))
            flags = struct.unpack_from("16sh", answer)[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", _IFNAME, flags | _IFF_UP))
    except OSError as exc:
        hint = " (it needs CAP_NET_ADMIN: run as root in the enclave)" if _denied(exc) else ""
        raise SetupError(
            f"cannot bring the loopback interface up with 127.0.0.1/8: {exc.strerror or exc}{hint}",
            step="loopback",
        ) from exc
    log.info("loopback interface lo is up with 127.0.0.1/8")
    return True


def _denied(exc: OSError) -> bool:
    return exc.errno in (errno.EPERM, errno.EACCES)


def write_hosts(path: Path, entries: Sequence[HostEntry]) -> None:
    """Put ``entries`` into the hosts file at ``path``, keeping its other lines.

    The block between :data:`HOSTS_BEGIN` and :data:`HOSTS_END` is replaced; when no line
    maps ``localhost``, ``127.0.0.1 localhost`` is added (an enclave image often ships an
    empty hosts file, and there is no DNS). The file is replaced atomically (a temporary
    file and a rename, keeping its mode), or rewritten in place where it is a mount point
    (a container's bind-mounted ``/etc/hosts``).

    Raises:
        SetupError: the file cannot be read or written.
    """
    try:
        kept = _kept_lines(path)
        if not any(_maps_localhost(line) for line in kept):
            kept.append("127.0.0.1\tlocalhost")
        block = [HOSTS_BEGIN, *(f"{entry.address}\t{entry.name}" for entry in entries), HOSTS_END]
        text = "\n".join([*kept, *block]) + "\n"
        _replace(path, text.encode("utf-8"))
    except (OSError, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SetupError(
            f"cannot write the hosts file {path}: {detail}", step="hosts file"
        ) from exc
    log.info("hosts file %s: %d name(s) from [[hosts]]", path, len(entries))


def _kept_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_HOSTS_FILE + 1)
    except FileNotFoundError:
        return []
    if len(data) > _MAX_HOSTS_FILE:
        raise OSError(errno.EFBIG, "larger than 1 MiB")
    kept, inside = [], False
    for line in data.decode("utf-8").splitlines():
        if line.strip() == HOSTS_BEGIN:
            inside = True
        elif line.strip() == HOSTS_END:
            inside = False
        elif not inside:
            kept.append(line)
    return kept


def _maps_localhost(line: str) -> bool:
    fields = line.split("#", 1)[0].split()
    return len(fields) > 1 and "localhost" in fields[1:]


def _replace(path: Path, data: bytes) -> None:
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        try:
            os.replace(temporary, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            with path.open("r+b") as target:  # a mount point: rewrite it in place
                target.write(data)
                target.truncate()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
