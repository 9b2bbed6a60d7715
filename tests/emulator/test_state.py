"""Persistence: keys, aliases and policies survive a restart."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from attested.emulator import EmulatorConfig, KmsEmulator
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
