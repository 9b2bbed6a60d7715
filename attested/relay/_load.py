"""Reading the allowlist file (the only file I/O of the egress rules)."""

from __future__ import annotations

import logging
from pathlib import Path

from attested.errors import ConfigurationError
from attested.net import Address, is_loopback
from attested.relay._allowlist import MAX_ALLOWLIST_FILE_SIZE, Allowlist

__all__ = ["DEFAULT_ALLOWLIST_PATH", "load_allowlist", "warn_if_exposed"]

DEFAULT_ALLOWLIST_PATH = Path("/etc/nitro_enclaves/vsock-proxy.yaml")


def load_allowlist(path: str | Path) -> Allowlist:
    """Read and parse an allowlist file in vsock-proxy's YAML format.

    Args:
        path: the file, for example ``/etc/nitro_enclaves/vsock-proxy.yaml``.

    Returns:
        The allowlist.

    Raises:
        ConfigurationError: the file cannot be read, is over 1 MiB, or is not a valid
            allowlist (see :meth:`Allowlist.from_yaml`).
    """
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_ALLOWLIST_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read allowlist {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    try:
        return Allowlist.from_yaml(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def warn_if_exposed(listen: Address, name: str, logger: logging.Logger) -> None:
    """Warn when a parent egress listens on TCP beyond loopback.

    Anyone who can reach such a listener can use the allowlist; on a parent instance
    the egress belongs on vsock.
    """
    if listen.kind != "tcp" or is_loopback(listen.host):
        return
    logger.warning(
        "%s listens on %s: anyone who can reach it can use the allowlist; "
        "on a parent instance, listen on vsock",
        name,
        listen,
    )
