"""The service configuration: one TOML file plus environment overrides, every problem at once.

Read by the project's one configuration reader (:mod:`attested._runtime.config`).
Unknown keys are errors, so a typo (``allowed_key``) cannot silently leave a default in
force. Environment variables override the file (see :data:`ENV_VARS`). :func:`load_config`
collects every problem, then raises one :class:`~attested.errors.ConfigError` listing them
all. Rules that belong to the KMS client (region names, endpoint and proxy URLs, the CA
bundle) are checked by the client's own code.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from attested._runtime.config import (
    Override,
    Problems,
    Section,
    comma_list,
    is_http_url,
    read_environment,
    read_file,
)
from attested.errors import MalformedError
from attested.kms import NetworkSettings
from attested.kms.client import check_region
from attested.net import Address, is_loopback, parse_address

__all__ = ["DEFAULT_SOCKET", "ENV_VARS", "OPERATIONS", "ServiceConfig", "load_config"]

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

NITROTPM_BACKENDS = ("nitrotpm", "nitrotpm-tool", "nitrotpm-device")
NSM_BACKENDS = ("auto", "libnsm", "ioctl", "simulated", "simulated-nitrotpm", *NITROTPM_BACKENDS)
SIMULATED_BACKENDS = ("simulated", "simulated-nitrotpm")
"""The backends that take ``nsm.simulated_*`` (the simulated NSM and NitroTPM)."""
CREDENTIAL_SOURCES = ("parent", "environment", "imds")


def _credentials(text: str) -> dict[str, object]:
    """``ATTESTED_CREDENTIALS``: ``parent``, ``parent:ADDRESS``, ``environment`` or ``imds``."""
    text = text.strip()
    if text in CREDENTIAL_SOURCES:
        return {"credentials.source": text}
    if text.startswith("parent:") and text != "parent:":
        return {"credentials.source": "parent", "credentials.parent": text[7:]}
    raise ValueError(f'{text!r:.80} is not "parent:ADDRESS", "environment" or "imds"')


_OVERRIDES = (
    Override("ATTESTED_REGION", "region"),
    Override(
        "ATTESTED_ALLOWED_KEYS",
        "kms.allowed_keys",
        comma_list("kms.allowed_keys"),
        "comma-separated",
    ),
    Override("ATTESTED_EGRESS_PROXY", "kms.proxy"),
    Override("ATTESTED_KMS_ENDPOINT", "kms.endpoint_url"),
    Override("ATTESTED_CA_BUNDLE", "kms.ca_bundle"),
    Override(
        "ATTESTED_CREDENTIALS",
        "credentials",
        _credentials,
        '"parent:ADDRESS", "environment" or "imds"',
    ),
    Override("ATTESTED_NSM_BACKEND", "nsm.backend"),
    Override("ATTESTED_NSM_NITROTPM_DEVICE", "nsm.nitrotpm_device"),
    Override("ATTESTED_NSM_NITROTPM_TOOL", "nsm.nitrotpm_tool"),
    Override("ATTESTED_API_SOCKET", "api.unix"),
    Override("ATTESTED_API_TCP", "api.tcp"),
)
ENV_VARS: Mapping[str, str] = MappingProxyType(
    {o.variable: f"{o.key} ({o.note})" if o.note else o.key for o in _OVERRIDES}
)
"""Environment variables that override the file, and the key each one overrides."""

_PCR_INDEX = re.compile(r"[0-9]{1,2}")  # ASCII only: "²".isdigit() is true, int("²") fails


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
        nsm_backend: ``auto``, ``libnsm``, ``ioctl``, ``simulated`` or
            ``simulated-nitrotpm``; on an EC2 instance ``nitrotpm``, ``nitrotpm-tool``
            or ``nitrotpm-device``.
        nsm_simulated_state: simulated only: the state directory with the shared root.
        nsm_simulated_pcrs: simulated only: the PCRs its documents carry (0-15 for the
            NSM, 0-23 for the NitroTPM).
        nsm_nitrotpm_device: nitrotpm backends only: the TPM device, ``""`` for
            ``/dev/tpm0``.
        nsm_nitrotpm_tool: ``nitrotpm`` and ``nitrotpm-tool`` only: the path of
            ``nitro-tpm-attest``, ``""`` to search ``PATH``.
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
        credentials_source: ``parent``, ``environment`` or ``imds`` (on an EC2 instance
            itself: the instance role from IMDSv2).
        credentials_parent: the parent credential server's address.
        credentials_imds_url: ``imds`` only: the metadata service (``""``: the default).
        cache_enabled: cache GenerateDataKey answers.
        cache_max_age: seconds a cached data key may be used.
        cache_max_messages: requests one cached data key may serve.
        cache_max_bytes: declared plaintext bytes one cached data key may cover.
        max_body: largest request body, in bytes.
        max_connections: open API connections at most; more get 503.
        idle_timeout: seconds an API connection may stay silent.
        kms_endpoint_listen: the KMS-compatible endpoint for stock AWS SDKs
            (``tcp:127.0.0.1:PORT`` on a loopback host, or ``unix:PATH``), or ``""`` (off).
            Never vsock or another host: it answers with plaintexts (ADR 0090).
        kms_endpoint_unix_mode: the file mode of its Unix socket.
        kms_endpoint_allow_reencrypt: also pass ReEncrypt through (off: it moves data
            from an attested key to a key whose policy may not ask for attestation).
        kms_endpoint_access_key_id: serve only requests whose SigV4 credential names
            this access key id; ``""`` takes any (signatures are not checked: ADR 0093).

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
    nsm_nitrotpm_device: str = ""
    nsm_nitrotpm_tool: str = ""
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
    credentials_imds_url: str = ""
    cache_enabled: bool = False
    cache_max_age: float = 300.0
    cache_max_messages: int = 1000
    cache_max_bytes: int = 1024**3
    max_body: int = 65536
    max_connections: int = 512
    idle_timeout: float = 30.0
    kms_endpoint_listen: str = ""
    kms_endpoint_unix_mode: int = 0o660
    kms_endpoint_allow_reencrypt: bool = False
    kms_endpoint_access_key_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_keys", tuple(self.allowed_keys))
        object.__setattr__(self, "operations", frozenset(self.operations))
        object.__setattr__(
            self, "nsm_simulated_pcrs", MappingProxyType(dict(self.nsm_simulated_pcrs))
        )
        problems = Problems()
        for check in _CHECKS:
            check(self, problems)
        problems.raise_if_any()

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

    def kms_endpoint_address(self) -> Address | None:
        """Where the KMS endpoint listens, or ``None`` when it is off."""
        return parse_address(self.kms_endpoint_listen) if self.kms_endpoint_listen else None


def _check_api(config: ServiceConfig, problems: Problems) -> None:
    add = problems.add
    if not (config.api_unix or config.api_tcp or config.api_vsock):
        add("api", "no listener: set api.unix, api.tcp or api.vsock")
    if config.api_unix:
        if "\x00" in config.api_unix or not os.path.isabs(config.api_unix):
            add("api.unix", f"{config.api_unix!r:.200} must be an absolute path")
        elif _fs_length(config.api_unix) > 107:
            add("api.unix", "the path is longer than a Unix socket path may be (107 bytes)")
    if not 0 <= config.api_unix_mode <= 0o777:
        add("api.unix_mode", "must be an octal mode between 0000 and 0777")
    elif config.api_unix_mode & 0o007:
        add(
            "api.unix_mode",
            f"{config.api_unix_mode:04o} lets every local user call the API; "
            "give access through the group (e.g. 0660)",
        )
    text = config.api_tcp
    tcp = _address(problems, "api.tcp", text, ("tcp",), f"{text!r:.80} is not a TCP address")
    if tcp is not None and not is_loopback(tcp.host):
        add(
            "api.tcp",
            f"{tcp.host!r:.80} is not a loopback address; the API hands out secrets and must "
            "listen on 127.0.0.1, ::1 or localhost only",
        )
    text = config.api_vsock
    _address(
        problems, "api.vsock", text, ("vsock",), f"{text!r:.80} is not a vsock:CID:PORT address"
    )
    if config.api_vsock_allow_secrets and not config.api_vsock:
        add("api.vsock_allow_secrets", "applies only with api.vsock")


def _check_nsm(config: ServiceConfig, problems: Problems) -> None:
    if config.nsm_backend not in NSM_BACKENDS:
        problems.add(
            "nsm.backend", f"{config.nsm_backend!r:.40} is not one of {', '.join(NSM_BACKENDS)}"
        )
    elif config.nsm_backend not in SIMULATED_BACKENDS and (
        config.nsm_simulated_state or config.nsm_simulated_pcrs
    ):
        problems.add(
            "nsm.simulated_*",
            'these apply only with nsm.backend = "simulated" or "simulated-nitrotpm"',
        )
    _check_nitrotpm(config, problems)
    last = 23 if config.nsm_backend == "simulated-nitrotpm" else 15
    for index, value in config.nsm_simulated_pcrs.items():
        if not 0 <= index <= last or len(value) != 48:
            problems.add(
                "nsm.simulated_pcrs", f"PCR{index} must be index 0-{last} with 48 bytes of hex"
            )


def _check_nitrotpm(config: ServiceConfig, problems: Problems) -> None:
    backend = config.nsm_backend
    given = {"nsm.nitrotpm_device": config.nsm_nitrotpm_device}
    given["nsm.nitrotpm_tool"] = config.nsm_nitrotpm_tool
    for key, value in given.items():
        if not value:
            continue
        if backend not in NITROTPM_BACKENDS or (
            key == "nsm.nitrotpm_tool" and backend == "nitrotpm-device"
        ):
            applies = (
                '"nitrotpm" or "nitrotpm-tool"'
                if key == "nsm.nitrotpm_tool"
                else '"nitrotpm", "nitrotpm-tool" or "nitrotpm-device"'
            )
            problems.add(key, f"applies only with nsm.backend = {applies}")
        elif not value.startswith("/"):
            problems.add(key, f"{value!r:.80} is not an absolute path")


def _check_kms(config: ServiceConfig, problems: Problems) -> None:
    """The KMS client's own rules (the service builds one), then the API's key rules."""
    add = problems.add
    problems.check("region", lambda: check_region(config.region))
    if config.kms_endpoint_url:
        problems.check(
            "kms.endpoint_url", lambda: NetworkSettings(endpoint_url=config.kms_endpoint_url)
        )
    if config.kms_proxy:
        problems.check("kms.proxy", lambda: NetworkSettings(proxy=config.kms_proxy))
    if config.kms_ca_bundle:
        problems.check("kms.ca_bundle", NetworkSettings(ca_bundle=config.kms_ca_bundle).check_files)
    if not config.allowed_keys:
        add(
            "kms.allowed_keys",
            "required and non-empty: list the key ARNs or alias ARNs the API may use "
            '(or ["*"] to allow any key, explicitly)',
        )
    elif "*" in config.allowed_keys and len(config.allowed_keys) > 1:
        add("kms.allowed_keys", '"*" allows every key; give it alone or list keys')
    else:
        for key in config.allowed_keys:
            if key != "*" and (not 1 <= len(key) <= 2048 or key != key.strip()):
                add("kms.allowed_keys", f"{key!r:.80} is not a key id, ARN or alias")
    unknown = sorted(config.operations - set(OPERATIONS))
    if unknown:
        add("kms.operations", f"unknown {', '.join(unknown)}; known: {', '.join(OPERATIONS)}")


def _check_links(config: ServiceConfig, problems: Problems) -> None:
    """Where the service's own relays and clients connect: egress, logs, credentials."""
    if config.egress_listen:
        text = config.egress_listen
        why = (
            f"{text!r:.80} must be tcp:HOST:PORT on a loopback host "
            "(the proxy is for this enclave's own processes)"
        )
        egress = _address(problems, "egress.listen", text, ("tcp",), why)
        if egress is not None and not is_loopback(egress.host):
            problems.add("egress.listen", why)
        why = "the parent-egress relay is reached over vsock or tcp"
        _address(problems, "egress.parent", config.egress_parent, ("vsock", "tcp"), why)
    _address(problems, "logs.ship_to", config.logs_ship_to, ("vsock", "tcp", "unix"), "")
    if config.credentials_source not in CREDENTIAL_SOURCES:
        problems.add(
            "credentials.source",
            f"{config.credentials_source!r:.40} is not one of {', '.join(CREDENTIAL_SOURCES)}",
        )
    elif config.credentials_source == "parent":
        why = "the credential server is reached over vsock or tcp"
        _address(problems, "credentials.parent", config.credentials_parent, ("vsock", "tcp"), why)
    if config.credentials_imds_url and config.credentials_source != "imds":
        problems.add("credentials.imds_url", 'applies only with credentials.source = "imds"')
    elif config.credentials_imds_url and not is_http_url(config.credentials_imds_url):
        problems.add("credentials.imds_url", "must be an http:// URL (IMDS is plain HTTP)")


