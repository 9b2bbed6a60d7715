"""NitroTPM profile: arbitrary input raises only our errors, and no payload crosses profiles."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from attested import (
    MalformedError,
    Policy,
    Profile,
    SecurityWarning,
    VerificationError,
    Verifier,
    parse_attestation,
)
from tests.kit import T0, VECTORS, make_kit, sidecar

REAL = [(p.read_bytes(), p) for p in sorted((VECTORS / "attestation").glob("real_nitrotpm_*.cbor"))]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", SecurityWarning)
    ANY = Policy(pcrs={}, unsafe_any_pcrs=True)
VERIFIER = Verifier.aws_nitro(profile=Profile.NITROTPM)
KIT = make_kit()
KIT_VERIFIERS = {p: Verifier(trust_root=KIT.root, profile=p) for p in Profile}


@given(st.binary(max_size=6000))
@settings(max_examples=200)
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_attestation(data, profile=Profile.NITROTPM)


@given(
    st.sampled_from(range(len(REAL))),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
)
@settings(max_examples=300)
def test_single_byte_mutation_of_a_real_document_never_verifies(
    which: int, position: int, flip: int
) -> None:
    data, path = REAL[which]
    mutated = bytearray(data)
    mutated[position % len(data)] ^= flip
    at = datetime.fromisoformat(sidecar(path)["decoded_by_helper"]["timestamp_iso"])
    with pytest.raises((MalformedError, VerificationError)):
        VERIFIER.verify(bytes(mutated), policy=ANY, at=at + timedelta(milliseconds=1))


_VALID_MAPS = st.dictionaries(
    st.integers(0, 31), st.sampled_from([bytes(48), b"\x44" * 48]), min_size=1, max_size=24
)
_PCR_MAPS = st.one_of(
    _VALID_MAPS,
    st.dictionaries(st.integers(-3, 40), st.binary(max_size=70), max_size=4),
    st.none(),
    st.integers(),
    st.text(max_size=4),
)
_FIELD = st.one_of(st.just("absent"), _VALID_MAPS, _PCR_MAPS)


@given(
    pcrs=_FIELD,
    tpm=_FIELD,
    indefinite=st.booleans(),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@example(pcrs="absent", tpm={4: b"\x44" * 48}, indefinite=True)  # a NitroTPM document
@example(pcrs={0: b"\xaa" * 48}, tpm="absent", indefinite=False)  # an enclave document
def test_a_signed_payload_is_accepted_only_by_the_profile_whose_field_it_has(
    pcrs: object, tpm: object, indefinite: bool
) -> None:
    payload = KIT.payload()
    del payload["pcrs"]
    if pcrs != "absent":
        payload["pcrs"] = pcrs
    if tpm != "absent":
        payload["nitrotpm_pcrs"] = tpm
    data = KIT.document(payload, indefinite=indefinite)
    for profile in Profile:
        try:
            verified = KIT_VERIFIERS[profile].verify(data, policy=ANY, at=T0)
        except (MalformedError, VerificationError):
            continue
        # Accepted: the payload had this profile's field, a real PCR map, and not the other.
        assert profile.pcr_field in payload
        assert profile.other.pcr_field not in payload
        assert verified.profile is profile
        assert dict(verified.pcrs) == payload[profile.pcr_field]
