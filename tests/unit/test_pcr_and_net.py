"""PCR arithmetic against the AWS user guide, and endpoint address parsing."""

from __future__ import annotations

import hashlib

import pytest

from attested import pcr
from attested.net import VMADDR_CID_ANY, parse_address
from tests.kit import real_vectors, sidecar


def test_pcr3_and_pcr4_match_the_aws_user_guide() -> None:
    assert pcr.pcr3_from_role_arn("arn:aws:iam::123456789012:role/Webserver").hex() == (
        "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef"
        "4fc1f1a452e315b9e98f9e312e6921e6"
    )
    assert pcr.pcr4_from_instance_id("i-1234567890abcdef0").hex() == (
        "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812"
        "719327281c401a67a10fcba87ae79ce0"
    )


@pytest.mark.parametrize("path", real_vectors(), ids=lambda p: p.stem)
def test_pcr4_of_real_documents_is_their_instance_id(path) -> None:
    decoded = sidecar(path)["decoded_by_helper"]
    instance_id = decoded["module_id"].split("-enc")[0]
    assert pcr.pcr4_from_instance_id(instance_id).hex() == decoded["pcrs_hex"]["4"]


def test_extend_and_measure() -> None:
    data = b"hello"
    assert pcr.extend(pcr.ZERO, data) == hashlib.sha384(bytes(48) + data).digest()
    assert pcr.measure(data) == pcr.extend(pcr.ZERO, hashlib.sha384(data).digest())
    assert pcr.is_debug_pcr0(pcr.ZERO)
    assert not pcr.is_debug_pcr0(pcr.measure(b""))
    with pytest.raises(ValueError, match="48 bytes"):
        pcr.extend(b"short", data)
    with pytest.raises(ValueError, match="role ARN"):
        pcr.pcr3_from_role_arn("arn:aws:iam::123456789012:instance-profile/Webserver")
    with pytest.raises(ValueError, match="instance id"):
        pcr.pcr4_from_instance_id("enc-123")


@pytest.mark.parametrize(
    ("spec", "kind", "where"),
    [
        ("vsock:3:8000", "vsock", (3, 8000)),
        ("vsock:ANY:9000", "vsock", (VMADDR_CID_ANY, 9000)),
        ("tcp:127.0.0.1:3128", "tcp", ("127.0.0.1", 3128)),
        ("tcp:[::1]:443", "tcp", ("::1", 443)),
        ("tcp:kms.us-east-1.amazonaws.com:443", "tcp", ("kms.us-east-1.amazonaws.com", 443)),
        ("unix:/run/attested/api.sock", "unix", "/run/attested/api.sock"),
    ],
)
def test_parse_address_round_trips(spec, kind, where) -> None:
    address = parse_address(spec)
    assert address.kind == kind
    assert address.sockaddr() == where
    assert str(address) == spec.replace("vsock:ANY", "vsock:ANY")
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "tcp",
        "tcp:",
        "tcp:host",
        "tcp::80",
        "tcp:::1:80",
        "tcp:h:70000",
        "tcp:h:-1",
        "vsock:3",
        "vsock:x:1",
        "vsock:3:p",
        "udp:h:1",
        "unix:",
        "unix:a\x00b",
    ],
)
def test_parse_address_refuses_bad_specs(spec) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the spec
        parse_address(spec)
