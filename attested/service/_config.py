"""The service configuration: one TOML file plus environment overrides, every problem at once.

The file is read with the standard library's :mod:`tomllib`. Unknown keys are errors, so
a typo (``allowed_key``) cannot silently leave a default in force. Environment variables
override the file (see :data:`ENV_VARS`). :func:`load_config` collects every problem,
then raises one :class:`~attested.errors.ConfigError` listing them all.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attested import _toml
from attested.errors import ConfigError, ConfigurationError, MalformedError
from attested.kms import NetworkSettings
from attested.kms.client import _REGION  # the KMS client's own rule for region names
from attested.net import Address, is_loopback, parse_address

__all__ = [
    "DEFAULT_SOCKET",
    "ENV_VARS",
    "OPERATIONS",
    "ServiceConfig",
    "load_config",
]

DEFAULT_SOCKET = "/run/attested/api.sock"
OPERATIONS = (
    "decrypt",
    "generate-data-key",
    "generate-data-key-pair",
    "generate-random",
    "derive-shared-secret",
    "attestation",
)
"""Every operation the API offers (``/v1/<operation>``)."""

NSM_BACKENDS = ("auto", "libnsm", "ioctl", "simulated")
CREDENTIAL_SOURCES = ("parent", "environment")

ENV_VARS: Mapping[str, str] = MappingProxyType(
    {
        "ATTESTED_REGION": "region",
        "ATTESTED_ALLOWED_KEYS": "kms.allowed_keys (comma-separated)",
        "ATTESTED_EGRESS_PROXY": "kms.proxy",
        "ATTESTED_KMS_ENDPOINT": "kms.endpoint_url",
        "ATTESTED_CA_BUNDLE": "kms.ca_bundle",
        "ATTESTED_CREDENTIALS": 'credentials ("parent:ADDRESS" or "environment")',
        "ATTESTED_NSM_BACKEND": "nsm.backend",
        "ATTESTED_API_SOCKET": "api.unix",
        "ATTESTED_API_TCP": "api.tcp",
    }
)
"""Environment variables that override the file, and the key each one overrides."""

_MAX_FILE = 1024 * 1024
_PCR_INDEX = re.compile(r"[0-9]{1,2}")  # ASCII only: "²".isdigit() is true, int("²") fails
_OCTAL_MODE = re.compile(r"[0-7]{1,4}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Everything ``attested serve`` needs; checked as a whole when made.

    Attributes:
        region: the AWS region of KMS.
        api_unix: path of the Unix domain socket; ``""`` disables it.
        api_unix_mode: the socket file's mode.
        api_tcp: ``tcp:HOST:PORT`` on a loopback host, or ``""`` (off).
        api_vsock: ``vsock:CID:PORT``, or ``""`` (off). Callers there are outside the
            enclave: they get health, metrics and attestation documents without a
            caller's ``public_key``, nothing that returns a secret.
        api_vsock_allow_secrets: **Danger**: serve the whole API over vsock, handing
            plaintexts and keys to the parent instance.
        nsm_backend: ``auto``, ``libnsm``, ``ioctl`` or ``simulated``.
        nsm_simulated_state: simulated only: the state directory with the shared root.
        nsm_simulated_pcrs: simulated only: the PCRs its documents carry.
        kms_endpoint_url: ``""`` for ``https://kms.REGION.amazonaws.com``.
        kms_proxy: the HTTP CONNECT proxy (the enclave-egress relay), or ``""``; with
            ``egress_listen`` set and this empty, the service's own egress relay.
        kms_ca_bundle: a CA bundle file for KMS's certificate, or ``""``.
        allowed_keys: key ARNs and alias ARNs the API may use, matched exactly; ``("*",)``
            allows any key.
        operations: the operations the API offers; the rest answer 403.
        egress_listen: run the enclave-egress relay in this process, listening here
            (``tcp:127.0.0.1:PORT``, loopback only), or ``""`` (off: run
            ``attested relay enclave-egress`` yourself). Its counters show in ``/metrics``.
        egress_parent: where that relay sends its tunnels (the parent-egress relay).
        logs_ship_to: also send the service's log records, as JSON lines, to the parent's
            log sink at this address (``vsock:3:8090``; ``attested parent`` ``[logs]``),
            or ``""`` (stderr only).
        credentials_source: ``parent`` or ``environment``.
        credentials_parent: the parent credential server's address.
        cache_enabled: cache GenerateDataKey answers.
        cache_max_age: seconds a cached data key may be used.
        cache_max_messages: requests one cached data key may serve.
        cache_max_bytes: declared plaintext bytes one cached data key may cover.
        max_body: largest request body, in bytes.
        max_connections: open API connections at most; more get 503.
        idle_timeout: seconds an API connection may stay silent.

    Raises:
        ConfigError: every problem found, at once.
    """

    region: str = "us-east-1"
    api_unix: str = DEFAULT_SOCKET
    api_unix_mode: int = 0o660
    api_tcp: str = ""
    api_vsock: str = ""
    api_vsock_allow_secrets: bool = False
    nsm_backend: str = "auto"
    nsm_simulated_state: str = ""
    nsm_simulated_pcrs: Mapping[int, bytes] = field(default_factory=dict)
    kms_endpoint_url: str = ""
    kms_proxy: str = ""
    kms_ca_bundle: str = ""
    egress_listen: str = ""
    egress_parent: str = "vsock:3:8000"
    logs_ship_to: str = ""
    allowed_keys: tuple[str, ...] = ()
    operations: frozenset[str] = frozenset(OPERATIONS)
    credentials_source: str = "parent"
    credentials_parent: str = "vsock:3:8001"
    cache_enabled: bool = False
    cache_max_age: float = 300.0
    cache_max_messages: int = 1000
    cache_max_bytes: int = 1024**3
    max_body: int = 65536
    max_connections: int = 512
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_keys", tuple(self.allowed_keys))
        object.__setattr__(self, "operations", frozenset(self.operations))
        object.__setattr__(
            self, "nsm_simulated_pcrs", MappingProxyType(dict(self.nsm_simulated_pcrs))
        )
        problems = _check(self)
        if problems:
            raise ConfigError(problems)

    @property
    def any_key(self) -> bool:
        """Whether ``allowed_keys`` is the explicit ``"*"`` opt-in."""
        return self.allowed_keys == ("*",)

    def addresses(self) -> dict[str, Address]:
        """The listeners to open, by kind (``unix``, ``tcp``, ``vsock``)."""
        found: dict[str, Address] = {}
        if self.api_unix:
            found["unix"] = Address(kind="unix", path=self.api_unix)
        if self.api_tcp:
            found["tcp"] = parse_address(self.api_tcp)
        if self.api_vsock:
            found["vsock"] = parse_address(self.api_vsock)
        return found


