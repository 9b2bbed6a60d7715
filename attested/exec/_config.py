"""``attested exec``'s configuration: serve's TOML plus four sections of its own.

``[[secrets]]``, ``[[hosts]]``, ``[[ingress]]`` and ``[exec]``. The document is read
once, by serve's loader (:func:`attested.service.load_config`), which hands these
top-level keys to the readers here through its ``extra`` hook: one file, one reader, one
:class:`~attested.errors.ConfigError` listing every problem of both. Every string has a
length cap and every list a count cap; messages name the key (``secrets.db-password.key_id``)
and never repeat a ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from attested._aws import SECRETSMANAGER_ARN
from attested._runtime.config import Section
from attested.kms import NetworkSettings
from attested.net import Address, is_loopback
from attested.relay._allowlist import normalize_host
from attested.service import ServiceConfig, load_config

__all__ = [
    "MAX_CIPHERTEXT",
    "MAX_HOSTS",
    "MAX_INGRESS",
    "MAX_SECRETS",
    "CiphertextFile",
    "ExecConfig",
    "ExecSettings",
    "HostEntry",
    "IngressSpec",
    "InlineCiphertext",
    "S3Object",
    "SecretSpec",
    "SecretsManagerItem",
    "Source",
    "SsmParameter",
    "load_exec_config",
    "parse_s3_url",
]

MAX_SECRETS = 64
MAX_HOSTS = 256
MAX_INGRESS = 32
MAX_PORTS = 16
MAX_CONTEXT_PAIRS = 32
MAX_CONTEXT_TEXT = 1024
MAX_CIPHERTEXT = 6144
"""The largest KMS ciphertext (``CiphertextBlob``), in bytes."""
_MAX_CIPHERTEXT_TEXT = 16384  # base64 of MAX_CIPHERTEXT, with room for line breaks
_MAX_PATH = 1024
_MAX_KEY_ID = 2048
_MAX_SSM_NAME = 2048

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SSM_NAME = re.compile(r"[A-Za-z0-9_./-]{1,2048}")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}")
_NUMBER = re.compile(r"[0-9]{1,10}")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_E = TypeVar("_E")
_SOURCES = ("ciphertext", "ciphertext_file", "secretsmanager", "ssm", "s3")
_FILE_MODES = {"0400": 0o400, "0440": 0o440}
_TMPFS = ("require", "warn")

_SECRET_KEYS = (
    "name",
    *_SOURCES,
    "key_id",
    "encryption_context",
    "env",
    "file",
    "owner",
    "mode",
    "optional",
)
_EXEC_KEYS = (
    "app_name",
    "hosts_file",
    "loopback",
    "tmpfs",
    "stop_timeout",
    "subreaper",
    "proxy_env",
    "parallel",
    "secretsmanager_endpoint_url",
    "ssm_endpoint_url",
    "s3_endpoint_url",
)


# --- where a ciphertext is stored ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineCiphertext:
    """The ciphertext itself, in the configuration (``ciphertext = "AQICAHh..."``)."""

    blob: bytes = field(repr=False)

    def __str__(self) -> str:
        return "the inline ciphertext"


@dataclass(frozen=True, slots=True, kw_only=True)
class CiphertextFile:
    """A file in the image holding the ciphertext, raw or base64 (``ciphertext_file``)."""

    path: str

    def __str__(self) -> str:
        return f"the file {self.path}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsManagerItem:
    """A Secrets Manager secret whose SecretBinary (or base64 SecretString) is the ciphertext.

    Attributes:
        secret_id: the ARN or name, as given.
        region: the ARN's region, or ``None`` for the configuration's.
    """

    secret_id: str
    region: str | None = None

    def __str__(self) -> str:
        return f"Secrets Manager item {self.secret_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SsmParameter:
    """An SSM parameter whose value is the base64 ciphertext."""

    name: str

    def __str__(self) -> str:
        return f"SSM parameter {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Object:
    """An S3 object holding the ciphertext, raw or base64 (``s3://bucket/key``)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"S3 object s3://{self.bucket}/{self.key}"


Source = InlineCiphertext | CiphertextFile | SecretsManagerItem | SsmParameter | S3Object


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSpec:
    """One ``[[secrets]]`` entry: where its ciphertext is, which key opens it, where it goes.

    Attributes:
        name: for messages and logs, never the value.
        source: where the KMS ciphertext is stored.
        key_id: the KMS key (sent as ``KeyId``, so a ciphertext under another key is
            refused); listed in ``kms.allowed_keys``.
        encryption_context: must equal the context the ciphertext was made with.
        env: the app's environment variable for the plaintext, or ``""``.
        file: the file for the plaintext, or ``""``.
        owner: ``(uid, gid)`` of the file (``-1``: unchanged), or ``None`` (exec's own).
        file_mode: ``0o400`` or ``0o440``.
        optional: start the app without it if it cannot be opened.
    """

    name: str
    source: Source
    key_id: str
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    env: str = ""
    file: str = ""
    owner: tuple[int, int] | None = None
    file_mode: int = 0o400
    optional: bool = False

    def __post_init__(self) -> None:
        context = MappingProxyType(dict(self.encryption_context))
        object.__setattr__(self, "encryption_context", context)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostEntry:
    """One ``[[hosts]]`` entry: a name a legacy app dials, and its loopback forward.

    ``name`` resolves to ``address`` in the hosts file, and each of ``ports`` on
    ``address`` is tunnelled to ``name`` through the parent's egress relay.
    """

    name: str
    address: str
    ports: tuple[int, ...] = (443,)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressSpec:
    """One ``[[ingress]]`` forward: from the parent (``listen``, vsock) to the app (``to``)."""

    listen: Address
    to: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSettings:
    """The ``[exec]`` table.

    Attributes:
        app_name: the app's name in shipped log lines; ``""``: the command's file name.
        hosts_file: where ``[[hosts]]`` entries are written.
        loopback: bring ``lo`` up with 127.0.0.1/8 first.
        tmpfs: ``require`` (refuse) or ``warn`` when a secret file's directory is not
            on tmpfs or ramfs.
        stop_timeout: seconds the app gets after SIGTERM (then SIGKILL), and the parts
            to stop.
        subreaper: when not PID 1, adopt the app's orphans (``PR_SET_CHILD_SUBREAPER``).
        proxy_env: give the app ``HTTPS_PROXY`` and ``NO_PROXY`` for the in-process egress
            relay, unless the environment sets them already.
        parallel: secrets opened at once, at most.
        secretsmanager_endpoint_url, ssm_endpoint_url, s3_endpoint_url: replace AWS's
            regional endpoints (VPC endpoints, tests).
    """

    app_name: str = ""
    hosts_file: str = "/etc/hosts"
    loopback: bool = True
    tmpfs: str = "require"
    stop_timeout: float = 10.0
    subreaper: bool = True
    proxy_env: bool = True
    parallel: int = 16
    secretsmanager_endpoint_url: str = ""
    ssm_endpoint_url: str = ""
    s3_endpoint_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecConfig:
    """Everything ``attested exec`` needs, checked.

    Attributes:
        service: serve's part (the local API, egress, logs, KMS, credentials, NSM).
        secrets: the ``[[secrets]]``, in file order.
        hosts: the ``[[hosts]]``.
        ingress: the ``[[ingress]]`` forwards.
        settings: the ``[exec]`` table.
    """

    service: ServiceConfig
    secrets: tuple[SecretSpec, ...] = ()
    hosts: tuple[HostEntry, ...] = ()
    ingress: tuple[IngressSpec, ...] = ()
    settings: ExecSettings = field(default_factory=ExecSettings)


def load_exec_config(path: Path | None, env: Mapping[str, str]) -> ExecConfig:
    """Read serve's configuration and exec's sections from one file, check everything.

    Args:
        path: the TOML file; ``None`` for defaults and environment only.
        env: the environment, for the ``ATTESTED_*`` overrides (serve's).

    Returns:
        The checked configuration.

    Raises:
        ConfigError: every problem of the file, serve's keys and exec's alike.
    """
    found: dict[str, object] = {}
    base = None if path is None else path.parent  # relative paths: from the file's directory
    readers: dict[str, Callable[[Section], None]] = {
        "secrets": lambda top: found.__setitem__("secrets", _secrets(top, base)),
        "hosts": lambda top: found.__setitem__("hosts", _hosts(top)),
        "ingress": lambda top: found.__setitem__("ingress", _ingress(top)),
        "exec": lambda top: found.__setitem__("settings", _settings(top.table("exec"))),
    }
    service = load_config(path, env, extra=readers)
    return ExecConfig(service=service, **found)  # type: ignore[arg-type]


# --- [[secrets]] -------------------------------------------------------------------------


def _items(top: Section, key: str, cap: int) -> list[Section]:
    """The tables of ``[[key]]``, each named ``key.NAME`` when it has a good name."""
    top.tables(key, max_items=cap)  # records what is wrong with the list itself
    raw = top.get(key, [])
    if not isinstance(raw, list) or len(raw) > cap:
        return []
    sections = []
    for index, item in enumerate(raw):
        if isinstance(item, Mapping):
            name = item.get("name")
            where = f"{key}.{name}" if isinstance(name, str) and _NAME.fullmatch(name) else ""
            sections.append(Section(top.problems, item, where=where or f"{key}[{index}]"))
    return sections


def _secrets(top: Section, base: Path | None) -> tuple[SecretSpec, ...]:
    allowed = top.table("kms").get("allowed_keys")
    allowed_keys = tuple(allowed) if isinstance(allowed, list) else ()
    specs: list[SecretSpec] = []
    seen: dict[str, set[str]] = {"name": set(), "env": set(), "file": set()}
    for section in _items(top, "secrets", MAX_SECRETS):
        section.refuse_unknown(_SECRET_KEYS)
        for key, values in seen.items():  # as written, also in secrets with other problems
            value = section.get(key)
            if isinstance(value, str) and value:
                value = os.path.normpath(value) if key == "file" else value
                if value in values:
                    section.problem(key, f"{value!r:.80} is used by another secret")
                values.add(value)
        spec = _secret(section, allowed_keys, base)
        if spec is not None:
            specs.append(spec)
    return tuple(specs)


def _secret(
    section: Section, allowed_keys: tuple[str, ...], base: Path | None
) -> SecretSpec | None:
    before = len(section.problems)
    name = section.text("name", "")
    if not _NAME.fullmatch(name):
        section.problem("name", "required: 1-64 letters, digits, '.', '_' or '-'")
    source = _source(section, base)
    key_id = section.text("key_id", "")
    if not key_id:
        section.problem("key_id", "required: the KMS key the ciphertext was made under")
    elif len(key_id) > _MAX_KEY_ID or key_id != key_id.strip():
        section.problem("key_id", "is not a key id, ARN or alias")
    elif allowed_keys and allowed_keys != ("*",) and key_id not in allowed_keys:
        section.problem("key_id", "is not in kms.allowed_keys (it must be listed there, exactly)")
    context = _context(section)
    env = section.text("env", "")
    if env and not _ENV.fullmatch(env):
        section.problem("env", "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    file = section.text("file", "")
    if file:
        _check_path(section, "file", file)
        if file.endswith("/"):
            section.problem("file", "must name a file, not a directory")
    if not env and not file:
        section.problem(None, "goes nowhere: give env, file or both")
    owner = _owner(section)
    if owner is not None and not file:
        section.problem("owner", "applies only with file")
    mode_text = section.text("mode", "0400")
    if mode_text not in _FILE_MODES:
        section.problem("mode", 'must be "0400" or "0440" (never writable, never for others)')
    optional = section.flag("optional", False)
    if len(section.problems) > before or source is None:
        return None
    return SecretSpec(
        name=name,
        source=source,
        key_id=key_id,
        encryption_context=context,
        env=env,
        file=os.path.normpath(file) if file else "",
        owner=owner,
        file_mode=_FILE_MODES[mode_text],
        optional=optional,
    )


def _source(section: Section, base: Path | None) -> Source | None:
    given = [key for key in _SOURCES if section.has(key)]
    if len(given) != 1:
        which = ", ".join(_SOURCES)
        section.problem(None, f"give exactly one of {which} (not {len(given)})")
        return None
    key = given[0]
    text = section.text(key, "")
    if not text:
        section.problem(key, "must be a non-empty string")
        return None
    try:
        if key == "ciphertext":
            return InlineCiphertext(blob=decode_ciphertext_text(text))
        if key == "ciphertext_file":
            if base is not None and not text.startswith("/") and "\x00" not in text:
                text = str(base.resolve() / text)  # as serve's paths: from the file's directory
            _check_path(section, key, text)
            return CiphertextFile(path=text)
        if key == "secretsmanager":
            return _secretsmanager(text)
        if key == "ssm":
            if len(text) > _MAX_SSM_NAME or not _SSM_NAME.fullmatch(text):
                raise ValueError("is not an SSM parameter name (letters, digits, _ . - /)")
            return SsmParameter(name=text)
        bucket, object_key = parse_s3_url(text)
        return S3Object(bucket=bucket, key=object_key)
    except ValueError as exc:
        section.problem(key, str(exc))
        return None


def decode_ciphertext_text(text: str) -> bytes:
    """Standard padded base64 (line breaks allowed) of 1 to 6144 bytes.

    Raises:
        ValueError: it is not (the message never repeats the text).
    """
    if len(text) > _MAX_CIPHERTEXT_TEXT:
        raise ValueError(f"is longer than a KMS ciphertext in base64 ({_MAX_CIPHERTEXT_TEXT})")
    compact = "".join(text.split()).encode("ascii", "replace")
    if not _BASE64.fullmatch(compact) or len(compact) % 4:
        raise ValueError("is not standard padded base64 (the CiphertextBlob, base64-encoded)")
    try:
        blob = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not standard padded base64") from None
    if not 1 <= len(blob) <= MAX_CIPHERTEXT:
        raise ValueError(f"must decode to 1 to {MAX_CIPHERTEXT} bytes (a KMS ciphertext)")
    return blob


def _secretsmanager(text: str) -> SecretsManagerItem:
    if text.startswith("arn:"):
        match = SECRETSMANAGER_ARN.fullmatch(text)
        if match is None:
            raise ValueError(
                "is not a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
            )
        return SecretsManagerItem(secret_id=text, region=match.group("region"))
    if not _SECRET_NAME.fullmatch(text):
        raise ValueError("is not a Secrets Manager ARN or secret name")
    return SecretsManagerItem(secret_id=text)


def parse_s3_url(text: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as ``(bucket, key)``.

    The bucket follows S3's naming rules (3-63 lowercase letters, digits, dots and
    hyphens, not an IP address); the key is 1-1024 bytes of UTF-8 with no control
    character.

    Raises:
        ValueError: it is not such a URL.
    """
    if len(text) > 1100 or not text.startswith("s3://"):
        raise ValueError("must be s3://BUCKET/KEY")
    bucket, slash, key = text[5:].partition("/")
    if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket or _is_ip(bucket):
        raise ValueError("has no valid bucket name (s3://BUCKET/KEY)")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        size = 0
    if not slash or not 1 <= size <= 1024 or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError("has no valid object key (s3://BUCKET/KEY, 1-1024 bytes)")
    return bucket, key


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _context(section: Section) -> dict[str, str]:
    value = section.get("encryption_context", {})
    if not isinstance(value, Mapping):
        section.problem("encryption_context", 'must be a table of strings, { app = "billing" }')
        return {}
    if len(value) > MAX_CONTEXT_PAIRS:
        section.problem("encryption_context", f"at most {MAX_CONTEXT_PAIRS} pairs")
        return {}
    context: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            section.problem("encryption_context", "values must be strings")
        elif not 1 <= len(key) <= MAX_CONTEXT_TEXT or len(item) > MAX_CONTEXT_TEXT:
            section.problem("encryption_context", f"keys and values: at most {MAX_CONTEXT_TEXT}")
        elif _unencodable(key) or _unencodable(item):
            section.problem("encryption_context", "keys and values must be valid Unicode")
        else:
            context[key] = item
    return context


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _owner(section: Section) -> tuple[int, int] | None:
    text = section.text("owner", "")
    if not text:
        return None
    user, colon, group = text.partition(":")
    try:
        uid, primary = _account(user, pwd.getpwnam, lambda e: (e.pw_uid, e.pw_gid))
        gid = _account(group, grp.getgrnam, lambda e: (e.gr_gid, e.gr_gid))[0] if colon else -1
    except (KeyError, ValueError):
        section.problem("owner", 'must be "USER", "USER:GROUP", "UID" or "UID:GID" known here')
        return None
    return uid, gid if colon else primary


def _account(
    text: str, lookup: Callable[[str], _E], ids: Callable[[_E], tuple[int, int]]
) -> tuple[int, int]:
    if _NUMBER.fullmatch(text) and int(text) < 0xFFFFFFFF:
        return int(text), -1
    if not _ACCOUNT_NAME.fullmatch(text):
        raise ValueError(text)
    return ids(lookup(text))


def _check_path(section: Section, key: str, text: str) -> None:
    if "\x00" in text or not text.startswith("/") or len(text) > _MAX_PATH or _unencodable(text):
        section.problem(key, f"must be an absolute path (at most {_MAX_PATH} characters)")


# --- [[hosts]], [[ingress]], [exec] --------------------------------------------------------


def _hosts(top: Section) -> tuple[HostEntry, ...]:
    entries: list[HostEntry] = []
    names: set[str] = set()
    bound: set[tuple[str, int]] = set()
    for section in _host_sections(top):
        section.refuse_unknown(("name", "address", "ports"))
        before = len(section.problems)
        name = section.text("name", "")
        try:
            name = normalize_host(name)
            if _is_ip(name):
                raise ValueError("is an IP address, not a name")
        except ValueError as exc:
            section.problem("name", f"required: a DNS name ({exc})")
        address = section.text("address", "")
        if not _loopback_v4(address):
            section.problem("address", "must be an IPv4 address in 127.0.0.0/8, e.g. 127.0.0.10")
        ports = _ports(section)
        if len(section.problems) > before:
            continue
        if name in names:
            section.problem("name", "is listed twice")
        names.add(name)
        for port in ports:
            if (address, port) in bound:
                section.problem("ports", f"{address}:{port} is used by another entry")
            bound.add((address, port))
        entries.append(HostEntry(name=name, address=address, ports=ports))
    return tuple(entries)


def _host_sections(top: Section) -> list[Section]:
    top.tables("hosts", max_items=MAX_HOSTS)
    raw = top.get("hosts", [])
    if not isinstance(raw, list) or len(raw) > MAX_HOSTS:
        return []
    return [
        Section(top.problems, item, where=f"hosts[{index}]")
        for index, item in enumerate(raw)
        if isinstance(item, Mapping)
    ]


def _loopback_v4(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback and str(address) == text


def _ports(section: Section) -> tuple[int, ...]:
    value = section.get("ports", [443])
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_PORTS
        or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value
        )
    ):
        section.problem("ports", f"must be a list of 1 to {MAX_PORTS} ports (1-65535)")
        return ()
    if len(set(value)) != len(value):
        section.problem("ports", "lists a port twice")
        return ()
    return tuple(value)


def _ingress(top: Section) -> tuple[IngressSpec, ...]:
    forwards: list[IngressSpec] = []
    for section in top.tables("ingress", max_items=MAX_INGRESS):
        section.refuse_unknown(("listen", "to"))
        before = len(section.problems)
        listen = section.address("listen", kinds=("vsock", "tcp"))
        to = section.address("to", kinds=("tcp", "unix"))
        if to is not None and to.kind == "tcp" and not is_loopback(to.host):
            section.problem("to", "must be the app inside the enclave: a loopback tcp or unix")
        if listen is not None and to is not None and len(section.problems) == before:
            forwards.append(IngressSpec(listen=listen, to=to))
    return tuple(forwards)


def _settings(section: Section) -> ExecSettings:
    section.refuse_unknown(_EXEC_KEYS)
    app_name = section.text("app_name", "")
    if app_name and not _NAME.fullmatch(app_name):
        section.problem("app_name", "1-64 letters, digits, '.', '_' or '-'")
    hosts_file = section.text("hosts_file", "/etc/hosts")
    _check_path(section, "hosts_file", hosts_file)
    endpoints = {key: _endpoint(section, key) for key in ("secretsmanager", "ssm", "s3")}
    return ExecSettings(
        app_name=app_name,
        hosts_file=hosts_file,
        loopback=section.flag("loopback", True),
        tmpfs=section.text("tmpfs", "require", choices=_TMPFS),
        stop_timeout=section.number("stop_timeout", 10.0, minimum=0, maximum=300, exclusive=True),
        subreaper=section.flag("subreaper", True),
        proxy_env=section.flag("proxy_env", True),
        parallel=section.integer("parallel", 16, minimum=1, maximum=64),
        secretsmanager_endpoint_url=endpoints["secretsmanager"],
        ssm_endpoint_url=endpoints["ssm"],
        s3_endpoint_url=endpoints["s3"],
    )


def _endpoint(section: Section, service: str) -> str:
    """``SERVICE_endpoint_url``, checked by the rule the KMS client's endpoint follows."""
    key = f"{service}_endpoint_url"
    url = section.text(key, "")
    if not url:
        return ""
    checked = section.problems.check(section.key(key), lambda: NetworkSettings(endpoint_url=url))
    return "" if checked is None else url
