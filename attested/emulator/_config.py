"""Emulator configuration: identities, fault injection, and everything else in one object.

Read by the project's one configuration reader (:mod:`attested._runtime.config`): the
identities file, and (:func:`emulator_config`) the settings the CLI's flags give, each
reporting every problem at once.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from attested._aws import ACCOUNT_ID, REGION
from attested._runtime.config import Problems, Section, read_file
from attested.emulator._sigv4 import Identity
from attested.errors import ConfigError, ConfigurationError
from attested.net import is_loopback
from attested.trust import TrustRoot

__all__ = [
    "DEV_ACCESS_KEY_ID",
    "DEV_ARN",
    "DEV_SECRET_ACCESS_KEY",
    "EmulatorConfig",
    "FaultConfig",
    "dev_identities",
    "emulator_config",
    "is_loopback",
    "load_identities",
    "parse_identities",
]

DEV_ACCESS_KEY_ID = "AKIAATTESTEDEXAMPLE1"
"""The built-in development access key id. The digit 1 is outside the base32 alphabet of
real AWS access keys, so it can never be a real credential."""
DEV_SECRET_ACCESS_KEY = "attested-emulator-development-secret-not-a-credential"  # noqa: S105
"""The built-in development secret: public, documented, for local use only."""
DEV_ARN = "arn:aws:iam::111122223333:role/attested-developer"
"""Who the built-in development identity is (111122223333 is AWS's documentation account)."""

_IDENTITY_FIELDS = ("access_key_id", "secret_access_key", "arn", "session_token", "principal_arn")
_MAX_LATENCY = 30.0


def dev_identities() -> Mapping[str, Identity]:
    """The built-in development identity, keyed by its access key id."""
    return types.MappingProxyType(
        {DEV_ACCESS_KEY_ID: Identity(secret_access_key=DEV_SECRET_ACCESS_KEY, arn=DEV_ARN)}
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _SettingsError(ConfigError, ValueError):
    """Bad emulator settings: every problem, and still the ``ValueError`` raised before."""


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
        problems = Problems()
        rates = ("throttle_rate", "error_rate", "drop_rate")
        for name in (*rates, "latency", "latency_jitter"):
            value, most = getattr(self, name), 1.0 if name in rates else _MAX_LATENCY
            if not isinstance(value, int | float) or not 0.0 <= value <= most:
                unit = "" if name in rates else " seconds"
                problems.add(name, f"must be between 0 and {most:g}{unit}")
        if not len(problems) and sum(getattr(self, rate) for rate in rates) > 1.0 + 1e-9:
            problems.add("throttle_rate + error_rate + drop_rate", "must be at most 1")
        max_faults: object = self.max_faults
        if max_faults is not None and (not isinstance(max_faults, int) or max_faults < 0):
            problems.add("max_faults", "must be a non-negative integer or None")
        problems.raise_if_any(error=_SettingsError)
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
        accept_any_credentials: take a caller whose access key id is not among the
            identities to be the development identity (``attested-developer`` in the
            keys' account), checking everything of its SigV4 signature but the signature
            itself, as other local AWS emulators do. **Development only**: nothing is
            authenticated then.
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
    accept_any_credentials: bool = False
    max_body_size: int = 1024 * 1024
    max_connections: int = 256
    idle_timeout: float = 60.0
    clock: Callable[[], datetime] = field(default=_utc_now, repr=False)

    def __post_init__(self) -> None:
        trust_root: object = self.trust_root
        if not isinstance(trust_root, TrustRoot):
            raise TypeError("trust_root must be an attested.TrustRoot")
        entries: object = self.identities
        if not isinstance(entries, Mapping):
            raise TypeError("identities must be a mapping")
        for key_id, identity in entries.items():
            if not isinstance(key_id, str) or not key_id or not isinstance(identity, Identity):
                raise TypeError("identities must map access key ids to Identity objects")
        if not isinstance(self.faults, FaultConfig):
            raise TypeError("faults must be a FaultConfig")
        problems = Problems()
        port: object = self.port
        if not isinstance(port, int) or not 0 <= port <= 65535:
            problems.add("port", "must be between 0 and 65535")
        if not REGION.fullmatch(self.region):
            problems.add("region", f"{self.region!r:.40} does not look like an AWS region")
        if self.account_id is not None and not ACCOUNT_ID.fullmatch(self.account_id):
            problems.add("account_id", "must be 12 digits")
        if self.max_body_size < 1024 or self.max_connections < 1 or self.idle_timeout <= 0:
            problems.add(
                "limits", "max_body_size, max_connections and idle_timeout must be positive"
            )
        problems.raise_if_any(error=_SettingsError)
        if self.state_path is not None:
            object.__setattr__(self, "state_path", Path(self.state_path))

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

    def anyone(self) -> Identity | None:
        """Who an unknown caller is taken to be: ``None`` unless ``accept_any_credentials``.

        Raises:
            ConfigurationError: as :meth:`resolved_account`.
        """
        if not self.accept_any_credentials:
            return None
        account = self.resolved_account()
        return Identity(
            secret_access_key="unused: any-credentials mode checks no signature",  # noqa: S106
            arn=DEV_ARN.replace("111122223333", account),
        )


def emulator_config(
    *, faults: Mapping[str, Any], identities_file: str | Path | None = None, **settings: Any
) -> EmulatorConfig:
    """An :class:`EmulatorConfig` from plain values (the CLI's flags), every problem at once.

    Args:
        faults: the :class:`FaultConfig` arguments.
        identities_file: read with :func:`load_identities`; ``None``: the built-in
            development identity.
        settings: the other :class:`EmulatorConfig` arguments.

    Raises:
        ConfigError: the problems of the faults, the identities file and the settings.
    """
    problems = Problems()
    fault_config = problems.check("", partial(FaultConfig, **faults))
    identities = dev_identities()
    if identities_file is not None:
        try:
            identities = load_identities(identities_file)
        except ConfigError as exc:
            if isinstance(exc.__cause__, OSError):
                raise  # an unreadable file: the other problems would be noise
            problems.check("", partial(_raise, exc))
    config = problems.check(
        "",
        partial(
            EmulatorConfig, faults=fault_config or FaultConfig(), identities=identities, **settings
        ),
    )
    problems.raise_if_any()
    assert config is not None  # noqa: S101 - no problem means it was built
    return config


def _raise(exc: Exception) -> None:
    raise exc


def parse_identities(document: Any, *, source: str = "identities") -> dict[str, Identity]:
    """Identities from a parsed JSON or TOML document: ``{"identities": [{...}, ...]}``.

    Each entry has ``access_key_id``, ``secret_access_key``, ``arn``, and optionally
    ``session_token`` and ``principal_arn``.

    Raises:
        ConfigError: the document does not have that shape; every problem is listed, and
            no message contains a secret.
    """
    problems = Problems()
    identities = _identities(Section(problems, document))
    problems.raise_if_any(source=source)
    return identities


def _identities(top: Section) -> dict[str, Identity]:
    top.refuse_unknown(("identities",))
    if not top.get("identities"):
        top.problem("identities", "required: a non-empty list of identities")
    result: dict[str, Identity] = {}
    for entry in top.tables("identities"):
        entry.refuse_unknown(_IDENTITY_FIELDS)
        before = len(entry.problems)
        key_id, secret, arn, token, principal = (entry.text(f, None) for f in _IDENTITY_FIELDS)
        for name in _IDENTITY_FIELDS[:3]:
            if entry.get(name) in (None, ""):
                entry.problem(None, f"{name} is required (a non-empty string)")
        if key_id in result:
            entry.problem("access_key_id", f"{key_id!r:.40} appears twice")
        if key_id is None or secret is None or arn is None or len(entry.problems) != before:
            continue
        make = partial(
            Identity,
            secret_access_key=secret,
            arn=arn,
            session_token=token,
            principal_arn=principal,
        )
        identity = entry.problems.check(entry.where, make)
        if identity is not None:
            result[key_id] = identity
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
        ConfigError: the file cannot be read or has the wrong shape (every problem).
    """
    path = Path(path)
    problems = Problems()
    json = path.suffix.lower() != ".toml"
    document = read_file(path, problems, name="identities file", json=json, secret=True)
    identities = {} if document is None else _identities(Section(problems, document))
    problems.raise_if_any(source=path)
    return identities