def _check(config: ServiceConfig) -> list[str]:
    problems: list[str] = []
    add = problems.append
    if not _REGION.fullmatch(config.region):
        add(f"region: {config.region!r:.60} is not an AWS region name (e.g. us-east-1)")
    if not (config.api_unix or config.api_tcp or config.api_vsock):
        add("api: no listener: set api.unix, api.tcp or api.vsock")
    if config.api_unix:
        if "\x00" in config.api_unix or not os.path.isabs(config.api_unix):
            add(f"api.unix: {config.api_unix!r:.200} must be an absolute path")
        elif _fs_length(config.api_unix) > 107:
            add("api.unix: the path is longer than a Unix socket path may be (107 bytes)")
    if not 0 <= config.api_unix_mode <= 0o777:
        add("api.unix_mode: must be an octal mode between 0000 and 0777")
    elif config.api_unix_mode & 0o007:
        add(
            f"api.unix_mode: {config.api_unix_mode:04o} lets every local user call the API; "
            "give access through the group (e.g. 0660)"
        )
    if config.api_tcp:
        try:
            tcp = parse_address(config.api_tcp)
        except ValueError as exc:
            add(f"api.tcp: {exc} (write HOST:PORT, e.g. 127.0.0.1:8080)")
        else:
            if tcp.kind != "tcp":
                add(f"api.tcp: {config.api_tcp!r:.80} is not a TCP address")
            elif not is_loopback(tcp.host):
                add(
                    f"api.tcp: {tcp.host!r:.80} is not a loopback address; the API hands "
                    "out secrets and must listen on 127.0.0.1, ::1 or localhost only"
                )
    if config.api_vsock_allow_secrets and not config.api_vsock:
        add("api.vsock_allow_secrets: applies only with api.vsock")
    if config.api_vsock:
        try:
            vsock = parse_address(config.api_vsock)
        except ValueError as exc:
            add(f"api.vsock: {exc}")
        else:
            if vsock.kind != "vsock":
                add(f"api.vsock: {config.api_vsock!r:.80} is not a vsock:CID:PORT address")
    if config.nsm_backend not in NSM_BACKENDS:
        add(f"nsm.backend: {config.nsm_backend!r:.40} is not one of {', '.join(NSM_BACKENDS)}")
    elif config.nsm_backend != "simulated" and (
        config.nsm_simulated_state or config.nsm_simulated_pcrs
    ):
        add('nsm.simulated_*: these apply only with nsm.backend = "simulated"')
    for index, value in config.nsm_simulated_pcrs.items():
        if not 0 <= index <= 31 or len(value) not in (32, 48, 64):
            add(f"nsm.simulated_pcrs: PCR{index} must be index 0-31 with 48 bytes of hex")
    # The KMS client's own rules for its endpoint and proxy (the service builds one).
    if config.kms_endpoint_url:
        try:
            NetworkSettings(endpoint_url=config.kms_endpoint_url)
        except ConfigurationError as exc:
            add(f"kms.endpoint_url: {exc}")
    if config.kms_proxy:
        try:
            NetworkSettings(proxy=config.kms_proxy)
        except ConfigurationError as exc:
            add(f"kms.proxy: {exc}")
    if config.egress_listen:
        try:
            egress = parse_address(config.egress_listen)
        except ValueError as exc:
            add(f"egress.listen: {exc}")
        else:
            if egress.kind != "tcp" or not is_loopback(egress.host):
                add(
                    f"egress.listen: {config.egress_listen!r:.80} must be tcp:HOST:PORT on a "
                    "loopback host (the proxy is for this enclave's own processes)"
                )
        try:
            parent_egress = parse_address(config.egress_parent)
        except ValueError as exc:
            add(f"egress.parent: {exc}")
        else:
            if parent_egress.kind == "unix":
                add("egress.parent: the parent-egress relay is reached over vsock or tcp")
    if config.logs_ship_to:
        try:
            parse_address(config.logs_ship_to)
        except ValueError as exc:
            add(f"logs.ship_to: {exc}")
    if config.kms_ca_bundle and not os.path.isfile(config.kms_ca_bundle):
        add(f"kms.ca_bundle: {config.kms_ca_bundle!r:.200} is not a readable file")
    if not config.allowed_keys:
        add(
            "kms.allowed_keys: required and non-empty: list the key ARNs or alias ARNs the "
            'API may use (or ["*"] to allow any key, explicitly)'
        )
    elif "*" in config.allowed_keys and len(config.allowed_keys) > 1:
        add('kms.allowed_keys: "*" allows every key; give it alone or list keys')
    else:
        for key in config.allowed_keys:
            if key != "*" and (not 1 <= len(key) <= 2048 or key != key.strip()):
                add(f"kms.allowed_keys: {key!r:.80} is not a key id, ARN or alias")
    unknown_ops = sorted(config.operations - set(OPERATIONS))
    if unknown_ops:
        add(f"kms.operations: unknown {', '.join(unknown_ops)}; known: {', '.join(OPERATIONS)}")
    if config.credentials_source not in CREDENTIAL_SOURCES:
        add(
            f"credentials.source: {config.credentials_source!r:.40} is not one of "
            f"{', '.join(CREDENTIAL_SOURCES)}"
        )
    elif config.credentials_source == "parent":
        try:
            parent = parse_address(config.credentials_parent)
        except ValueError as exc:
            add(f"credentials.parent: {exc}")
        else:
            if parent.kind == "unix":
                add("credentials.parent: the credential server is reached over vsock or tcp")
    if not (math.isfinite(config.cache_max_age) and config.cache_max_age > 0):
        add("cache.max_age: must be a positive number of seconds")
    if config.cache_max_messages < 1:
        add("cache.max_messages: must be at least 1")
    if config.cache_max_bytes < 1:
        add("cache.max_bytes: must be at least 1")
    if not 1024 <= config.max_body <= 16 * 1024 * 1024:
        add("limits.max_body: must be between 1024 and 16777216 bytes")
    if not 1 <= config.max_connections <= 65536:
        add("limits.max_connections: must be between 1 and 65536")
    if not (math.isfinite(config.idle_timeout) and 0 < config.idle_timeout <= 3600):
        add("limits.idle_timeout: must be between 0 and 3600 seconds")
    return problems


