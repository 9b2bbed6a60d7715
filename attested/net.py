"""Endpoint addresses for everything that crosses the enclave boundary.

An address is written ``vsock:CID:PORT``, ``tcp:HOST:PORT`` or ``unix:PATH``:

* ``vsock:3:8000``: CID 3 (the parent, as seen from an enclave), port 8000;
  ``vsock:ANY:8000`` listens on every CID.
* ``tcp:127.0.0.1:3128``, ``tcp:[::1]:3128``, ``tcp:kms.us-east-1.amazonaws.com:443``.
* ``unix:/run/attested/api.sock``.

On a laptop or in CI, ``tcp:127.0.0.1:PORT`` stands in for every vsock address: the
code path is the same, only the address family differs.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

__all__ = ["Address", "VMADDR_CID_ANY", "VMADDR_CID_HOST", "is_loopback", "parse_address"]

VMADDR_CID_ANY = 0xFFFFFFFF
VMADDR_CID_HOST = 3
"""The parent instance's CID as seen from inside a Nitro enclave."""

_MAX_CID = 0xFFFFFFFF
_MAX_PORT_VSOCK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A parsed endpoint address.

    Attributes:
        kind: ``"vsock"``, ``"tcp"`` or ``"unix"``.
        host: TCP host name or IP literal (``None`` otherwise).
        cid: vsock context id (``None`` otherwise); :data:`VMADDR_CID_ANY` for ``ANY``.
        port: TCP or vsock port (``None`` for unix).
        path: unix socket path (``None`` otherwise).
    """

    kind: Literal["vsock", "tcp", "unix"]
    host: str | None = None
    cid: int | None = None
    port: int | None = None
    path: str | None = None

    @property
    def family(self) -> socket.AddressFamily:
        """The socket address family."""
        if self.kind == "unix":
            return socket.AF_UNIX
        if self.kind == "vsock":
            family = getattr(socket, "AF_VSOCK", None)
            if family is None:
                raise OSError("AF_VSOCK is not available on this platform")
            return socket.AddressFamily(family)
        assert self.host is not None  # noqa: S101 - tcp addresses always have a host
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def sockaddr(self) -> tuple[str, int] | tuple[int, int] | str:
        """The address in the form ``socket.bind``/``connect`` take for this family."""
        if self.kind == "unix":
            assert self.path is not None  # noqa: S101
            return self.path
        assert self.port is not None  # noqa: S101
        if self.kind == "vsock":
            assert self.cid is not None  # noqa: S101
            return (self.cid, self.port)
        assert self.host is not None  # noqa: S101
        return (self.host, self.port)

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "vsock":
            cid = "ANY" if self.cid == VMADDR_CID_ANY else str(self.cid)
            return f"vsock:{cid}:{self.port}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``).

    Other host names are not resolved: a name is loopback only if it is ``localhost``.
    """
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(text: str, *, maximum: int, spec: str) -> int:
    if not (text.isascii() and text.isdigit()):  # "²".isdigit(), and int("٨٠") == 80
        raise ValueError(f"{spec!r}: port {text!r} is not a number")
    port = int(text)
    if not 0 <= port <= maximum:
        raise ValueError(f"{spec!r}: port {port} is out of range")
    return port


def parse_address(spec: str) -> Address:
    """Parse ``vsock:CID:PORT``, ``tcp:HOST:PORT`` or ``unix:PATH``.

    Raises:
        ValueError: the text is not one of these forms.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"{spec!r}: expected vsock:CID:PORT, tcp:HOST:PORT or unix:PATH")
    if kind == "unix":
        if "\x00" in rest:
            raise ValueError(f"{spec!r}: a unix socket path cannot contain NUL")
        return Address(kind="unix", path=rest)
    if kind == "vsock":
        cid_text, sep, port_text = rest.partition(":")
        if not sep:
            raise ValueError(f"{spec!r}: expected vsock:CID:PORT")
        if cid_text.upper() == "ANY":
            cid = VMADDR_CID_ANY
        elif cid_text.isascii() and cid_text.isdigit() and int(cid_text) <= _MAX_CID:
            cid = int(cid_text)
        else:
            raise ValueError(f"{spec!r}: CID must be a number or ANY")
        return Address(
            kind="vsock", cid=cid, port=_port(port_text, maximum=_MAX_PORT_VSOCK, spec=spec)
        )
    if kind == "tcp":
        if rest.startswith("["):
            host, sep, port_text = rest[1:].partition("]:")
            if not sep:
                raise ValueError(f"{spec!r}: expected tcp:[IPV6]:PORT")
        else:
            host, sep, port_text = rest.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"{spec!r}: expected tcp:HOST:PORT (IPv6 in brackets)")
        if not host:
            raise ValueError(f"{spec!r}: empty host")
        return Address(kind="tcp", host=host, port=_port(port_text, maximum=65535, spec=spec))
    raise ValueError(f"{spec!r}: unknown address kind {kind!r} (vsock, tcp or unix)")
