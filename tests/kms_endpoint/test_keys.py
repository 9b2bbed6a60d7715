"""kms.allowed_keys with names resolved as KMS resolves them (DescribeKey on the emulator)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from attested.kms import NetworkSettings
from attested.kms._wire import ApiError
from attested.kms.credentials import StaticCredentials
from attested.service._kms_endpoint import PlainKms
from attested.service._kms_keys import MAX_ENTRIES, RESOLVE_TTL, KeyGate, is_key_arn
from tests.kit import PCR0
from tests.kms_endpoint.conftest import InProcess
from tests.kms_endpoint.stack import key_policy

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def plain(in_process: InProcess) -> Iterator[PlainKms]:
    client = PlainKms(
        region="us-east-1",
        credentials=StaticCredentials(
            access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
        ).botocore_credentials(),
        network=NetworkSettings(endpoint_url=in_process.emu.endpoint_url),
    )
    yield client
    client.close()


def test_key_arns_are_recognised() -> None:
    assert is_key_arn("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert is_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234")
    assert not is_key_arn("arn:aws:kms:us-east-1:111122223333:alias/key/x")
    assert not is_key_arn("arn:aws:iam::111122223333:key/x")
    assert not is_key_arn("1234abcd-12ab-34cd-56ef-1234567890ab")
    assert not is_key_arn("alias/key/")


def test_an_alias_entry_follows_the_alias_after_the_ttl(
    in_process: InProcess, plain: PlainKms
) -> None:
    admin = in_process.admin
    first = admin.create_key(Policy=key_policy(PCR0))["KeyMetadata"]["Arn"]
    second = admin.create_key(Policy=key_policy(PCR0))["KeyMetadata"]["Arn"]
    admin.create_alias(AliasName="alias/endpoint-moving", TargetKeyId=first)
    alias_arn = first.split(":key/")[0] + ":alias/endpoint-moving"
    clock = Clock()
    gate = KeyGate([alias_arn], describe=plain.describe, clock=clock)

    # Another name of the same key is sent on as the key ARN that was checked.
    assert gate.admit(first) == first
    assert gate.admit("alias/endpoint-moving") == first
    assert gate.admit(first.rsplit("/", 1)[1]) == first
    assert gate.admit(alias_arn) == alias_arn  # as listed: sent on as written
    with pytest.raises(ApiError, match=r"not in kms\.allowed_keys"):
        gate.admit(second)

    admin.update_alias(AliasName="alias/endpoint-moving", TargetKeyId=second)
    assert gate.admit(first) == first  # still the resolution of a moment ago
    clock.now += RESOLVE_TTL + 1
    assert gate.admit(second) == second
    with pytest.raises(ApiError, match=r"not in kms\.allowed_keys"):
        gate.admit(first)
    gate.admit_answer(second, "Decrypt")
    with pytest.raises(ApiError, match="answer was dropped"):
        gate.admit_answer(first, "Decrypt")
    with pytest.raises(ApiError, match="answer was dropped"):
        gate.admit_answer(None, "Decrypt")


def test_an_unknown_name_is_kms_not_found(in_process: InProcess, plain: PlainKms) -> None:
    gate = KeyGate([in_process.keys.good], describe=plain.describe)
    with pytest.raises(ApiError) as raised:
        gate.admit("alias/no-such-alias")
    assert raised.value.code == "NotFoundException"


def test_an_entry_that_cannot_be_resolved_admits_nothing_and_says_so(
    in_process: InProcess, plain: PlainKms, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    missing = in_process.keys.good.split(":key/")[0] + ":alias/endpoint-not-yet"
    gate = KeyGate([missing], describe=plain.describe, clock=clock)
    with caplog.at_level(logging.WARNING, logger="attested.service"):
        with pytest.raises(ApiError, match=r"not in kms\.allowed_keys"):
            gate.admit(in_process.keys.good)
        with pytest.raises(ApiError, match=r"not in kms\.allowed_keys"):
            gate.admit(in_process.keys.good)  # within the TTL: not asked again
    warnings = [r for r in caplog.records if "cannot be resolved" in r.getMessage()]
    assert len(warnings) == 1
    in_process.admin.create_alias(
        AliasName="alias/endpoint-not-yet", TargetKeyId=in_process.keys.good
    )
    clock.now += RESOLVE_TTL + 1
    assert gate.admit(in_process.keys.good) == in_process.keys.good


def test_resolutions_are_bounded(in_process: InProcess) -> None:
    asked: list[str] = []

    def describe(name: str) -> str:
        asked.append(name)
        return in_process.keys.good

    gate = KeyGate(["alias/allowed"], describe=describe)
    names = [f"alias/caller-{n}" for n in range(MAX_ENTRIES + 50)]
    for name in names:
        gate.admit(name)
    asked.clear()
    gate.admit(names[-1])  # recent: kept
    assert asked == []
    gate.admit(names[0])  # the oldest went to make room: asked again
    assert asked == [names[0]]
