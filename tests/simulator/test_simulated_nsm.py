"""The simulated NSM: PCR semantics, documents, the chain and its renewal, loudness."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from cryptography import x509

import nsm
from attested import AttestationProvider, ChainError, Policy, Verifier, parse_attestation, pcr
from attested.simulator import DEFAULT_IMAGE_PCRS, DEFAULT_INSTANCE_ID, SimulatedNsm
from attested.verify import TimeSource
from tests.kit import T0

ROLE = "arn:aws:iam::123456789012:role/Webserver"
PCR0 = bytes.fromhex("ab" * 48)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def sim(clock) -> SimulatedNsm:
    return SimulatedNsm(clock=clock)


def _any_pcrs() -> Policy:
    return Policy(pcrs={0: DEFAULT_IMAGE_PCRS[0]})


def _leaf(document: bytes) -> x509.Certificate:
    return parse_attestation(document).signing_certificate


def test_it_is_an_attestation_provider(sim) -> None:
    assert isinstance(sim, AttestationProvider)


def test_starts_like_a_nitro_nsm(sim) -> None:
    description = sim.describe()
    assert description.version == (1, 0, 0)
    assert description.max_pcrs == 32
    assert description.locked_pcrs == tuple(range(16))
    assert description.digest is nsm.Digest.SHA384
    assert "simulated" in description.module_id
    assert description.module_id.startswith(f"{DEFAULT_INSTANCE_ID}-enc")
    assert sim.describe_pcr(4).value == pcr.pcr4_from_instance_id(DEFAULT_INSTANCE_ID)
    assert sim.describe_pcr(3).value == pcr.ZERO
    assert [sim.describe_pcr(i).value for i in range(3)] == list(DEFAULT_IMAGE_PCRS)
    assert not any(pcr.is_debug_pcr0(v) for v in DEFAULT_IMAGE_PCRS)
    assert sim.describe_pcr(31) == nsm.PcrInfo(index=31, locked=False, value=pcr.ZERO)


def test_start_values(clock) -> None:
    sim = SimulatedNsm(
        pcrs={0: PCR0, 8: b"\x08" * 48}, role_arn=ROLE, instance_id="i-1234", clock=clock
    )
    assert sim.describe_pcr(0).value == PCR0
    assert sim.describe_pcr(1).value == DEFAULT_IMAGE_PCRS[1]
    assert sim.describe_pcr(3).value == pcr.pcr3_from_role_arn(ROLE)
    assert sim.describe_pcr(4).value == pcr.pcr4_from_instance_id("i-1234")
    assert sim.describe_pcr(8).value == b"\x08" * 48
    assert sim.module_id.startswith("i-1234-enc")
    assert sim.module_id.endswith("-simulated")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pcrs": {16: PCR0}}, "PCRs 0-15"),
        ({"pcrs": {-1: PCR0}}, "PCRs 0-15"),
        ({"pcrs": {0: b"\x00" * 32}}, "48 bytes"),
        ({"pcrs": {0: "ab" * 48}}, "48 bytes"),
        ({"pcrs": {3: PCR0}, "role_arn": ROLE}, "not both"),
        ({"pcrs": {4: PCR0}, "instance_id": "i-1"}, "not both"),
        ({"role_arn": "arn:aws:iam::123456789012:instance-profile/x"}, "role ARN"),
        ({"instance_id": "vm-1"}, "instance id"),
    ],
)
def test_bad_start_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SimulatedNsm(**kwargs)


def test_extend_and_lock(sim) -> None:
    value = sim.extend_pcr(16, b"app config")
    assert value == pcr.extend(pcr.ZERO, b"app config")
    assert sim.extend_pcr(16, bytearray(b"")) == pcr.extend(value, b"")
    sim.lock_pcr(16)
    sim.lock_pcr(16)  # again: accepted
    with pytest.raises(nsm.ReadOnlyIndex):
        sim.extend_pcr(16, b"x")
    sim.lock_pcrs(20)
    assert sim.describe().locked_pcrs == tuple(range(20))


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda s: s.extend_pcr(3, b"x"), nsm.ReadOnlyIndex),
        (lambda s: s.extend_pcr(32, b"x"), nsm.InvalidIndex),
        (lambda s: s.describe_pcr(32), nsm.InvalidIndex),
        (lambda s: s.lock_pcr(40), nsm.InvalidIndex),
        (lambda s: s.lock_pcrs(33), nsm.InvalidIndex),
        (lambda s: s.describe_pcr(65536), ValueError),
        (lambda s: s.extend_pcr(True, b""), TypeError),
        (lambda s: s.extend_pcr(16, "text"), TypeError),
        (lambda s: s.extend_pcr(16, b"x" * 4096), ValueError),
        (lambda s: s.get_attestation_document(nonce=b"x" * 4096), ValueError),
        (lambda s: s.get_attestation_document(nonce="x"), TypeError),
        (lambda s: s.get_random(-1), ValueError),
    ],
)
def test_refuses_what_the_nsm_or_the_binding_refuses(sim, operation, error) -> None:
    with pytest.raises(error):
        operation(sim)


def test_random(sim) -> None:
    assert len(sim.get_random(1000)) == 1000
    assert sim.get_random(32) != sim.get_random(32)


def test_document_verifies_against_its_root_and_not_against_aws(sim, clock) -> None:
    document = sim.get_attestation_document(nonce=b"n", user_data=b"", public_key=b"\x30key")
    policy = Policy(
        pcrs={0: DEFAULT_IMAGE_PCRS[0], 4: sim.describe_pcr(4).value},
        nonce=b"n",
        user_data=b"",
        public_key=b"\x30key",
    )
    verified = Verifier(trust_root=sim.trust_root).verify(document, policy=policy, at=clock.now)
    assert verified.time_source is TimeSource.GIVEN
    assert verified.document.timestamp == clock.now
    with pytest.raises(ChainError):
        Verifier.aws_nitro().verify(document, policy=policy, at=clock.now)


def test_document_layout_is_the_nsm_layout(sim) -> None:
    sim.extend_pcr(16, b"x")
    sim.lock_pcr(16)
    document = sim.get_attestation_document(user_data=b"")
    assert document[:4] == bytes.fromhex("84 44 a1 01".replace(" ", ""))  # untagged, ES384
    protected, unprotected, payload, signature = cbor2.loads(document)
    assert cbor2.loads(protected) == {1: -35}
    assert unprotected == {}
    assert len(signature) == 96
    fields = cbor2.loads(payload)
    assert list(fields) == [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ]
    assert fields["public_key"] is None
    assert fields["nonce"] is None
    assert fields["user_data"] == b""
    assert sorted(fields["pcrs"]) == list(range(17))  # every locked PCR
    assert fields["pcrs"][16] == pcr.extend(pcr.ZERO, b"x")
    assert len(fields["cabundle"]) == 4
    assert fields["cabundle"][0] == sim.root_certificate


def test_the_chain_is_shaped_like_aws(sim) -> None:
    document = parse_attestation(sim.get_attestation_document())
    leaf = document.signing_certificate
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetimes = [
        x509.load_der_x509_certificate(der).not_valid_after_utc
        - x509.load_der_x509_certificate(der).not_valid_before_utc
        for der in document.cabundle
    ]
    assert lifetimes[1:] == [timedelta(days=20, hours=1), timedelta(days=6), timedelta(hours=24)]


def test_the_leaf_is_reused_then_renewed_before_it_expires(sim, clock) -> None:
    verifier = Verifier(trust_root=sim.trust_root)
    first = sim.get_attestation_document()
    leaf = _leaf(first)
    assert leaf.not_valid_before_utc == T0 - timedelta(minutes=1)

    clock.now = T0 + timedelta(hours=2, minutes=48)  # 11 minutes left
    second = sim.get_attestation_document()
    assert _leaf(second) == leaf
    verifier.verify(second, policy=_any_pcrs(), at=clock.now)

    clock.now = T0 + timedelta(hours=2, minutes=50)  # 9 minutes left
    third = sim.get_attestation_document()
    assert _leaf(third) != leaf
    assert _leaf(third).not_valid_before_utc == clock.now - timedelta(minutes=1)
    verifier.verify(third, policy=_any_pcrs(), at=clock.now)
    assert parse_attestation(third).cabundle == parse_attestation(first).cabundle


def test_the_ca_chain_is_renewed_before_it_expires(sim, clock) -> None:
    verifier = Verifier(trust_root=sim.trust_root)
    first = parse_attestation(sim.get_attestation_document())
    instance = x509.load_der_x509_certificate(first.cabundle[3])
    # The instance CA lives 24 hours from an hour before T0; with less than 4 hours left
    # a new chain is made, so that no new leaf outlives its issuer.
    clock.now = instance.not_valid_after_utc - timedelta(hours=4, minutes=1)
    assert parse_attestation(sim.get_attestation_document()).cabundle == first.cabundle
    clock.now = instance.not_valid_after_utc - timedelta(hours=3, minutes=59)
    renewed = sim.get_attestation_document()
    cabundle = parse_attestation(renewed).cabundle
    assert cabundle[0] == first.cabundle[0]  # same root
    assert cabundle[1:] != first.cabundle[1:]
    leaf = _leaf(renewed)
    assert (
        leaf.not_valid_after_utc <= x509.load_der_x509_certificate(cabundle[3]).not_valid_after_utc
    )
    verifier.verify(renewed, policy=_any_pcrs(), at=clock.now)
    # Days later, still valid documents.
    for days in (3, 10, 40):
        clock.now = T0 + timedelta(days=days)
        verifier.verify(sim.get_attestation_document(), policy=_any_pcrs(), at=clock.now)


def test_a_clock_going_backwards_gets_a_fresh_leaf(sim, clock) -> None:
    sim.get_attestation_document()
    clock.now = T0 - timedelta(minutes=30)  # before the leaf (and CA) start
    document = sim.get_attestation_document()
    Verifier(trust_root=sim.trust_root).verify(document, policy=_any_pcrs(), at=clock.now)


def test_naive_clocks_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        SimulatedNsm(clock=lambda: datetime(2026, 1, 1))


def test_starting_is_loud(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="attested.simulator"):
        sim = SimulatedNsm()
    records = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(records) == 1
    assert "SIMULATED" in records[0].getMessage()
    assert sim.module_id in records[0].getMessage()


def test_close(sim) -> None:
    with sim:
        sim.describe()
    assert sim.closed
    sim.close()
    for operation in (
        sim.describe,
        lambda: sim.get_attestation_document(),
        lambda: sim.get_random(1),
    ):
        with pytest.raises(ValueError, match="closed"):
            operation()
    assert "closed" in repr(sim)


def test_real_time_by_default() -> None:
    sim = SimulatedNsm()
    document = parse_attestation(sim.get_attestation_document())
    assert abs(document.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
    Verifier(trust_root=sim.trust_root).verify(sim.get_attestation_document(), policy=_any_pcrs())