def _address(
    problems: Problems, key: str, text: str, kinds: tuple[str, ...], refusal: str
) -> Address | None:
    """``text`` (if given) as an address of ``kinds``, else a problem (``refusal``: of a kind)."""
    if not text:
        return None
    try:
        address = parse_address(text)
    except ValueError as exc:
        hint = " (write HOST:PORT, e.g. 127.0.0.1:8080)" if key == "api.tcp" else ""
        problems.add(key, f"{exc}{hint}")
        return None
    if address.kind in kinds:
        return address
    problems.add(key, refusal)
    return None


def _check_limits(config: ServiceConfig, problems: Problems) -> None:
    add = problems.add
    if not (math.isfinite(config.cache_max_age) and config.cache_max_age > 0):
        add("cache.max_age", "must be a positive number of seconds")
    if config.cache_max_messages < 1:
        add("cache.max_messages", "must be at least 1")
    if config.cache_max_bytes < 1:
        add("cache.max_bytes", "must be at least 1")
    if not 1024 <= config.max_body <= 16 * 1024 * 1024:
        add("limits.max_body", "must be between 1024 and 16777216 bytes")
    if not 1 <= config.max_connections <= 65536:
        add("limits.max_connections", "must be between 1 and 65536")
    if not (math.isfinite(config.idle_timeout) and 0 < config.idle_timeout <= 3600):
        add("limits.idle_timeout", "must be between 0 and 3600 seconds")


