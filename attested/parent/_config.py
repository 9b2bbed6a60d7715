"""The ``attested parent`` configuration file: TOML in, a frozen :class:`ParentConfig` out.

Every section is optional, at least one is required, and unknown keys are errors. The
loader reads the whole file and reports every problem it finds at once
(:class:`~attested.errors.ConfigError` with ``.problems``), each message naming its key
(``egress.listen: ...``). Relative paths are taken from the configuration file's
directory. See ``docs/parent.md`` for the reference.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from attested import _toml
from attested.errors import ConfigError, ConfigurationError, MalformedError
from attested.kms.credentials import _normalise_peer
from attested.net import Address, parse_address
from attested.relay import AllowEntry, Allowlist, RelayOptions, load_allowlist
from attested.relay._allowlist import _entry, normalize_host
from attested.relay._logs import DEFAULT_MAX_LINE

__all__ = [
    "CredentialsConfig",
    "EgressConfig",
    "IngressConfig",
    "LogsConfig",
    "ParentConfig",
    "load_parent_config",
    "parse_parent_config",
]

MAX_CONFIG_SIZE = 1024 * 1024
"""A configuration file larger than this is refused unread."""
MIN_MAX_LINE = 128
MAX_DNS_CACHE = 60.0
MAX_INGRESS = 64

_SECTIONS = ("egress", "credentials", "ingress", "logs")
_OPTION_KEYS = ("max_connections", "connect_timeout", "idle_timeout")
_EGRESS_KEYS = ("listen", "allowlist", "allow", "hosts", "dns_cache", "ip_version", *_OPTION_KEYS)
_CREDENTIALS_KEYS = ("listen", "source", "allowed_peers", "imds_url")
_INGRESS_KEYS = ("listen", "to", "allow_parent_target", *_OPTION_KEYS)
_FIRST_ENCLAVE_CID = 4  # 0-2 are reserved by vsock, 3 is the parent instance itself
_LOGS_KEYS = ("listen", "out", "max_line")
CredentialSourceName = Literal["imds", "environment"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressConfig:
    """``[egress]``: the parent end of the enclave's egress tunnels.

    Attributes:
        listen: where the enclave's ``enclave-egress`` connects (``vsock:ANY:8000``).
        allowlist: the merged allowlist: the file's entries and the inline ``allow`` ones.
        allowlist_file: the vsock-proxy YAML file it was read from, if any.
        hosts: static name to addresses overrides, consulted before DNS. The allowlist
            still applies to the name, and the rules for answers still apply to the
            addresses (a loopback answer must itself be listed).
        dns_cache: seconds to keep DNS answers (0: resolve per connection).
        ip_version: 4 or 6 to use only that family, ``None`` for both.
        options: connection caps and timeouts of this listener.
    """

    listen: Address
    allowlist: Allowlist
    allowlist_file: Path | None = None
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    dns_cache: float = 0.0
    ip_version: Literal[4, 6] | None = None
    options: RelayOptions = field(default_factory=RelayOptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsConfig:
    """``[credentials]``: the parent's role credentials, handed to allowed enclaves.

    Attributes:
        listen: where the enclave's ``ParentCredentials`` connects (``vsock:ANY:8001``).
        source: ``"imds"`` (the instance role through IMDSv2) or ``"environment"``
            (botocore's chain: environment variables, profiles, container, IMDS).
        allowed_peers: enclave CIDs for a vsock listener, IP addresses for a tcp one
            (empty for tcp: loopback only).
        imds_url: the metadata service for ``"imds"`` (``None``: 169.254.169.254).
    """

    listen: Address
    source: CredentialSourceName = "imds"
    allowed_peers: tuple[str | int, ...] = ()
    imds_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressConfig:
    """One ``[[ingress]]`` forward: raw bytes from ``listen`` to ``to``.

    Attributes:
        listen: where clients connect on the parent (``tcp:0.0.0.0:8443``).
        to: the enclave's listener (``vsock:16:8443``).
        options: connection caps and timeouts of this listener.
        allow_parent_target: accept a ``to`` on the parent itself (``tcp:``, ``unix:``,
            or vsock CID 0-3), for testing without an enclave, where loopback TCP stands
            in for vsock. Never with a vsock ``listen``: that would let an enclave reach
            a parent-side port without the egress allowlist.

    Raises:
        ConfigError: ``to`` is not an enclave's vsock address and ``allow_parent_target``
            is not set, or it is set with a vsock ``listen``.
    """

    listen: Address
    to: Address
    options: RelayOptions = field(default_factory=RelayOptions)
    allow_parent_target: bool = False

    def __post_init__(self) -> None:
        problems = _ingress_problems(self.listen, self.to, self.allow_parent_target)
        if problems:
            raise ConfigError([f"ingress.{key}: {message}" for key, message in problems])


def _is_enclave(address: Address) -> bool:
    """Whether ``address`` is an enclave's vsock listener (not ANY, not the parent's CIDs)."""
    return (
        address.kind == "vsock"
        and address.cid is not None
        and _FIRST_ENCLAVE_CID <= address.cid < 0xFFFFFFFF
    )


def _ingress_problems(
    listen: Address | None, to: Address, allow_parent_target: bool
) -> list[tuple[str, str]]:
    """(key, message) for each rule an ingress forward breaks.

    Ingress carries clients into the enclave. A ``to`` on the parent side (``tcp:``,
    ``unix:``, vsock CID 0-3) turns the forward into a door to the parent's own ports,
    and with a vsock ``listen`` the enclave is the one that walks through it, past the
    egress allowlist. See ADR 0069.
    """
    if to.kind == "vsock" and to.cid == 0xFFFFFFFF:
        return [("to", "a destination needs the enclave CID, not ANY")]
    if _is_enclave(to):
        return []
    if not allow_parent_target:
        return [
            (
                "to",
                f"{to} is not an enclave (vsock:CID:PORT with CID 4 or more): a forward to "
                "the parent's own ports is refused; set allow_parent_target = true only to "
                "test without an enclave, where loopback TCP stands in for vsock",
            )
        ]
    if listen is not None and listen.kind == "vsock":
        return [
            (
                "allow_parent_target",
                f"not with a vsock listen ({listen}): an enclave could then reach {to} on "
                "the parent without the egress allowlist; list it in [egress] instead",
            )
        ]
    return []


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsConfig:
    """``[logs]``: the sink for the enclave's JSON log lines.

    Attributes:
        listen: where the enclave's ``VsockLogHandler`` connects (``vsock:ANY:8090``).
        out: the file lines are appended to (reopened on SIGHUP), ``None`` for stdout.
        max_line: longest line kept whole.
    """

    listen: Address
    out: Path | None = None
    max_line: int = DEFAULT_MAX_LINE


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentConfig:
    """Everything ``attested parent`` runs; build with :func:`load_parent_config`.

    Attributes:
        egress: the egress relay, if configured.
        credentials: the credential server, if configured.
        ingress: the ingress forwards, in file order (listeners ``ingress-0``, ...).
        logs: the log sink, if configured.
        source: the file this was read from, if any.
    """

    egress: EgressConfig | None = None
    credentials: CredentialsConfig | None = None
    ingress: tuple[IngressConfig, ...] = ()
    logs: LogsConfig | None = None
    source: Path | None = None

    def listener_names(self) -> tuple[str, ...]:
        """The names of the listeners this configuration starts, in start order."""
        names = ["egress"] if self.egress else []
        names += ["credentials"] if self.credentials else []
        names += [f"ingress-{i}" for i in range(len(self.ingress))]
        names += ["logs"] if self.logs else []
        return tuple(names)


def load_parent_config(path: str | Path) -> ParentConfig:
    """Read and check a parent configuration file.

    Args:
        path: the TOML file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has problems; ``problems``
            lists every one. When the file itself cannot be read, ``__cause__`` is the
            ``OSError``.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_SIZE + 1)
    except OSError as exc:
        raise ConfigError(
            [f"cannot read the configuration file: {exc.strerror or exc}"], source=str(path)
        ) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(
            ["cannot read the configuration file: the path holds a NUL"], source=str(path)
        ) from exc
    return _parse(data, base=path.parent, source=path)


