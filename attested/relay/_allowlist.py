"""Destination rules for the parent's egress relay (pure: no sockets, files or clock).

Three questions are answered here, and nowhere else:

* Is a host name or IP literal well formed? (:func:`normalize_host`)
* May the enclave reach ``host:port`` at all? (:meth:`Allowlist.permits`)
* May the relay dial an address that a permitted name resolved to?
  (:meth:`Allowlist.may_dial`, using :func:`forbidden_range`)

The allowlist file has vsock-proxy's YAML format, so an existing
``/etc/nitro_enclaves/vsock-proxy.yaml`` works as is::

    allowlist:
    - {address: kms.us-east-1.amazonaws.com, port: 443}
    - {address: 10.0.3.7, port: 8443}

Semantics (stricter than vsock-proxy, see ``docs/relay.md``):

* deny by default; an entry permits exactly one (host, port) pair;
* host names match exactly, case-insensitively, ignoring one trailing dot; there are
  no wildcards (an entry containing ``*`` is refused when the file is loaded);
* an IP literal is reachable only if that IP (with that port) is listed: a listed
  *name* does not make its addresses reachable as literals;
* the addresses a listed name resolves to are dialled unless a rule of
  :data:`attested.relay._ranges.ADDRESS_RULES` refuses them (loopback, link-local
  including the instance metadata service, shared address space, documentation and
  other special-purpose ranges, the AWS ``fd00:ec2::/32`` service range), which would
  let DNS rebind the enclave into the parent's own services. An address in such a range
  is dialled only if it is itself listed with that port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from attested.errors import ConfigurationError
from attested.relay._ranges import IPAddress, forbidden_range

__all__ = [
    "MAX_ALLOWLIST_ENTRIES",
    "MAX_ALLOWLIST_FILE_SIZE",
    "MAX_HOST_LENGTH",
    "AllowEntry",
    "Allowlist",
    "IPAddress",
    "forbidden_range",
    "normalize_host",
]

MAX_ALLOWLIST_FILE_SIZE = 1024 * 1024
MAX_ALLOWLIST_ENTRIES = 4096
MAX_HOST_LENGTH = 253
_MAX_LABEL = 63
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _ip_literal(text: str) -> IPAddress | None:
    if "%" in text:  # IPv6 zone ids name an interface of this host: never a destination
        raise ValueError(f"{text!r}: IPv6 zone ids are not accepted")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(text: str) -> str:
    """Return the canonical form of a host name or IP literal.

    Names are lowercased and lose one trailing dot; they must be ASCII (IDNA names in
    their ``xn--`` form), at most 253 characters, with labels of 1-63 letters, digits,
    hyphens or underscores that neither start nor end with a hyphen. A name whose last
    label is numeric or hexadecimal-looking (``127.1``, ``0x7f.1``) is refused, because
    the C resolver would read it as an IPv4 address. IP literals come back in their
    compressed form (``::1``, ``10.0.0.1``); IPv4 with leading zeros is refused.

    Args:
        text: the host as written (no brackets around IPv6).

    Returns:
        The canonical host.

    Raises:
        ValueError: ``text`` is not a valid host name or IP literal.
    """
    if not text or len(text) > MAX_HOST_LENGTH + 1:
        raise ValueError("host is empty or longer than 253 characters")
    if not text.isascii():
        raise ValueError(f"{text!r}: host names must be ASCII (use the xn-- form)")
    ip = _ip_literal(text)
    if ip is not None:
        return ip.compressed
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"{text!r}: host is empty or longer than 253 characters")
    labels = name.split(".")
    for label in labels:
        if not 1 <= len(label) <= _MAX_LABEL:
            raise ValueError(f"{text!r}: every label needs 1 to 63 characters")
        if not set(label) <= _NAME_CHARS:
            raise ValueError(f"{text!r}: only letters, digits, '-', '_' and '.' are allowed")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError(f"{text!r}: a label cannot start or end with '-'")
    last = labels[-1]
    if last.isdigit() or last.startswith("0x") or ":" in text:
        raise ValueError(f"{text!r}: looks like an IP address but is not a valid one")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowEntry:
    """One ``{address, port}`` entry of the allowlist.

    Attributes:
        host: canonical host name or IP literal (see :func:`normalize_host`).
        port: TCP port, 1-65535.
        ip: the parsed address when ``host`` is an IP literal, else ``None``.
    """

    host: str
    port: int
    ip: IPAddress | None = field(default=None, compare=False)

    @classmethod
    def of(cls, host: str, port: object) -> AllowEntry:
        """Build an entry from a host as written and a port.

        Raises:
            ValueError: the host or the port is not valid.
        """
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is not an integer from 1 to 65535")
        canonical = normalize_host(host)
        return cls(host=canonical, port=port, ip=_ip_literal(canonical))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Allowlist:
    """The set of destinations the parent relay may dial. Deny by default.

    Build with :meth:`from_yaml` (vsock-proxy's file format), :meth:`of` or
    :meth:`from_entries`. Matching is exact: see the module documentation.
    """

    entries: frozenset[AllowEntry]

    @classmethod
    def from_entries(cls, entries: Iterable[AllowEntry]) -> Allowlist:
        """An allowlist holding ``entries``."""
        return cls(frozenset(entries))

    @classmethod
    def of(cls, *destinations: tuple[str, int]) -> Allowlist:
        """An allowlist from ``(host, port)`` pairs.

        Raises:
            ValueError: a host or port is not valid.
        """
        return cls(frozenset(AllowEntry.of(host, port) for host, port in destinations))

    @classmethod
    def from_yaml(cls, data: bytes | str) -> Allowlist:
        """Parse vsock-proxy's allowlist file.

        The document must be a mapping with one key, ``allowlist``, holding a list of
        mappings with exactly the keys ``address`` (string) and ``port`` (integer).

        Args:
            data: the file's content, at most 1 MiB.

        Raises:
            ConfigurationError: the content is not such a document, an entry is not
                valid, or there are more than 4096 entries.
        """
        if len(data) > MAX_ALLOWLIST_FILE_SIZE:
            raise ConfigurationError("allowlist file is larger than 1 MiB")
        try:
            document = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"allowlist is not valid YAML: {_yaml_where(exc)}") from exc
        except (ValueError, RecursionError) as exc:  # PyYAML lets some decode errors out
            raise ConfigurationError("allowlist is not valid YAML") from exc
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: object) -> Allowlist:
        """Build an allowlist from the already-parsed YAML/JSON document.

        Raises:
            ConfigurationError: see :meth:`from_yaml`.
        """
        if not isinstance(document, Mapping):
            raise ConfigurationError("allowlist file must be a mapping with an 'allowlist' key")
        keys = set(document)
        if "allowlist" not in keys:
            hint = " (rename the old 'whitelist' key to 'allowlist')" if "whitelist" in keys else ""
            raise ConfigurationError(f"allowlist file has no 'allowlist' key{hint}")
        if keys != {"allowlist"}:
            extra = ", ".join(sorted(repr(k) for k in keys - {"allowlist"}))
            raise ConfigurationError(f"allowlist file has unknown keys: {extra:.200}")
        items = document["allowlist"]
        if items is None:
            return cls(frozenset())
        if not isinstance(items, list):
            raise ConfigurationError("'allowlist' must be a list of {address, port} entries")
        if len(items) > MAX_ALLOWLIST_ENTRIES:
            raise ConfigurationError(f"allowlist has more than {MAX_ALLOWLIST_ENTRIES} entries")
        return cls(frozenset(_entry(i, item) for i, item in enumerate(items)))

    def permits(self, host: str, port: int) -> bool:
        """Whether the enclave may ask for ``host:port``.

        Args:
            host: canonical host (see :func:`normalize_host`).
            port: destination port.
        """
        return AllowEntry(host=host, port=port) in self.entries

    def may_dial(self, ip: IPAddress, port: int) -> str | None:
        """Whether an address a permitted name resolved to may be dialled.

        Returns:
            ``None`` if it may; otherwise why not (the forbidden range it lies in).
        """
        why = forbidden_range(ip)
        if why is None or AllowEntry(host=ip.compressed, port=port) in self.entries:
            return None
        return why

    def __len__(self) -> int:
        return len(self.entries)


def _entry(index: int, item: object) -> AllowEntry:
    where = f"allowlist entry {index + 1}"
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"{where}: expected {{address: HOST, port: PORT}}")
    keys = set(item)
    if keys != {"address", "port"}:
        raise ConfigurationError(f"{where}: needs exactly the keys 'address' and 'port'")
    address: Any = item["address"]
    port: Any = item["port"]
    if not isinstance(address, str):
        raise ConfigurationError(f"{where}: 'address' must be a string")
    if "*" in address:
        raise ConfigurationError(f"{where}: wildcards are not supported ({address!r:.80})")
    try:
        return AllowEntry.of(address, port)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc!s:.200}") from exc


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    if mark is None:
        return str(problem)[:200]
    return f"{str(problem)[:200]} at line {mark.line + 1}, column {mark.column + 1}"
