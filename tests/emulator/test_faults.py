"""Seeded, bounded fault injection, seen through real boto3."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from attested.emulator import EmulatorConfig, FaultConfig, KmsEmulator
from tests.emulator.conftest import Enclave, client


def outcome(kms: Any) -> str:
    try:
        kms.generate_random(NumberOfBytes=8)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    except ConnectionClosedError:
        return "dropped"
    return "OK"


def run(
    start: Callable[..., KmsEmulator], enclave: Enclave, faults: FaultConfig, n: int
) -> list[str]:
    emu = start(EmulatorConfig(trust_root=enclave.kit.root, faults=faults))
    kms = client(emu.endpoint_url)
    return [outcome(kms) for _ in range(n)]


def test_same_seed_same_faults(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    faults = FaultConfig(seed=42, throttle_rate=0.2, error_rate=0.2, drop_rate=0.1)
    first = run(start_emulator, enclave, faults, 30)
    second = run(start_emulator, enclave, faults, 30)
    assert first == second
    assert {"OK", "ThrottlingException", "KMSInternalException", "dropped"} <= set(first)
    other = run(
        start_emulator,
        enclave,
        FaultConfig(seed=7, throttle_rate=0.2, error_rate=0.2, drop_rate=0.1),
        30,
    )
    assert other != first


def test_codes_and_statuses(enclave: Enclave, start_emulator: Callable[..., KmsEmulator]) -> None:
    emu = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root, faults=FaultConfig(throttle_rate=1.0, max_faults=1)
        )
    )
    kms = client(emu.endpoint_url)
    with pytest.raises(ClientError) as info:
        kms.generate_random(NumberOfBytes=8)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert outcome(kms) == "OK"  # bounded: max_faults=1
    assert emu.stats().faults["throttle"] == 1
    emu = start_emulator(
        EmulatorConfig(trust_root=enclave.kit.root, faults=FaultConfig(error_rate=1.0))
    )
    with pytest.raises(ClientError) as info:
        client(emu.endpoint_url).list_keys()
    assert info.value.response["Error"]["Code"] == "KMSInternalException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_boto3_retries_through_bounded_faults(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root,
            faults=FaultConfig(throttle_rate=0.5, error_rate=0.5, max_faults=2),
        )
    )
    kms = client(emu.endpoint_url, attempts=3)
    answer = kms.generate_random(NumberOfBytes=8)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert emu.request_count == 3


def test_only_named_operations_are_affected(
    enclave: Enclave, start_emulator: Callable[..., KmsEmulator]
) -> None:
    emu = start_emulator(
        EmulatorConfig(
            trust_root=enclave.kit.root,
            faults=FaultConfig(drop_rate=1.0, operations=frozenset({"GenerateRandom"})),
        )
    )
    kms = client(emu.endpoint_url)
    assert "Keys" in kms.list_keys()
    assert outcome(kms) == "dropped"


def test_latency(enclave: Enclave, start_emulator: Callable[..., KmsEmulator]) -> None:
    emu = start_emulator(
        EmulatorConfig(trust_root=enclave.kit.root, faults=FaultConfig(latency=0.15))
    )
    kms = client(emu.endpoint_url)
    kms.list_keys()
    started = time.perf_counter()
    kms.list_keys()
    assert time.perf_counter() - started >= 0.15
    assert emu.stats().faults["latency"] == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"throttle_rate": 1.5},
        {"throttle_rate": 0.6, "error_rate": 0.6},
        {"latency": 31},
        {"latency": -1},
        {"max_faults": -1},
    ],
)
def test_bad_fault_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        FaultConfig(**kwargs)