def _fs_length(path: str) -> int:
    """The length of ``path`` in bytes as the OS sees it (a huge one if not encodable)."""
    try:
        return len(os.fsencode(path))
    except UnicodeEncodeError:
        return 1 << 30


# --- reading the file and the environment ----------------------------------------------

# The schema: section -> key -> (field name, kind). "" is the top level.
_SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "": {"region": ("region", "str")},
    "api": {
        "unix": ("api_unix", "str"),
        "unix_mode": ("api_unix_mode", "mode"),
        "tcp": ("api_tcp", "tcp"),
        "vsock": ("api_vsock", "str"),
        "vsock_allow_secrets": ("api_vsock_allow_secrets", "bool"),
    },
    "nsm": {
        "backend": ("nsm_backend", "str"),
        "simulated_state": ("nsm_simulated_state", "str"),
        "simulated_measurements": ("", "str"),
        "simulated_pcrs": ("", "pcrs"),
    },
    "kms": {
        "endpoint_url": ("kms_endpoint_url", "str"),
        "proxy": ("kms_proxy", "str"),
        "ca_bundle": ("kms_ca_bundle", "str"),
        "allowed_keys": ("allowed_keys", "strlist"),
        "operations": ("operations", "strlist"),
    },
    "egress": {
        "listen": ("egress_listen", "str"),
        "parent": ("egress_parent", "str"),
    },
    "logs": {"ship_to": ("logs_ship_to", "str")},
    "credentials": {
        "source": ("credentials_source", "str"),
        "parent": ("credentials_parent", "str"),
    },
    "cache": {
        "enabled": ("cache_enabled", "bool"),
        "max_age": ("cache_max_age", "float"),
        "max_messages": ("cache_max_messages", "int"),
        "max_bytes": ("cache_max_bytes", "int"),
    },
    "limits": {
        "max_body": ("max_body", "int"),
        "max_connections": ("max_connections", "int"),
        "idle_timeout": ("idle_timeout", "float"),
    },
}


