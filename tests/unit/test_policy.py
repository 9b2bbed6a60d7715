"""Verification policies: every check, all failures reported together, no accidental accept."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest

from attested import (
    ChainError,
    Policy,
    PolicyError,
    SecurityWarning,
    SignatureError,
    TimeSource,
    VerifiedAttestation,
    Verifier,
)
from tests.kit import PCR0, PCR1, PCR2, PCR8, T0, Kit

NONCE = bytes.fromhex("0123456789abcdef")


def _doc(kit: Kit, **fields: object) -> bytes:
    return kit.document(kit.payload(**fields))


def _check(kit: Kit, data: bytes, policy: Policy, **kw):
    return Verifier(trust_root=kit.root).verify(data, policy=policy, at=T0, **kw)


def test_there_is_no_default_policy(kit: Kit) -> None:
    with pytest.raises(TypeError):
        Verifier(trust_root=kit.root).verify(kit.document())  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Policy()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="pins no PCRs"):
        Policy(pcrs={})
    with pytest.raises(ValueError, match="pins no PCRs"):
        Policy(pcrs=[])


def test_unpinned_policy_is_explicit_and_warns(kit: Kit) -> None:
    with pytest.warns(SecurityWarning, match="pins no PCRs"):
        policy = Policy(pcrs={}, unsafe_any_pcrs=True)
    assert _check(kit, _doc(kit), policy).pcrs[0] == PCR0
    with pytest.raises(ValueError, match="contradicts"):
        Policy(pcrs={0: PCR0}, unsafe_any_pcrs=True)


def test_matching_pcrs_pass_and_every_mismatch_is_reported(kit: Kit) -> None:
    assert (
        _check(kit, _doc(kit), Policy(pcrs={0: PCR0, 1: PCR1, 2: PCR2, 8: PCR8})).document
        is not None
    )
    wrong = Policy(pcrs={0: PCR1, 2: PCR2, 8: PCR0, 20: PCR0})
    with pytest.raises(PolicyError) as info:
        _check(kit, _doc(kit), wrong)
    failures = info.value.failures
    assert [(f.check, f.index) for f in failures] == [("pcr", 0), ("pcr", 8), ("pcr", 20)]
    assert failures[0].expected == PCR1.hex()
    assert failures[0].got == PCR0.hex()
    assert failures[2].got == "absent"


def test_several_pcr_sets_allow_a_rollout(kit: Kit) -> None:
    new_image = bytes.fromhex("ee" * 48)
    policy = Policy(pcrs=[{0: new_image, 8: PCR8}, {0: PCR0, 8: PCR8}])
    assert _check(kit, _doc(kit), policy).document is not None
    neither = Policy(pcrs=[{0: new_image}, {0: bytes.fromhex("ff" * 48)}])
    with pytest.raises(PolicyError) as info:
        _check(kit, _doc(kit), neither)
    assert [(f.index, f.alternative) for f in info.value.failures] == [(0, 0), (0, 1)]


def test_nonce_user_data_public_key(kit: Kit) -> None:
    data = _doc(kit, nonce=NONCE, user_data=b"", public_key=b"key")
    assert (
        _check(
            kit, data, Policy(pcrs={0: PCR0}, nonce=NONCE, user_data=b"", public_key=b"key")
        ).document
        is not None
    )
    with pytest.raises(PolicyError) as info:
        _check(kit, data, Policy(pcrs={0: PCR0}, nonce=b"other", user_data=b"x", public_key=b""))
    assert {f.check: f.got for f in info.value.failures} == {
        "nonce": NONCE.hex(),
        "user_data": "empty",
        "public_key": b"key".hex(),
    }
    with pytest.raises(PolicyError) as info:
        _check(kit, _doc(kit), Policy(pcrs={0: PCR0}, nonce=NONCE))
    assert info.value.failures[0].got == "absent"


def test_max_age_and_clock_skew(kit: Kit) -> None:
    data = _doc(kit)
    verifier = Verifier(trust_root=kit.root)
    policy = Policy(pcrs={0: PCR0}, max_age=timedelta(minutes=5))
    assert verifier.verify(data, policy=policy, at=T0 + timedelta(minutes=5)).document is not None
    with pytest.raises(PolicyError, match="max_age"):
        verifier.verify(data, policy=policy, at=T0 + timedelta(minutes=5, milliseconds=1))
    assert verifier.verify(data, policy=policy, at=T0 - timedelta(seconds=60)).document is not None
    with pytest.raises(PolicyError, match="in the future"):
        verifier.verify(data, policy=policy, at=T0 - timedelta(seconds=61))


def test_debug_mode_is_refused_unless_allowed(kit: Kit) -> None:
    debug = _doc(kit, pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48), 4: PCR1})
    with pytest.warns(SecurityWarning):
        unpinned = Policy(pcrs={}, unsafe_any_pcrs=True)
    with pytest.raises(PolicyError) as info:
        _check(kit, debug, unpinned)
    assert info.value.failures[0].check == "debug_mode"
    with pytest.raises(ValueError, match="all-zero PCR0"):
        Policy(pcrs={0: bytes(48)})
    with pytest.warns(SecurityWarning, match="debug-mode"):
        allowing = Policy(pcrs={0: bytes(48)}, allow_debug=True)
    assert _check(kit, debug, allowing).document is not None


def test_missing_pcr0_is_not_taken_for_production(kit: Kit) -> None:
    data = _doc(kit, pcrs={4: PCR1})
    with pytest.raises(PolicyError) as info:
        _check(kit, data, Policy(pcrs={4: PCR1}))
    assert [f.check for f in info.value.failures] == ["debug_mode"]


def test_policy_validates_its_values() -> None:
    with pytest.raises(ValueError, match="index"):
        Policy(pcrs={32: PCR0})
    with pytest.raises(ValueError, match="bytes"):
        Policy(pcrs={0: bytes(40)})
    with pytest.raises(TypeError):
        Policy(pcrs={0: PCR0.hex()})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        Policy(pcrs={0: PCR0}, nonce="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_age"):
        Policy(pcrs={0: PCR0}, max_age=timedelta(0))
    with pytest.raises(TypeError):
        Policy(pcrs="0=aa")  # type: ignore[arg-type]


def test_policy_is_frozen_and_normalised() -> None:
    source = {8: PCR8, 0: PCR0}
    policy = Policy(pcrs=source)
    source[0] = PCR1
    assert list(policy.pcr_sets[0].items()) == [(0, PCR0), (8, PCR8)]
    with pytest.raises(TypeError):
        policy.pcr_sets[0][0] = PCR1  # type: ignore[index]


def test_all_families_reported_by_check(kit: Kit) -> None:
    bad_signature = bytearray(_doc(kit, nonce=b"n"))
    bad_signature[-1] ^= 1
    report = Verifier(trust_root=kit.root).check(
        bytes(bad_signature), policy=Policy(pcrs={0: PCR1}, nonce=b"m"), at=T0 + timedelta(hours=4)
    )
    assert not report.ok
    assert report.chain_error is not None
    assert report.signature_error is not None
    assert [f.check for f in report.policy_failures] == ["pcr", "nonce"]
    assert [line.split(":")[0] for line in report.failures] == [
        "chain",
        "signature",
        "policy",
        "policy",
    ]


def test_verify_raises_chain_before_signature_before_policy(kit: Kit) -> None:
    data = bytearray(_doc(kit))
    data[-1] ^= 1
    verifier = Verifier(trust_root=kit.root)
    wrong = Policy(pcrs={0: PCR1})
    with pytest.raises(ChainError):
        verifier.verify(bytes(data), policy=wrong, at=T0 + timedelta(hours=4))
    with pytest.raises(SignatureError):
        verifier.verify(bytes(data), policy=wrong, at=T0)
    with pytest.raises(PolicyError):
        verifier.verify(_doc(kit), policy=wrong, at=T0)


def test_time_arguments(kit: Kit) -> None:
    verifier = Verifier(trust_root=kit.root)
    policy = Policy(pcrs={0: PCR0})
    with pytest.raises(ValueError, match="not both"):
        verifier.verify(_doc(kit), policy=policy, at=T0, at_document_time=True)
    with pytest.raises(ValueError, match="timezone"):
        verifier.verify(_doc(kit), policy=policy, at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="max_age"):
        verifier.verify(
            _doc(kit),
            policy=Policy(pcrs={0: PCR0}, max_age=timedelta(minutes=1)),
            at_document_time=True,
        )
    with pytest.warns(SecurityWarning, match="own timestamp"):
        verified = verifier.verify(_doc(kit), policy=policy, at_document_time=True)
    assert verified.time_source is TimeSource.DOCUMENT
    assert verified.verified_at == T0
    # "now" is the real clock: the test PKI (valid around T0) must fail today or pass
    # only if today is within its validity, which it is not.
    with pytest.raises(ChainError):
        verifier.verify(_doc(kit), policy=policy)


def test_verified_attestation_cannot_be_forged(kit: Kit) -> None:
    verified = _check(kit, _doc(kit), Policy(pcrs={0: PCR0}))
    with pytest.raises(TypeError, match="only created by Verifier"):
        VerifiedAttestation(
            document=verified.document,
            chain=verified.chain,
            verified_at=T0,
            time_source=TimeSource.GIVEN,
            policy=verified.policy,
            _seal=object(),
        )


def test_warning_filters_do_not_leak() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Policy(pcrs={0: PCR0})
    assert caught == []