_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


def _check_kms_endpoint(config: ServiceConfig, problems: Problems) -> None:
    """``[kms_endpoint]``: inside the enclave only (loopback TCP or a Unix socket)."""
    add = problems.add
    text = config.kms_endpoint_listen
    why = (
        f"{text!r:.80} is not allowed: the KMS endpoint answers with plaintexts (Decrypt, "
        "GenerateDataKey, ...) to whoever connects, so it listens only inside the enclave, "
        'on a loopback host ("tcp:127.0.0.1:4566", "tcp:[::1]:4566", "tcp:localhost:4566") '
        'or a Unix socket ("unix:/run/attested/kms.sock"); never on vsock or another '
        "address, which the parent instance or the network could reach"
    )
    address = _address(problems, "kms_endpoint.listen", text, ("tcp", "unix"), why)
    if address is not None and address.kind == "tcp" and not is_loopback(address.host):
        add("kms_endpoint.listen", why)
    if address is not None and address.kind == "unix":
        path = address.path or ""
        if "\x00" in path or not os.path.isabs(path):
            add("kms_endpoint.listen", f"{path!r:.200} must be an absolute path")
        elif _fs_length(path) > 107:
            add("kms_endpoint.listen", "the path is longer than a Unix socket path may be")
        elif path == config.api_unix:
            add("kms_endpoint.listen", "is the API's socket (api.unix); give it its own path")
    if address is not None and address.kind == "tcp" and address.port:
        for key, other in (("api.tcp", config.api_tcp), ("egress.listen", config.egress_listen)):
            if other and _same_tcp(address, other):
                add("kms_endpoint.listen", f"is also {key}; give it its own port")
    if not 0 <= config.kms_endpoint_unix_mode <= 0o777 or config.kms_endpoint_unix_mode & 0o007:
        add(
            "kms_endpoint.unix_mode",
            "must be an octal mode that gives others no access (e.g. 0660)",
        )
    key_id = config.kms_endpoint_access_key_id
    if key_id and not _ACCESS_KEY_ID.fullmatch(key_id):
        add(
            "kms_endpoint.access_key_id",
            "must be an access key id (16 to 128 capital letters and digits, e.g. "
            "AKIAIOSFODNN7EXAMPLE)",
        )
    if not text and (config.kms_endpoint_allow_reencrypt or key_id):
        add("kms_endpoint", "allow_reencrypt and access_key_id apply only with listen")