def _convert(kind: str, where: str, value: object, problems: list[str]) -> object:
    """Check a TOML value's type; returns the converted value or ``None`` (a problem)."""
    if kind in ("str", "tcp"):
        if isinstance(value, str):
            return value
        problems.append(f"{where}: must be a string")
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: must be true or false")
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: must be an integer")
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{where}: must be a number")
    elif kind == "strlist":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        problems.append(f"{where}: must be a list of strings")
    elif kind == "mode":
        if isinstance(value, str) and _OCTAL_MODE.fullmatch(value):
            return int(value, 8)
        problems.append(f'{where}: must be an octal mode in a string, e.g. "0660"')
    elif kind == "pcrs":
        return _pcrs(value, where, problems)
    return None


def _pcrs(value: object, where: str, problems: list[str]) -> dict[int, bytes] | None:
    if not isinstance(value, dict):
        problems.append(f'{where}: must be a table of index to hex, e.g. {{"0" = "..."}}')
        return None
    pcrs: dict[int, bytes] = {}
    for key, text in value.items():
        if not (_PCR_INDEX.fullmatch(key) and int(key) <= 31):
            problems.append(f"{where}: key {key!r:.20} is not a PCR index 0-31")
            continue
        try:
            pcrs[int(key)] = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            pcrs[int(key)] = b""
        if len(pcrs[int(key)]) not in (32, 48, 64):
            problems.append(f"{where}.{key}: must be 96 hex digits (a SHA-384 PCR)")
            del pcrs[int(key)]
    return pcrs


def _tcp_spec(text: str) -> str:
    """``127.0.0.1:8080`` and ``tcp:127.0.0.1:8080`` both name a TCP listener."""
    return text if not text or text.startswith("tcp:") else f"tcp:{text}"


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        strerror = exc.strerror if isinstance(exc, OSError) else None
        problems.append(f"{path}: cannot read the configuration file: {strerror or exc}")
        return {}
    try:
        return _toml.loads(data, max_size=_MAX_FILE)
    except MalformedError as exc:
        problems.append(f"{path}: {exc}")
        return {}


def _measurement_pcrs(path: str, problems: list[str]) -> dict[int, bytes]:
    from attested.keypolicy import parse_measurements
    from attested.keypolicy._measurements import MAX_MEASUREMENTS_SIZE

    try:
        with Path(path).open("rb") as handle:  # bounded: the path may be /dev/zero
            data = handle.read(MAX_MEASUREMENTS_SIZE + 1)
        sets = parse_measurements(data, source=path)
    except OSError as exc:
        problems.append(f"nsm.simulated_measurements: cannot read {path!r:.200}: {exc.strerror}")
        return {}
    except ValueError:  # a NUL in the path
        problems.append(f"nsm.simulated_measurements: {path!r:.200} is not a file path")
        return {}
    except MalformedError as exc:
        problems.append(f"nsm.simulated_measurements: {exc}")
        return {}
    if len(sets) != 1:
        problems.append(f"nsm.simulated_measurements: {path!r} holds {len(sets)} images, not 1")
        return {}
    return {i: v for i, v in sets[0].pcrs.items() if i in (0, 1, 2)}


