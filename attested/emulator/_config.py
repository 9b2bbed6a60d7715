"""Emulator configuration: identities, fault injection, and everything else in one object."""

from __future__ import annotations

import logging
import os
import re
import stat
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attested import _json, _toml
from attested.emulator._sigv4 import Identity
from attested.errors import ConfigurationError, MalformedError
from attested.net import is_loopback
from attested.trust import TrustRoot

__all__ = [
    "DEV_ACCESS_KEY_ID",
    "DEV_ARN",
    "DEV_SECRET_ACCESS_KEY",
    "EmulatorConfig",
    "FaultConfig",
    "dev_identities",
    "is_loopback",
    "load_identities",
    "parse_identities",
]

logger = logging.getLogger(__name__)

DEV_ACCESS_KEY_ID = "AKIAATTESTEDEXAMPLE1"
"""The built-in development access key id. The digit 1 is outside the base32 alphabet of
real AWS access keys, so it can never be a real credential."""
DEV_SECRET_ACCESS_KEY = "attested-emulator-development-secret-not-a-credential"  # noqa: S105
"""The built-in development secret: public, documented, for local use only."""
DEV_ARN = "arn:aws:iam::111122223333:role/attested-developer"
"""Who the built-in development identity is (111122223333 is AWS's documentation account)."""

_MAX_IDENTITIES_FILE = 1024 * 1024
_IDENTITY_FIELDS = frozenset(
    {"access_key_id", "secret_access_key", "arn", "session_token", "principal_arn"}
)
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_MAX_LATENCY = 30.0