def _same_tcp(address: Address, other: str) -> bool:
    try:
        found = parse_address(other)
    except ValueError:
        return False
    return found.kind == "tcp" and (found.host, found.port) == (address.host, address.port)


_CHECKS = (
    _check_api,
    _check_nsm,
    _check_kms,
    _check_links,
    _check_limits,
    _check_kms_endpoint,
)


def _fs_length(path: str) -> int:
    """The length of ``path`` in bytes as the OS sees it (a huge one if not encodable)."""
    try:
        return len(os.fsencode(path))
    except UnicodeEncodeError:
        return 1 << 30


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
        "nitrotpm_device": ("nsm_nitrotpm_device", "str"),
        "nitrotpm_tool": ("nsm_nitrotpm_tool", "str"),
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
        "imds_url": ("credentials_imds_url", "str"),
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
    "kms_endpoint": {
        "listen": ("kms_endpoint_listen", "str"),
        "unix_mode": ("kms_endpoint_unix_mode", "mode"),
        "allow_reencrypt": ("kms_endpoint_allow_reencrypt", "bool"),
        "access_key_id": ("kms_endpoint_access_key_id", "str"),
    },
}


_GETTERS: dict[str, Callable[[Section, str, None], object]] = {
    "str": Section.text,
    "tcp": Section.text,
    "bool": Section.flag,
    "int": Section.integer,
    "float": Section.number,
    "strlist": Section.strings,
    "mode": Section.mode,
}


