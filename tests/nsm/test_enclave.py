"""On real hardware only (``--run-enclave`` inside a Nitro enclave): the real NSM."""

from __future__ import annotations

import os

import pytest

import nsm
from attested import Policy, Verifier, parse_attestation
from attested.pcr import extend

pytestmark = pytest.mark.enclave


@pytest.fixture(params=["libnsm", "ioctl"])
def real_device(request):
    try:
        device = nsm.open_device(backend=request.param)
    except nsm.LibraryNotFound as exc:
        pytest.skip(f"libnsm is not installed in this enclave: {exc}")
    with device:
        yield device


def test_description_is_nitro(real_device) -> None:
    description = real_device.describe()
    assert description.max_pcrs == 32
    assert description.digest is nsm.Digest.SHA384
    assert set(range(16)) <= set(description.locked_pcrs)
    assert description.module_id.startswith("i-")


def test_document_verifies_against_the_aws_root(real_device) -> None:
    nonce = os.urandom(32)
    document = real_device.get_attestation_document(nonce=nonce, user_data=b"")
    parsed = parse_attestation(document)
    assert parsed.user_data == b""
    assert parsed.public_key is None
    policy = Policy(pcrs={0: parsed.pcrs[0]}, nonce=nonce, allow_debug=True)
    Verifier.aws_nitro().verify(document, policy=policy)


def test_extend_is_sha384_of_old_and_data(real_device) -> None:
    index = next(i for i in range(31, 15, -1) if not real_device.describe_pcr(i).locked)
    old = real_device.describe_pcr(index).value
    assert real_device.extend_pcr(index, b"attested test") == extend(old, b"attested test")


def test_locked_pcr_is_read_only(real_device) -> None:
    with pytest.raises(nsm.ReadOnlyIndex):
        real_device.extend_pcr(0, b"x")
    with pytest.raises(nsm.InvalidIndex):
        real_device.describe_pcr(32)


def test_random(real_device) -> None:
    assert len(real_device.get_random(1000)) == 1000