def parse_parent_config(
    text: str, *, base: Path | None = None, source: Path | None = None
) -> ParentConfig:
    """Check a parent configuration given as TOML text.

    Args:
        text: the TOML document.
        base: the directory relative paths are taken from (default: the current one).
        source: the file name to mention in errors and keep in the result.

    Raises:
        ConfigError: the text is not TOML or has problems (all of them are listed).
    """
    return _parse(text, base=base, source=source)


def _parse(data: bytes | str, *, base: Path | None, source: Path | None) -> ParentConfig:
    where = None if source is None else str(source)
    try:
        document = _toml.loads(data, max_size=MAX_CONFIG_SIZE)
    except MalformedError as exc:
        raise ConfigError([f"the configuration file is {exc}"], source=where) from None
    problems: list[str] = []
    config = _Reader(problems, base or Path()).parent(document, source)
    if problems or config is None:
        raise ConfigError(problems or ["nothing to run"], source=where)
    return config


class _Reader:
    """Reads the document section by section, appending every problem it finds."""

    def __init__(self, problems: list[str], base: Path) -> None:
        self.problems = problems
        self.base = base

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    # -- the document ------------------------------------------------------------------

    def parent(self, document: Mapping[str, Any], source: Path | None) -> ParentConfig | None:
        self.unknown_keys("", document, _SECTIONS)
        if not any(name in document for name in _SECTIONS):
            self.problems.append(
                "nothing to run: give at least one of [egress], [credentials], [[ingress]], [logs]"
            )
            return None
        egress = self.section(document, "egress", self.egress)
        credentials = self.section(document, "credentials", self.credentials)
        logs = self.section(document, "logs", self.logs)
        ingress: list[IngressConfig] = []
        raw = document.get("ingress", [])
        if isinstance(raw, Mapping):
            self.problem("ingress", "a list of forwards: write [[ingress]], not [ingress]")
        elif not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
            self.problem("ingress", "must be [[ingress]] tables with listen and to")
        elif len(raw) > MAX_INGRESS:
            self.problem("ingress", f"at most {MAX_INGRESS} forwards")
        else:
            for index, item in enumerate(raw):
                forward = self.ingress(f"ingress[{index}]", item)
                if forward is not None:
                    ingress.append(forward)
        self.distinct_listeners(egress, credentials, ingress, logs)
        if self.problems:
            return None
        return ParentConfig(
            egress=egress,
            credentials=credentials,
            ingress=tuple(ingress),
            logs=logs,
            source=source,
        )

    def section(self, document: Mapping[str, Any], name: str, read: Any) -> Any:
        if name not in document:
            return None
        table = document[name]
        if not isinstance(table, Mapping):
            self.problem(name, f"must be a table: write [{name}]")
            return None
        return read(name, table)

    def egress(self, name: str, table: Mapping[str, Any]) -> EgressConfig | None:
        self.unknown_keys(name, table, _EGRESS_KEYS)
        start = len(self.problems)
        listen = self.address(name, table, "listen")
        entries: set[AllowEntry] = set()
        allowlist_file: Path | None = None
        if "allowlist" not in table and "allow" not in table:
            self.problem(
                name,
                "give allowlist (a vsock-proxy YAML file) and/or allow entries: "
                "egress is deny by default",
            )
        if "allowlist" in table:
            allowlist_file = self.path(name, table, "allowlist")
            if allowlist_file is not None:
                try:
                    entries |= load_allowlist(allowlist_file).entries
                except ConfigurationError as exc:
                    self.problem(f"{name}.allowlist", str(exc))
        if "allow" in table:
            entries |= self.allow(f"{name}.allow", table["allow"])
        hosts = self.hosts(f"{name}.hosts", table.get("hosts", {}))
        dns_cache = self.number(name, table, "dns_cache", 0.0, minimum=0.0, maximum=MAX_DNS_CACHE)
        ip_version: Literal[4, 6] | None = None
        if "ip_version" in table:
            value = table["ip_version"]
            if value == 4 and not isinstance(value, bool):
                ip_version = 4
            elif value == 6 and not isinstance(value, bool):
                ip_version = 6
            else:
                self.problem(f"{name}.ip_version", f"must be 4 or 6, not {value!r:.40}")
        options = self.options(name, table)
        if not entries and len(self.problems) == start:
            self.problem(name, "the allowlist is empty: the relay would refuse everything")
        if listen is None or options is None or len(self.problems) != start:
            return None
        return EgressConfig(
            listen=listen,
            allowlist=Allowlist.from_entries(entries),
            allowlist_file=allowlist_file,
            hosts=MappingProxyType(hosts),
            dns_cache=dns_cache,
            ip_version=ip_version,
            options=options,
        )

    def credentials(self, name: str, table: Mapping[str, Any]) -> CredentialsConfig | None:
        self.unknown_keys(name, table, _CREDENTIALS_KEYS)
        before = len(self.problems)
        listen = self.address(name, table, "listen", kinds=("vsock", "tcp"))
        source = table.get("source", "imds")
        if source not in ("imds", "environment"):
            self.problem(f"{name}.source", f"must be 'imds' or 'environment', not {source!r:.40}")
        imds_url = table.get("imds_url")
        if imds_url is not None:
            if not _is_http_url(imds_url):
                self.problem(f"{name}.imds_url", "must be an http:// URL (IMDS is plain HTTP)")
            elif source != "imds":
                self.problem(f"{name}.imds_url", "only applies to source = 'imds'")
        peers: list[str | int] = []
        raw = table.get("allowed_peers")
        if raw is None:
            if listen is not None and listen.kind == "vsock":
                self.problem(
                    f"{name}.allowed_peers",
                    "required for a vsock listener: the enclave CID(s), e.g. [16]",
                )
        elif not isinstance(raw, list) or not raw:
            self.problem(f"{name}.allowed_peers", "must be a non-empty list")
        elif listen is not None:
            for index, peer in enumerate(raw):
                try:
                    peers.append(_normalise_peer(peer, listen.kind))
                except ConfigurationError as exc:
                    self.problem(f"{name}.allowed_peers[{index}]", str(exc))
        if listen is None or len(self.problems) != before:
            return None
        return CredentialsConfig(
            listen=listen,
            source=source,
            allowed_peers=tuple(peers),
            imds_url=imds_url,
        )

    def ingress(self, name: str, table: Mapping[str, Any]) -> IngressConfig | None:
        self.unknown_keys(name, table, _INGRESS_KEYS)
        before = len(self.problems)
        listen = self.address(name, table, "listen")
        to = self.address(name, table, "to")
        allow_parent_target = table.get("allow_parent_target", False)
        if not isinstance(allow_parent_target, bool):
            self.problem(f"{name}.allow_parent_target", "must be true or false")
            allow_parent_target = False
        if to is not None:
            for key, message in _ingress_problems(listen, to, allow_parent_target):
                self.problem(f"{name}.{key}", message)
        if to is not None and to.port == 0:
            self.problem(f"{name}.to", "a destination needs a port other than 0")
        options = self.options(name, table)
        if listen is None or to is None or options is None or len(self.problems) != before:
            return None
        return IngressConfig(
            listen=listen, to=to, options=options, allow_parent_target=allow_parent_target
        )

    def logs(self, name: str, table: Mapping[str, Any]) -> LogsConfig | None:
        self.unknown_keys(name, table, _LOGS_KEYS)
        before = len(self.problems)
        listen = self.address(name, table, "listen")
        out: Path | None = None
        if "out" not in table:
            self.problem(f"{name}.out", "required: a file, or '-' for standard output")
        elif table["out"] != "-":
            out = self.path(name, table, "out")
            if out is not None and out.is_dir():
                self.problem(f"{name}.out", f"{str(out)!r} is a directory")
        max_line = self.integer(name, table, "max_line", DEFAULT_MAX_LINE, minimum=MIN_MAX_LINE)
        if listen is None or len(self.problems) != before:
            return None
        return LogsConfig(listen=listen, out=out, max_line=max_line)

    # -- pieces ------------------------------------------------------------------------

    def unknown_keys(self, name: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if name:
                self.problem(name, f"unknown key {key!r:.80}{hint}")
            else:
                self.problems.append(f"unknown top-level key {key!r:.80}{hint}")

    def address(
        self,
        name: str,
        table: Mapping[str, Any],
        key: str,
        *,
        kinds: tuple[str, ...] = ("vsock", "tcp", "unix"),
    ) -> Address | None:
        where = f"{name}.{key}"
        if key not in table:
            self.problem(where, "required (vsock:CID:PORT, tcp:HOST:PORT or unix:PATH)")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(where, "must be a string such as 'vsock:ANY:8000'")
            return None
        try:
            address = parse_address(value)
        except ValueError as exc:
            self.problem(where, str(exc))
            return None
        if address.kind not in kinds:
            self.problem(where, f"must be {' or '.join(kinds)}, not {address.kind}")
            return None
        return address

    def path(self, name: str, table: Mapping[str, Any], key: str) -> Path | None:
        value = table[key]
        if not isinstance(value, str) or not value or "\x00" in value:
            self.problem(f"{name}.{key}", "must be a file path")
            return None
        try:
            return self.base / Path(value).expanduser()
        except RuntimeError:  # ~user with no such user, or ~ with no home directory
            self.problem(f"{name}.{key}", f"{value!r:.80}: cannot find the home directory")
            return None

    def allow(self, where: str, raw: object) -> set[AllowEntry]:
        if not isinstance(raw, list):
            self.problem(where, "must be a list of {address = HOST, port = N} entries")
            return set()
        entries: set[AllowEntry] = set()
        for index, item in enumerate(raw):
            try:
                entries.add(_entry(index, item))
            except ConfigurationError as exc:
                self.problem(where, str(exc))
        return entries

    def hosts(self, where: str, raw: object) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, Mapping):
            self.problem(where, 'must be a table of name = "IP" or name = ["IP", ...]')
            return {}
        hosts: dict[str, tuple[str, ...]] = {}
        for name, value in raw.items():
            try:
                host = normalize_host(str(name))
            except ValueError as exc:
                self.problem(where, str(exc))
                continue
            if ipaddress_or_none(host) is not None:
                self.problem(where, f"{name!r:.80} is an IP address, not a name")
                continue
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values:
                self.problem(f"{where}.{host}", "must be an IP address or a list of them")
                continue
            addresses: list[str] = []
            for item in values:
                ip = ipaddress_or_none(item) if isinstance(item, str) else None
                if ip is None:
                    self.problem(f"{where}.{host}", f"{item!r:.80} is not an IP address")
                else:
                    addresses.append(ip.compressed)
            hosts[host] = tuple(addresses)
        return hosts

    def number(
        self,
        name: str,
        table: Mapping[str, Any],
        key: str,
        default: float,
        *,
        minimum: float,
        maximum: float = math.inf,
        exclusive: bool = False,
    ) -> float:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(f"{name}.{key}", f"must be a number, not {value!r:.40}")
        elif not (
            (value > minimum if exclusive else value >= minimum)
            and value <= maximum
            and math.isfinite(value)
        ):
            bound = f"more than {minimum:g}" if exclusive else f"at least {minimum:g}"
            if maximum != math.inf:
                bound += f" and at most {maximum:g}"
            self.problem(f"{name}.{key}", f"must be {bound}, not {value!r}")
        else:
            return float(value)
        return default

    def integer(
        self, name: str, table: Mapping[str, Any], key: str, default: int, *, minimum: int
    ) -> int:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"{name}.{key}", f"must be an integer, not {value!r:.40}")
        elif value < minimum:
            self.problem(f"{name}.{key}", f"must be at least {minimum}, not {value}")
        else:
            return value
        return default

    def options(self, name: str, table: Mapping[str, Any]) -> RelayOptions | None:
        defaults = RelayOptions()
        before = len(self.problems)
        max_connections = self.integer(
            name, table, "max_connections", defaults.max_connections, minimum=1
        )
        connect_timeout = self.number(
            name, table, "connect_timeout", defaults.connect_timeout, minimum=0.0, exclusive=True
        )
        idle = self.number(name, table, "idle_timeout", defaults.idle_timeout or 0.0, minimum=0.0)
        if len(self.problems) != before:
            return None
        return RelayOptions(
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            idle_timeout=idle or None,
        )

    def distinct_listeners(
        self,
        egress: EgressConfig | None,
        credentials: CredentialsConfig | None,
        ingress: list[IngressConfig],
        logs: LogsConfig | None,
    ) -> None:
        listeners: list[tuple[str, Address]] = []
        if egress:
            listeners.append(("egress.listen", egress.listen))
        if credentials:
            listeners.append(("credentials.listen", credentials.listen))
        listeners += [(f"ingress[{i}].listen", f.listen) for i, f in enumerate(ingress)]
        if logs:
            listeners.append(("logs.listen", logs.listen))
        seen: dict[str, str] = {}
        for key, address in listeners:
            if address.port == 0:
                continue  # the system picks distinct ports
            text = str(address)
            if text in seen:
                self.problem(key, f"{text} is also {seen[text]}")
            else:
                seen[text] = key


def _is_http_url(value: object) -> bool:
    """Whether ``value`` is an ``http://HOST[:PORT]/...`` URL (checked, never raising)."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:  # a bad bracketed host (http://[::1) or port
        return False
    return parts.scheme == "http" and bool(parts.hostname)


def ipaddress_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address, or ``None`` if it is not one."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
