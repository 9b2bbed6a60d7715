"""Where the emulator keeps keys, aliases and policies: memory, optionally backed by SQLite.

Every change is written through to SQLite in its own transaction before the request that
made it is answered, so a restart loses nothing that a client saw succeed. The database
file is created with mode 0600 (and tightened to 0600 if found looser); key material is
stored **unencrypted** in it: this is a development tool, never a place for real keys.

Thread-safe: one lock guards the in-memory maps and the SQLite connection; callers that
read, change and write a record hold :attr:`KeyStore.lock` around the whole sequence.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from attested.emulator._keys import KeyRecord
from attested.errors import ConfigurationError, KeyPolicyError
from attested.keypolicy._evaluate import parse_key_policy

__all__ = ["AliasRecord", "KeyStore"]

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = "2"
# Version 1 files (no tags, no rotation setting) are upgraded in place on open.
_UPGRADE_FROM_1 = (
    "ALTER TABLE keys ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    arn TEXT NOT NULL,
    created TEXT NOT NULL,
    description TEXT NOT NULL,
    key_spec TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    state TEXT NOT NULL,
    deletion_date TEXT,
    pending_window_days INTEGER,
    policy TEXT NOT NULL,
    material BLOB NOT NULL,
    material_id TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    rotation_period_days INTEGER
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class AliasRecord:
    """An alias.

    Attributes:
        name: ``alias/...``.
        key_id: the UUID of the key it points to.
        created: creation time.
        updated: last update time.
    """

    name: str
    key_id: str
    created: datetime
    updated: datetime


class KeyStore:
    """Keys and aliases, in memory and (when ``path`` is given) in SQLite.

    Args:
        path: the SQLite file, or ``None`` to keep everything in memory only.
        region: the emulator's region (a state file remembers it and refuses another).
        account_id: the emulator's account (likewise).

    Raises:
        ConfigurationError: the file cannot be opened, is not this emulator's database,
            or belongs to another region or account.
    """

    def __init__(self, path: Path | None, *, region: str, account_id: str) -> None:
        self.lock = threading.RLock()
        self.path = path
        self._keys: dict[str, KeyRecord] = {}
        self._seq: dict[str, int] = {}
        self._aliases: dict[str, AliasRecord] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._open(path, region, account_id)

    def _open(self, path: Path, region: str, account_id: str) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                logger.warning("state file %s had mode %o; setting it to 0600", path, mode)
                os.chmod(path, 0o600)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot open the state file {path}: {exc.strerror or exc}"
            ) from exc
        try:
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            with db:
                db.execute("BEGIN IMMEDIATE")
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
                want = {"schema": _SCHEMA_VERSION, "region": region, "account": account_id}
                if not meta:
                    db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(want.items()))
                elif meta == {**want, "schema": "1"}:
                    for statement in _UPGRADE_FROM_1:
                        db.execute(statement)
                    db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", ("2",))
                    meta["schema"] = _SCHEMA_VERSION
                    logger.info("state file %s upgraded to schema %s", path, _SCHEMA_VERSION)
                if meta and meta != want:
                    raise ConfigurationError(
                        f"state file {path} was made for region {meta.get('region')!r}, account "
                        f"{meta.get('account')!r} (schema {meta.get('schema')!r}); this emulator "
                        f"runs region {region!r}, account {account_id!r}: use another --state "
                        "file or the same region and account"
                    )
            self._load(db)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            db.close()
            raise ConfigurationError(
                f"state file {path} is not a KMS emulator database: {exc}"
            ) from exc
        except ConfigurationError:
            db.close()
            raise
        self._db = db

    def _load(self, db: sqlite3.Connection) -> None:
        rows = db.execute(
            "SELECT key_id, seq, arn, created, description, key_spec, key_usage, state, "
            "deletion_date, pending_window_days, policy, material, material_id, tags, "
            "rotation_period_days FROM keys ORDER BY seq"
        ).fetchall()
        for row in rows:
            (key_id, seq, arn, created, description, spec, usage, state, deletion, window) = row[
                :10
            ]
            policy_text, material, material_id, tags, rotation = row[10:]
            try:
                policy = parse_key_policy(policy_text)
            except KeyPolicyError as exc:
                raise ConfigurationError(
                    f"stored policy of key {key_id} is invalid: {exc}"
                ) from exc
            self._keys[key_id] = KeyRecord(
                key_id=key_id,
                arn=arn,
                created=datetime.fromisoformat(created),
                description=description,
                key_spec=spec,
                key_usage=usage,
                state=state,
                deletion_date=None if deletion is None else datetime.fromisoformat(deletion),
                pending_window_days=window,
                policy_text=policy_text,
                policy=policy,
                material=bytes(material),
                material_id=material_id,
                tags=tuple((str(k), str(v)) for k, v in json.loads(tags)),
                rotation_period_days=rotation,
            )
            self._seq[key_id] = seq
        for name, key_id, created, updated in db.execute(
            "SELECT name, key_id, created, updated FROM aliases"
        ):
            self._aliases[name] = AliasRecord(
                name=name,
                key_id=key_id,
                created=datetime.fromisoformat(created),
                updated=datetime.fromisoformat(updated),
            )

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        if self._db is None:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._db.execute(sql, params)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def get_key(self, key_id: str) -> KeyRecord | None:
        """The key with this UUID, or ``None``."""
        return self._keys.get(key_id)

    def all_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        with self.lock:
            return sorted(self._keys.values(), key=lambda k: self._seq[k.key_id])

    def put_key(self, record: KeyRecord) -> None:
        """Insert or replace a key, durably."""
        with self.lock:
            seq = self._seq.get(record.key_id)
            if seq is None:
                seq = max(self._seq.values(), default=0) + 1
            self._write(
                (
                    "INSERT OR REPLACE INTO keys VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.key_id,
                        seq,
                        record.arn,
                        record.created.isoformat(),
                        record.description,
                        record.key_spec,
                        record.key_usage,
                        record.state,
                        None if record.deletion_date is None else record.deletion_date.isoformat(),
                        record.pending_window_days,
                        record.policy_text,
                        record.material,
                        record.material_id,
                        json.dumps([list(tag) for tag in record.tags]),
                        record.rotation_period_days,
                    ),
                )
            )
            self._keys[record.key_id] = record
            self._seq[record.key_id] = seq

    def delete_key(self, key_id: str) -> None:
        """Remove a key and every alias that points to it, durably."""
        with self.lock:
            self._write(
                ("DELETE FROM keys WHERE key_id = ?", (key_id,)),
                ("DELETE FROM aliases WHERE key_id = ?", (key_id,)),
            )
            self._keys.pop(key_id, None)
            self._seq.pop(key_id, None)
            for name in [a.name for a in self._aliases.values() if a.key_id == key_id]:
                del self._aliases[name]

    def get_alias(self, name: str) -> AliasRecord | None:
        """The alias with this name (``alias/...``), or ``None``."""
        return self._aliases.get(name)

    def all_aliases(self) -> list[AliasRecord]:
        """Every alias, sorted by name."""
        with self.lock:
            return sorted(self._aliases.values(), key=lambda a: a.name)

    def put_alias(self, alias: AliasRecord) -> None:
        """Insert or replace an alias, durably."""
        with self.lock:
            self._write(
                (
                    "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)",
                    (
                        alias.name,
                        alias.key_id,
                        alias.created.isoformat(),
                        alias.updated.isoformat(),
                    ),
                )
            )
            self._aliases[alias.name] = alias

    def delete_alias(self, name: str) -> None:
        """Remove an alias, durably."""
        with self.lock:
            self._write(("DELETE FROM aliases WHERE name = ?", (name,)))
            self._aliases.pop(name, None)