def _pcrs(nsm: Section) -> dict[int, bytes]:
    value = nsm.get("simulated_pcrs", {})
    if not isinstance(value, Mapping):
        nsm.problem("simulated_pcrs", 'must be a table of index to hex, e.g. {"0" = "..."}')
        return {}
    pcrs: dict[int, bytes] = {}
    for key, text in value.items():
        if not (_PCR_INDEX.fullmatch(key) and int(key) <= 31):
            nsm.problem("simulated_pcrs", f"key {key!r:.20} is not a PCR index 0-31")
            continue
        try:
            pcr = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            pcr = b""
        if len(pcr) in (32, 48, 64):
            pcrs[int(key)] = pcr
        else:
            nsm.problems.add(f"nsm.simulated_pcrs.{key}", "must be 96 hex digits (a SHA-384 PCR)")
    return pcrs


def _tcp_spec(text: str) -> str:
    """``127.0.0.1:8080`` and ``tcp:127.0.0.1:8080`` both name a TCP listener."""
    return text if not text or text.startswith("tcp:") else f"tcp:{text}"


def _measurement_pcrs(path: str, problems: Problems) -> dict[int, bytes]:
    from attested.keypolicy import parse_measurements
    from attested.keypolicy._measurements import MAX_MEASUREMENTS_SIZE

    key = "nsm.simulated_measurements"
    try:
        with Path(path).open("rb") as handle:  # bounded: the path may be /dev/zero
            data = handle.read(MAX_MEASUREMENTS_SIZE + 1)
        sets = parse_measurements(data, source=path)
    except OSError as exc:
        problems.add(key, f"cannot read {path!r:.200}: {exc.strerror}")
        return {}
    except ValueError:  # a NUL in the path
        problems.add(key, f"{path!r:.200} is not a file path")
        return {}
    except MalformedError as exc:
        problems.add(key, str(exc))
        return {}
    if len(sets) != 1:
        problems.add(key, f"{path!r:.200} holds {len(sets)} images, not 1")
        return {}
    return {i: v for i, v in sets[0].pcrs.items() if i in (0, 1, 2)}


