"""Persistence: keys, aliases and policies survive a restart."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attested.emulator import EmulatorConfig, KmsEmulator, default_key_policy
from attested.errors import ConfigurationError
from tests.emulator.conftest import Enclave, client, pinned_policy
from tests.emulator.envelope import open_envelope


def test_restart_keeps_keys_aliases_policies_and_states(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    state = tmp_path / "kms.sqlite"
    config = EmulatorConfig(trust_root=enclave.kit.root, state_path=state)
    first = start_emulator(config)
    kms = client(first.endpoint_url)
    pinned = kms.create_key(Policy=pinned_policy())["KeyMetadata"]
    kms.create_alias(AliasName="alias/secrets", TargetKeyId=pinned["KeyId"])
    blob = kms.encrypt(KeyId="alias/secrets", Plaintext=b"kept", EncryptionContext={"a": "b"})[
        "CiphertextBlob"
    ]
    disabled = kms.create_key(Description="off")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=disabled)
    ecc = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    public = kms.get_public_key(KeyId=ecc)["PublicKey"]
    policy = kms.get_key_policy(KeyId=pinned["KeyId"])["Policy"]
    first.stop()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600

    second = start_emulator(config)
    kms = client(second.endpoint_url)
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [pinned["KeyId"], disabled, ecc]
    assert kms.describe_key(KeyId="alias/secrets")["KeyMetadata"] == pinned
    assert kms.get_key_policy(KeyId=pinned["KeyId"])["Policy"] == policy
    assert kms.describe_key(KeyId=disabled)["KeyMetadata"]["KeyState"] == "Disabled"
    assert kms.get_public_key(KeyId=ecc)["PublicKey"] == public
    answer = kms.decrypt(
        CiphertextBlob=blob, EncryptionContext={"a": "b"}, Recipient=enclave.recipient()
    )
    assert open_envelope(answer["CiphertextForRecipient"], enclave.key) == b"kept"


def test_loose_file_mode_is_tightened(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    state = tmp_path / "kms.sqlite"
    state.touch(mode=0o644)
    os.chmod(state, 0o644)
    start_emulator(EmulatorConfig(trust_root=enclave.kit.root, state_path=state))
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600


def test_state_of_another_region_or_a_foreign_file_is_refused(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    state = tmp_path / "kms.sqlite"
    start_emulator(EmulatorConfig(trust_root=enclave.kit.root, state_path=state)).stop()
    other = EmulatorConfig(trust_root=enclave.kit.root, state_path=state, region="eu-west-1")
    with pytest.raises(ConfigurationError, match="region"):
        KmsEmulator(other).start()
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigurationError, match="not a KMS emulator database"):
        KmsEmulator(EmulatorConfig(trust_root=enclave.kit.root, state_path=junk)).start()


def test_tags_rotation_and_descriptions_survive_a_restart(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    config = EmulatorConfig(trust_root=enclave.kit.root, state_path=tmp_path / "kms.sqlite")
    first = start_emulator(config)
    kms = client(first.endpoint_url)
    key_id = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "dev"}])
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    kms.update_key_description(KeyId=key_id, Description="described")
    hmac_key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    hmac_id = hmac_key["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=hmac_id, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    first.stop()

    kms = client(start_emulator(config).endpoint_url)
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "team", "TagValue": "a"},
        {"TagKey": "env", "TagValue": "dev"},
    ]
    assert kms.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 90
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "described"
    assert kms.verify_mac(KeyId=hmac_id, Message=b"m", MacAlgorithm="HMAC_SHA_384", Mac=mac)[
        "MacValid"
    ]


_SCHEMA_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, arn TEXT NOT NULL, created TEXT NOT NULL,
    description TEXT NOT NULL, key_spec TEXT NOT NULL, key_usage TEXT NOT NULL,
    state TEXT NOT NULL, deletion_date TEXT, pending_window_days INTEGER,
    policy TEXT NOT NULL, material BLOB NOT NULL, material_id TEXT NOT NULL
);
CREATE TABLE aliases (
    name TEXT PRIMARY KEY, key_id TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL
);
INSERT INTO meta VALUES ('account', '111122223333'), ('region', 'us-east-1'), ('schema', '1');
"""


def test_a_schema_1_state_file_is_upgraded_in_place(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator], tmp_path: Path
) -> None:
    """A state file written before tags and rotation settings were kept still opens, keeps
    its keys, and then keeps tags too."""
    state = tmp_path / "kms.sqlite"
    key_id = "0b3a6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    with sqlite3.connect(state) as db:
        db.executescript(_SCHEMA_1)
        db.execute(
            "INSERT INTO keys VALUES (?, 1, ?, ?, '', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', "
            "'Enabled', NULL, NULL, ?, ?, ?)",
            (
                key_id,
                f"arn:aws:kms:us-east-1:111122223333:key/{key_id}",
                datetime.now(UTC).isoformat(),
                default_key_policy("111122223333"),
                os.urandom(32),
                "ab" * 32,
            ),
        )
    db.close()
    config = EmulatorConfig(trust_root=enclave.kit.root, state_path=state)
    first = start_emulator(config)
    kms = client(first.endpoint_url)
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == []
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"old key")["CiphertextBlob"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "k", "TagValue": "v"}])
    first.stop()
    kms = client(start_emulator(config).endpoint_url)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"old key"
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "k", "TagValue": "v"}]