def load_config(path: Path | None, env: Mapping[str, str]) -> ServiceConfig:
    """Read the TOML file (if any), apply environment overrides, check everything.

    Args:
        path: the TOML file; ``None`` for defaults and environment only.
        env: the environment (``os.environ``), for the ``ATTESTED_*`` overrides.

    Returns:
        The checked configuration.

    Raises:
        ConfigError: one message per problem: unknown keys, wrong types, bad values,
            unreadable files.
    """
    problems: list[str] = []
    raw = _read_file(path, problems) if path is not None else {}
    values: dict[str, object] = {}
    measurements = ""
    pcrs: dict[int, bytes] | None = None
    for key, value in raw.items():
        if isinstance(value, dict) and key in _SCHEMA and key != "":
            section = _SCHEMA[key]
            for inner, item in value.items():
                where = f"{key}.{inner}"
                if inner not in section:
                    problems.append(f"{where}: unknown key (known: {', '.join(section)})")
                    continue
                name, kind = section[inner]
                converted = _convert(kind, where, item, problems)
                if converted is None:
                    continue
                if where == "nsm.simulated_measurements":
                    measurements = str(converted)
                elif where == "nsm.simulated_pcrs":
                    pcrs = converted  # type: ignore[assignment]
                else:
                    values[name] = _tcp_spec(str(converted)) if kind == "tcp" else converted
        elif key in _SCHEMA[""]:
            name, kind = _SCHEMA[""][key]
            converted = _convert(kind, key, value, problems)
            if converted is not None:
                values[name] = converted
        else:
            known = ", ".join(["region", *(f"[{s}]" for s in _SCHEMA if s)])
            problems.append(f"{key}: unknown key or section (known: {known})")

    _apply_env(env, values, problems)

    backend = values.get("nsm_backend", "auto")
    simulated: dict[int, bytes] = {}
    if measurements:
        if backend == "simulated":
            simulated.update(_measurement_pcrs(measurements, problems))
        else:
            problems.append(
                'nsm.simulated_measurements: applies only with nsm.backend = "simulated"'
            )
    if pcrs:
        simulated.update(pcrs)
    if simulated:
        values["nsm_simulated_pcrs"] = simulated

    known_fields = {f.name for f in fields(ServiceConfig)}
    assert set(values) <= known_fields  # noqa: S101 - the schema names fields only
    try:
        config = ServiceConfig(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError([*problems, *exc.problems]) from None
    if problems:
        raise ConfigError(problems)
    return config


def _apply_env(env: Mapping[str, str], values: dict[str, object], problems: list[str]) -> None:
    simple = {
        "ATTESTED_REGION": "region",
        "ATTESTED_EGRESS_PROXY": "kms_proxy",
        "ATTESTED_KMS_ENDPOINT": "kms_endpoint_url",
        "ATTESTED_CA_BUNDLE": "kms_ca_bundle",
        "ATTESTED_NSM_BACKEND": "nsm_backend",
        "ATTESTED_API_SOCKET": "api_unix",
    }
    for variable, name in simple.items():
        if variable in env:
            values[name] = env[variable].strip()
    if "ATTESTED_API_TCP" in env:
        values["api_tcp"] = _tcp_spec(env["ATTESTED_API_TCP"].strip())
    if "ATTESTED_ALLOWED_KEYS" in env:
        values["allowed_keys"] = tuple(
            k.strip() for k in env["ATTESTED_ALLOWED_KEYS"].split(",") if k.strip()
        )
    if "ATTESTED_CREDENTIALS" in env:
        text = env["ATTESTED_CREDENTIALS"].strip()
        if text == "environment":
            values["credentials_source"] = "environment"
        elif text.startswith("parent:") and text != "parent:":
            values["credentials_source"] = "parent"
            values["credentials_parent"] = text.removeprefix("parent:")
        elif text == "parent":
            values["credentials_source"] = "parent"
        else:
            problems.append(
                f'ATTESTED_CREDENTIALS: {text!r:.80} is not "parent:ADDRESS" or "environment"'
            )