def _from_file(config: Path, value: object) -> str:
    """A path as written in the file at ``config``: relative ones from its directory."""
    if not isinstance(value, str) or not value or "\0" in value:
        return value if isinstance(value, str) else ""
    return str(config.parent / value)


def load_config(
    path: Path | None,
    env: Mapping[str, str],
    *,
    extra: Mapping[str, Callable[[Section], None]] | None = None,
) -> ServiceConfig:
    """Read the TOML file (if any), apply environment overrides, check everything.

    Args:
        path: the TOML file; ``None`` for defaults and environment only. Relative paths
            in it are taken from its directory (as in ``attested parent``'s file).
        env: the environment (``os.environ``), for the ``ATTESTED_*`` overrides.
        extra: more top-level keys a caller reads from the same document (``attested
            exec``'s ``[[secrets]]``): each reader gets the whole document's
            :class:`Section` and records its problems there, so they are listed with
            the service's in one ``ConfigError``.

    Returns:
        The checked configuration.

    Raises:
        ConfigError: one message per problem: unknown keys, wrong types, bad values,
            unreadable files.
    """
    problems, extra = Problems(), extra or {}
    document = None if path is None else read_file(path, problems, name=str(path))
    if path is not None and document is None:  # unreadable, not TOML: the rest is noise
        problems.raise_if_any()
    top = Section(problems, document, overrides=read_environment(_OVERRIDES, env, problems))
    top.refuse_unknown([*_SCHEMA[""], *(section for section in _SCHEMA if section), *extra])
    sections = {name: top.table(name) if name else top for name in _SCHEMA}
    values: dict[str, object] = {}
    for section_name, keys in _SCHEMA.items():
        section = sections[section_name]
        if section_name:
            section.refuse_unknown(keys)
        for key, (field_name, kind) in keys.items():
            value = _GETTERS[kind](section, key, None) if field_name else None
            if isinstance(value, str) and kind == "tcp":
                value = _tcp_spec(value)
            if value is not None:
                values[field_name] = value
    nsm = sections["nsm"]
    simulated: dict[int, bytes] = {}
    measurements = nsm.text("simulated_measurements", "")
    if path is not None:  # relative paths in the file are taken from its directory
        measurements = _from_file(path, measurements)
        values["nsm_simulated_state"] = _from_file(path, values.get("nsm_simulated_state"))
        if "ATTESTED_CA_BUNDLE" not in env:
            values["kms_ca_bundle"] = _from_file(path, values.get("kms_ca_bundle"))
    if measurements and values.get("nsm_backend", "auto") == "simulated":
        simulated.update(_measurement_pcrs(measurements, problems))
    elif measurements:
        nsm.problem("simulated_measurements", 'applies only with nsm.backend = "simulated"')
    simulated.update(_pcrs(nsm))
    if simulated:
        values["nsm_simulated_pcrs"] = simulated
    for read in extra.values():
        read(top)
    config = problems.check("", lambda: ServiceConfig(**values))  # type: ignore[arg-type]
    problems.raise_if_any()
    assert config is not None  # noqa: S101 - no problem means it was built
    return config