def dev_identities() -> Mapping[str, Identity]:
    """The built-in development identity, keyed by its access key id."""
    return types.MappingProxyType(
        {DEV_ACCESS_KEY_ID: Identity(secret_access_key=DEV_SECRET_ACCESS_KEY, arn=DEV_ARN)}
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """Faults to inject, for testing clients against a misbehaving KMS.

    Each request (in arrival order) takes one draw from a random generator seeded with
    ``seed``, so the same sequence of requests meets the same faults. At most one of
    *drop*, *throttle* and *error* hits a request, with the given probabilities;
    latency is added on top.

    Attributes:
        seed: the seed of the generator.
        latency: seconds added to each affected request (at most 30).
        latency_jitter: plus a uniform random ``[0, latency_jitter)`` seconds.
        throttle_rate: probability of ``ThrottlingException`` (HTTP 400).
        error_rate: probability of ``KMSInternalException`` (HTTP 500).
        drop_rate: probability of closing the connection without an answer.
        max_faults: stop injecting drops, throttles and errors after this many
            (``None``: no limit).
        operations: only requests for these operations (``{"Decrypt"}``) are affected;
            ``None`` for all.
    """

    seed: int = 0
    latency: float = 0.0
    latency_jitter: float = 0.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    max_faults: int | None = None
    operations: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "drop_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.throttle_rate + self.error_rate + self.drop_rate > 1.0 + 1e-9:
            raise ValueError("throttle_rate + error_rate + drop_rate must be at most 1")
        for name in ("latency", "latency_jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= _MAX_LATENCY:
                raise ValueError(f"{name} must be between 0 and {_MAX_LATENCY:g} seconds")
        max_faults: object = self.max_faults
        if max_faults is not None and (not isinstance(max_faults, int) or max_faults < 0):
            raise ValueError("max_faults must be a non-negative integer or None")
        if self.operations is not None:
            object.__setattr__(self, "operations", frozenset(self.operations))

    @property
    def active(self) -> bool:
        """Whether any fault can be injected."""
        rates = self.throttle_rate + self.error_rate + self.drop_rate
        return bool(self.latency or self.latency_jitter or rates)


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    """Everything the KMS emulator needs.

    Attributes:
        trust_root: the root that ``Recipient`` attestation documents must chain to
            (the simulated NSM's root for local development, or the AWS root).
        host: the address to listen on; loopback unless ``allow_remote``.
        port: the TCP port; 0 picks a free one.
        region: the region in ARNs and in SigV4 scopes.
        account_id: the account that owns the keys; ``None`` takes the one account of
            the identities.
        identities: access key id to :class:`Identity`; the built-in development
            identity by default.
        state_path: an SQLite file that keeps keys, aliases and policies across
            restarts (mode 0600, key material unencrypted); ``None`` keeps them in memory.
        faults: fault injection (none by default).
        tls: ``(certificate PEM path, private key PEM path)`` to serve HTTPS.
        allow_remote: listen on a non-loopback address. **Danger**: the emulator is a
            development tool; anyone who can reach it can use its keys with the
            development credentials.
        max_body_size: largest request body accepted, in bytes.
        max_connections: open connections at once; more are closed at once.
        idle_timeout: seconds a connection may stay silent before it is closed.
        clock: the emulator's clock (tests inject one); timezone-aware UTC.
    """

    trust_root: TrustRoot
    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    account_id: str | None = None
    identities: Mapping[str, Identity] = field(default_factory=dev_identities)
    state_path: Path | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    tls: tuple[str | Path, str | Path] | None = None
    allow_remote: bool = False
    max_body_size: int = 1024 * 1024
    max_connections: int = 256
    idle_timeout: float = 60.0
    clock: Callable[[], datetime] = field(default=_utc_now, repr=False)

    def __post_init__(self) -> None:
        trust_root: object = self.trust_root
        if not isinstance(trust_root, TrustRoot):
            raise TypeError("trust_root must be an attested.TrustRoot")
        port: object = self.port
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if not _REGION_RE.fullmatch(self.region):
            raise ValueError(f"region {self.region!r:.40} does not look like an AWS region")
        if self.account_id is not None and not _ACCOUNT_RE.fullmatch(self.account_id):
            raise ValueError("account_id must be 12 digits")
        entries: object = self.identities
        if not isinstance(entries, Mapping):
            raise TypeError("identities must be a mapping")
        for key_id, identity in entries.items():
            if not isinstance(key_id, str) or not key_id or not isinstance(identity, Identity):
                raise TypeError("identities must map access key ids to Identity objects")
        if self.state_path is not None:
            object.__setattr__(self, "state_path", Path(self.state_path))
        if self.max_body_size < 1024 or self.max_connections < 1 or self.idle_timeout <= 0:
            raise ValueError("max_body_size, max_connections and idle_timeout must be positive")
        if not isinstance(self.faults, FaultConfig):
            raise TypeError("faults must be a FaultConfig")

    @property
    def partition(self) -> str:
        """The ARN partition of the region."""
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def resolved_account(self) -> str:
        """The account that owns the keys.

        Raises:
            ConfigurationError: ``account_id`` is not set and the identities belong to
                several accounts.
        """
        if self.account_id is not None:
            return self.account_id
        accounts = sorted({identity.account for identity in self.identities.values()})
        if len(accounts) > 1:
            raise ConfigurationError(
                f"the identities belong to several accounts ({', '.join(accounts)}); "
                "say which one owns the keys (account_id / --account)"
            )
        return accounts[0] if accounts else "111122223333"


def parse_identities(document: Any, *, source: str = "identities") -> dict[str, Identity]:
    """Identities from a parsed JSON or TOML document: ``{"identities": [{...}, ...]}``.

    Each entry has ``access_key_id``, ``secret_access_key``, ``arn``, and optionally
    ``session_token`` and ``principal_arn``.

    Raises:
        ConfigurationError: the document does not have that shape (the message never
            contains a secret).
    """
    if not isinstance(document, dict) or set(document) != {"identities"}:
        raise ConfigurationError(f"{source}: expected one top-level key 'identities'")
    entries = document["identities"]
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: 'identities' must be a non-empty list")
    result: dict[str, Identity] = {}
    for n, entry in enumerate(entries):
        where = f"{source}: identity {n}"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where} must be a table/object")
        unknown = sorted(set(entry) - _IDENTITY_FIELDS)
        if unknown:
            raise ConfigurationError(f"{where} has unknown fields: {', '.join(unknown)[:200]}")
        for name in ("access_key_id", "secret_access_key", "arn"):
            if not isinstance(entry.get(name), str) or not entry[name]:
                raise ConfigurationError(f"{where}: {name} is required (a non-empty string)")
        for name in ("session_token", "principal_arn"):
            if name in entry and not isinstance(entry[name], str):
                raise ConfigurationError(f"{where}: {name} must be a string")
        key_id = entry["access_key_id"]
        if key_id in result:
            raise ConfigurationError(f"{where}: access key id {key_id!r:.40} appears twice")
        try:
            result[key_id] = Identity(
                secret_access_key=entry["secret_access_key"],
                arn=entry["arn"],
                session_token=entry.get("session_token"),
                principal_arn=entry.get("principal_arn"),
            )
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return result


def load_identities(path: str | Path) -> dict[str, Identity]:
    """Read an identities file (JSON, or TOML when the name ends in ``.toml``).

    JSON::

        {"identities": [{"access_key_id": "AKIA...", "secret_access_key": "...",
                         "arn": "arn:aws:iam::111122223333:role/parent"}]}

    TOML::

        [[identities]]
        access_key_id = "AKIA..."
        secret_access_key = "..."
        arn = "arn:aws:iam::111122223333:role/parent"

    Raises:
        ConfigurationError: the file cannot be read or has the wrong shape.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_IDENTITIES_FILE + 1)
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read identities file {path}: {exc.strerror or exc}"
        ) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigurationError(f"cannot read identities file {path!r:.200}") from exc
    if len(data) > _MAX_IDENTITIES_FILE:
        raise ConfigurationError(f"identities file {path} is larger than 1 MiB")
    if mode & 0o077:
        logger.warning("identities file %s is readable by others (mode %o)", path, mode)
    # Both decoders are bounded (size, nesting, numbers) and never repeat the input, which
    # holds secrets.
    kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
    try:
        if kind == "TOML":
            document: Any = _toml.loads(data, max_size=_MAX_IDENTITIES_FILE)
        else:
            document = _json.loads(
                data, what="the document", max_size=_MAX_IDENTITIES_FILE, max_depth=8
            )
    except MalformedError as exc:
        raise ConfigurationError(f"identities file {path} is not valid {kind}") from exc
    return parse_identities(document, source=str(path))
