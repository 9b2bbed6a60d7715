"""The ``attested parent`` configuration file: TOML in, a frozen :class:`ParentConfig` out.

Every section is optional, at least one is required, and unknown keys are errors. The
loader reads the whole file and reports every problem it finds at once
(:class:`~attested.errors.ConfigError` with ``.problems``), each message naming its key
(``egress.listen: ...``). Relative paths are taken from the configuration file's
directory. See ``docs/parent.md`` for the reference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

from attested._runtime.config import Problems, Section, is_http_url, parse, read_file
from attested.errors import ConfigError
from attested.net import Address, is_loopback, parse_address
from attested.parent._credentials import normalise_peer
from attested.relay import AllowEntry, Allowlist, Forward, RelayOptions, load_allowlist
from attested.relay._allowlist import _entry, normalize_host
from attested.relay._handlers import ip_literal
from attested.relay._logs import DEFAULT_MAX_LINE
from attested.relay._roles import MAX_KEEPALIVE

__all__ = [
    "CredentialsConfig",
    "EgressConfig",
    "EgressForwardConfig",
    "IngressConfig",
    "LogsConfig",
    "MetricsConfig",
    "ParentConfig",
    "load_parent_config",
    "parse_parent_config",
]

MIN_MAX_LINE = 128
MAX_DNS_CACHE = 60.0
MAX_INGRESS = 64
MAX_FORWARDS = 64

_SECTIONS = ("egress", "credentials", "ingress", "logs", "metrics")
_METRICS_KEYS = ("listen", "allow_remote")
DEFAULT_METRICS_LISTEN = "tcp:127.0.0.1:9101"
_OPTION_KEYS = ("max_connections", "connect_timeout", "idle_timeout", "keepalive")
_EGRESS_KEYS = (
    "listen",
    "allowlist",
    "allow",
    "hosts",
    "dns_cache",
    "ip_version",
    "forward",
    *_OPTION_KEYS,
)
_FORWARD_KEYS = ("listen", "to", *_OPTION_KEYS)
_CREDENTIALS_KEYS = ("listen", "source", "allowed_peers", "imds_url")
_INGRESS_KEYS = ("listen", "to", "allow_parent_target", *_OPTION_KEYS)
_FIRST_ENCLAVE_CID = 4  # 0-2 are reserved by vsock, 3 is the parent instance itself
_LOGS_KEYS = ("listen", "out", "max_line", "max_record", "enclaves")
MAX_ENCLAVE_NAME = 64
CredentialSourceName = Literal["imds", "environment"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressForwardConfig:
    """One ``[[egress.forward]]``: raw bytes from the enclave to one allowlisted destination.

    For apps that cannot use a proxy (they dial a name that ``/etc/hosts`` or
    ``[[hosts]]`` points at a raw forward inside the enclave). The destination must be
    in the egress allowlist, and every connection is dialled with the CONNECT path's
    rules: the name resolved per connection, answers in forbidden ranges skipped
    unless listed (the same :class:`~attested.relay.Forward` with ``allowlist``).

    Attributes:
        listen: where the enclave connects (``vsock:ANY:8002``).
        host: the destination name or IP literal, canonical.
        port: the destination port.
        options: connection caps, timeouts and keepalive (default: ``[egress]``'s).
    """

    listen: Address
    host: str
    port: int
    options: RelayOptions = field(default_factory=RelayOptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressConfig:
    """``[egress]``: the parent end of the enclave's egress tunnels.

    Attributes:
        listen: where the enclave's ``enclave-egress`` connects (``vsock:ANY:8000``);
            ``None`` when only raw forwards are configured.
        allowlist: the merged allowlist: the file's entries and the inline ``allow`` ones.
        allowlist_file: the vsock-proxy YAML file it was read from, if any.
        hosts: static name to addresses overrides, consulted before DNS. The allowlist
            still applies to the name, and the rules for answers still apply to the
            addresses (a loopback answer must itself be listed).
        dns_cache: seconds to keep DNS answers (0: resolve per connection).
        ip_version: 4 or 6 to use only that family, ``None`` for both.
        options: connection caps, timeouts and keepalive of this listener.
        forwards: the raw forwards (``[[egress.forward]]``), listeners
            ``egress-forward-0``, ... in file order.
    """

    listen: Address | None
    allowlist: Allowlist
    allowlist_file: Path | None = None
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    dns_cache: float = 0.0
    ip_version: Literal[4, 6] | None = None
    options: RelayOptions = field(default_factory=RelayOptions)
    forwards: tuple[EgressForwardConfig, ...] = ()


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
        max_line: longest line written; a longer record is cut inside its message.
        max_record: longest input line read whole (``None``: 1 MiB or ``4 * max_line``).
        enclaves: sender (vsock CID, or IP address for a tcp listener) to the name
            written as ``enclave`` on its records.
    """

    listen: Address
    out: Path | None = None
    max_line: int = DEFAULT_MAX_LINE
    max_record: int | None = None
    enclaves: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """``[metrics]``: the parent's Prometheus endpoint (``GET /metrics``).

    Attributes:
        listen: where it listens (default ``tcp:127.0.0.1:9101``; ``tcp`` or ``unix``).
        allow_remote: accept a ``tcp`` listen beyond loopback (the counters say how busy
            the enclave is and which destinations it was refused).
    """

    listen: Address
    allow_remote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentConfig:
    """Everything ``attested parent`` runs; build with :func:`load_parent_config`.

    Attributes:
        egress: the egress relay, if configured.
        credentials: the credential server, if configured.
        ingress: the ingress forwards, in file order (listeners ``ingress-0``, ...).
        logs: the log sink, if configured.
        metrics: the metrics endpoint, if configured.
        source: the file this was read from, if any.
    """

    egress: EgressConfig | None = None
    credentials: CredentialsConfig | None = None
    ingress: tuple[IngressConfig, ...] = ()
    logs: LogsConfig | None = None
    metrics: MetricsConfig | None = None
    source: Path | None = None

    def listener_names(self) -> tuple[str, ...]:
        """The names of the listeners this configuration starts, in start order."""
        return tuple(name for name, _, _ in _listeners(self))


def _listeners(config: ParentConfig) -> list[tuple[str, str, Address]]:
    """(name, key in the file, address) of each listener ``config`` starts, in start order."""
    found: list[tuple[str, str, Address]] = []
    if config.egress and config.egress.listen:
        found.append(("egress", "egress.listen", config.egress.listen))
    for i, forward in enumerate(config.egress.forwards if config.egress else ()):
        found.append((f"egress-forward-{i}", f"egress.forward[{i}].listen", forward.listen))
    if config.credentials:
        found.append(("credentials", "credentials.listen", config.credentials.listen))
    for i, ingress in enumerate(config.ingress):
        found.append((f"ingress-{i}", f"ingress[{i}].listen", ingress.listen))
    if config.logs:
        found.append(("logs", "logs.listen", config.logs.listen))
    if config.metrics:
        found.append(("metrics", "metrics.listen", config.metrics.listen))
    return found


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
    problems = Problems()
    document = read_file(path, problems, name="the configuration file")
    return _build(document, problems, base=path.parent, source=path)


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
    problems = Problems()
    document = parse(text, problems, name="the configuration file")
    return _build(document, problems, base=base, source=source)


def _build(
    document: object, problems: Problems, *, base: Path | None, source: Path | None
) -> ParentConfig:
    config = None
    if document is not None:
        config = _parent(Section(problems, document, base=base), source)
    problems.raise_if_any(source=source)
    assert config is not None  # noqa: S101 - no problem means it was built
    return config


def _parent(top: Section, source: Path | None) -> ParentConfig | None:
    top.refuse_unknown(_SECTIONS)
    if not any(top.has(name) for name in _SECTIONS):
        top.problem(
            None,
            "nothing to run: give at least one of [egress], [credentials], [[ingress]], [logs], "
            "[metrics]",
        )
        return None
    egress = _optional(top, "egress", _egress)
    credentials = _optional(top, "credentials", _credentials)
    logs = _optional(top, "logs", _logs)
    metrics = _optional(top, "metrics", _metrics)
    ingress = [_ingress(section) for section in top.tables("ingress", max_items=MAX_INGRESS)]
    config = ParentConfig(
        egress=egress,
        credentials=credentials,
        ingress=tuple(forward for forward in ingress if forward is not None),
        logs=logs,
        metrics=metrics,
        source=source,
    )
    _distinct_listeners(top, config)
    return None if len(top.problems) else config


def _optional(top: Section, name: str, read: Callable[[Section], _T | None]) -> _T | None:
    section = top.table(name)
    return read(section) if section.given else None


def _egress(section: Section) -> EgressConfig | None:
    section.refuse_unknown(_EGRESS_KEYS)
    before = len(section.problems)
    forward_sections = section.tables("forward", max_items=MAX_FORWARDS)
    listen = section.address("listen") if section.has("listen") or not forward_sections else None
    entries: set[AllowEntry] = set()
    allowlist_file = section.path("allowlist")
    if not section.has("allowlist") and not section.has("allow"):
        section.problem(
            None,
            "give allowlist (a vsock-proxy YAML file) and/or allow entries: "
            "egress is deny by default",
        )
    if allowlist_file is not None:
        listed = section.problems.check(
            section.key("allowlist"), partial(load_allowlist, allowlist_file)
        )
        entries |= listed.entries if listed is not None else set()
    if section.has("allow"):
        entries |= _allow(section)
    hosts = _hosts(section)
    dns_cache = section.number("dns_cache", 0.0, minimum=0.0, maximum=MAX_DNS_CACHE)
    ip_version = section.read("ip_version", None, _ip_version)
    options = _options(section)
    if not entries and len(section.problems) == before:
        section.problem(None, "the allowlist is empty: the relay would refuse everything")
    allowlist = Allowlist.from_entries(entries)
    forwards = [_forward(f, allowlist, options or RelayOptions()) for f in forward_sections]
    if (listen is None and not forward_sections) or options is None:
        return None
    if len(section.problems) != before:
        return None
    return EgressConfig(
        listen=listen,
        allowlist=allowlist,
        allowlist_file=allowlist_file,
        hosts=MappingProxyType(hosts),
        dns_cache=dns_cache,
        ip_version=ip_version,
        options=options,
        forwards=tuple(forward for forward in forwards if forward is not None),
    )


def _forward(
    section: Section, allowlist: Allowlist, defaults: RelayOptions
) -> EgressForwardConfig | None:
    """One ``[[egress.forward]]``, its destination checked against the allowlist.

    The check is :class:`~attested.relay.Forward`'s own (the role the relay runs), so
    the file cannot accept a destination the relay would refuse.
    """
    section.refuse_unknown(_FORWARD_KEYS)
    before = len(section.problems)
    listen = section.address("listen")
    to = section.read("to", None, _destination)
    if not section.has("to"):
        section.problem("to", "required: the destination, 'HOST:PORT'")
    options = _options(section, defaults)
    if listen is not None and to is not None and allowlist.entries:
        section.problems.check(
            section.key("to"), partial(Forward, listen=listen, to=to, allowlist=allowlist)
        )
    if listen is None or to is None or options is None or len(section.problems) != before:
        return None
    assert to.host is not None  # noqa: S101 - a tcp address has both
    assert to.port is not None  # noqa: S101
    return EgressForwardConfig(
        listen=listen, host=normalize_host(to.host), port=to.port, options=options
    )


def _destination(value: object) -> Address:
    """``HOST:PORT`` (IPv6 in brackets), or the same as ``tcp:HOST:PORT``."""
    if not isinstance(value, str):
        raise ValueError("must be a string, 'HOST:PORT'")
    text = value if value.startswith("tcp:") else f"tcp:{value}"
    address = parse_address(text)
    if address.port == 0:
        raise ValueError("a destination needs a port other than 0")
    assert address.host is not None  # noqa: S101 - a tcp address has one
    normalize_host(address.host)  # ValueError for a name the allowlist could never hold
    return address


def _ip_version(value: object) -> Literal[4, 6]:
    if value in (4, 6) and not isinstance(value, bool):
        return 4 if value == 4 else 6
    raise ValueError(f"must be 4 or 6, not {value!r:.40}")


def _credentials(section: Section) -> CredentialsConfig | None:
    section.refuse_unknown(_CREDENTIALS_KEYS)
    before = len(section.problems)
    listen = section.address("listen", kinds=("vsock", "tcp"))
    source = section.text("source", "imds", choices=("imds", "environment"))
    imds_url = section.text("imds_url", None)
    if imds_url is not None:
        if not is_http_url(imds_url):
            section.problem("imds_url", "must be an http:// URL (IMDS is plain HTTP)")
        elif source != "imds":
            section.problem("imds_url", "only applies to source = 'imds'")
    peers: list[str | int | None] = []
    raw = section.get("allowed_peers")
    if raw is None:
        if listen is not None and listen.kind == "vsock":
            section.problem(
                "allowed_peers", "required for a vsock listener: the enclave CID(s), e.g. [16]"
            )
    elif not isinstance(raw, list) or not raw:
        section.problem("allowed_peers", "must be a non-empty list")
    elif listen is not None:
        for index, peer in enumerate(raw):
            where = f"{section.key('allowed_peers')}[{index}]"
            peers.append(section.problems.check(where, partial(normalise_peer, peer, listen.kind)))
    if listen is None or len(section.problems) != before:
        return None
    return CredentialsConfig(
        listen=listen,
        source="imds" if source == "imds" else "environment",
        allowed_peers=tuple(peer for peer in peers if peer is not None),
        imds_url=imds_url,
    )


def _ingress(section: Section) -> IngressConfig | None:
    section.refuse_unknown(_INGRESS_KEYS)
    before = len(section.problems)
    listen = section.address("listen")
    to = section.address("to")
    allow_parent_target = section.flag("allow_parent_target", False)
    if to is not None:
        for key, message in _ingress_problems(listen, to, allow_parent_target):
            section.problem(key, message)
        if to.port == 0:
            section.problem("to", "a destination needs a port other than 0")
    options = _options(section)
    if listen is None or to is None or options is None or len(section.problems) != before:
        return None
    return IngressConfig(
        listen=listen, to=to, options=options, allow_parent_target=allow_parent_target
    )


def _logs(section: Section) -> LogsConfig | None:
    section.refuse_unknown(_LOGS_KEYS)
    before = len(section.problems)
    listen = section.address("listen")
    out: Path | None = None
    if not section.has("out"):
        section.problem("out", "required: a file, or '-' for standard output")
    elif section.get("out") != "-":
        out = section.path("out")
        if out is not None and os.path.isdir(out):  # False, not OSError, for a too long name
            section.problem("out", f"{str(out)!r:.200} is a directory")
    max_line = section.integer("max_line", DEFAULT_MAX_LINE, minimum=MIN_MAX_LINE)
    max_record = section.integer("max_record", None, minimum=max_line)
    enclaves = section.read("enclaves", {}, _enclave_names)
    if listen is None or len(section.problems) != before:
        return None
    return LogsConfig(
        listen=listen,
        out=out,
        max_line=max_line,
        max_record=max_record,
        enclaves=MappingProxyType(enclaves),
    )


def _enclave_names(value: object) -> dict[str, str]:
    """``{"16" = "payments", "127.0.0.1" = "laptop"}``: sender to enclave name."""
    if not isinstance(value, Mapping):
        raise ValueError('must be a table, {"16" = "payments"} (vsock CID or IP = name)')
    names: dict[str, str] = {}
    for key, name in value.items():
        sender = str(key)
        ip = ip_literal(sender)
        if ip is not None:
            sender = ip.compressed
        elif not (sender.isascii() and sender.isdigit() and int(sender) < 0xFFFFFFFF):
            raise ValueError(f"{sender!r:.40} is neither a vsock CID nor an IP address")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_ENCLAVE_NAME:
            raise ValueError(f"{sender}: the name must be 1 to {MAX_ENCLAVE_NAME} characters")
        if not name.isprintable():
            raise ValueError(f"{sender}: the name must be printable")
        names[str(int(sender)) if sender.isdigit() else sender] = name
    return names


def _metrics(section: Section) -> MetricsConfig | None:
    section.refuse_unknown(_METRICS_KEYS)
    before = len(section.problems)
    listen = parse_address(DEFAULT_METRICS_LISTEN)
    if section.has("listen"):
        listen = section.address("listen", kinds=("tcp", "unix")) or listen
    allow_remote = section.flag("allow_remote", False)
    if listen.kind == "tcp" and not is_loopback(listen.host) and not allow_remote:
        section.problem(
            "listen",
            f"{listen} is beyond loopback: set allow_remote = true to let other hosts "
            "scrape the parent's counters",
        )
    if len(section.problems) != before:
        return None
    return MetricsConfig(listen=listen, allow_remote=allow_remote)


def _allow(section: Section) -> set[AllowEntry]:
    raw = section.get("allow")
    if not isinstance(raw, list):
        section.problem("allow", "must be a list of {address = HOST, port = N} entries")
        return set()
    where = section.key("allow")
    entries = [
        section.problems.check(where, partial(_entry, i, item)) for i, item in enumerate(raw)
    ]
    return {entry for entry in entries if entry is not None}


def _hosts(section: Section) -> dict[str, tuple[str, ...]]:
    raw = section.get("hosts", {})
    where = section.key("hosts")
    if not isinstance(raw, Mapping):
        section.problem("hosts", 'must be a table of name = "IP" or name = ["IP", ...]')
        return {}
    hosts: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        host = section.problems.check(where, partial(normalize_host, str(name)))
        if host is None:
            continue
        if ip_literal(host) is not None:
            section.problem("hosts", f"{name!r:.80} is an IP address, not a name")
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            section.problems.add(f"{where}.{host}", "must be an IP address or a list of them")
            continue
        addresses: list[str] = []
        for item in values:
            ip = ip_literal(item) if isinstance(item, str) else None
            if ip is None:
                section.problems.add(f"{where}.{host}", f"{item!r:.80} is not an IP address")
            else:
                addresses.append(ip.compressed)
        hosts[host] = tuple(addresses)
    return hosts


def _options(section: Section, defaults: RelayOptions | None = None) -> RelayOptions | None:
    defaults = defaults or RelayOptions()
    before = len(section.problems)
    max_connections = section.integer("max_connections", defaults.max_connections, minimum=1)
    connect_timeout = section.number(
        "connect_timeout", defaults.connect_timeout, minimum=0.0, exclusive=True
    )
    idle = section.number("idle_timeout", defaults.idle_timeout or 0.0, minimum=0.0)
    keepalive = section.read("keepalive", defaults.keepalive, _keepalive)
    if len(section.problems) != before:
        return None
    return RelayOptions(
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        idle_timeout=idle or None,
        keepalive=keepalive,
    )


def _keepalive(value: object) -> float | None:
    """Seconds of silence before TCP keepalive probes; 0 leaves the kernel's setting."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number of seconds (0: the kernel's setting)")
    if value == 0:
        return None
    if not 1 <= value <= MAX_KEEPALIVE:
        raise ValueError(f"must be 0, or 1 to {MAX_KEEPALIVE} seconds")
    return float(value)


def _distinct_listeners(top: Section, config: ParentConfig) -> None:
    seen: dict[str, str] = {}
    for _, key, address in _listeners(config):
        if address.port == 0:
            continue  # the system picks distinct ports
        text = str(address)
        if text in seen:
            top.problems.add(key, f"{text} is also {seen[text]}")
        else:
            seen[text] = key
