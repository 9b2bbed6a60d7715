"""Real documents from Nitro hardware: they verify at their own time, fail today."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from attested import ChainError, Policy, SecurityWarning, TimeSource, Verifier, parse_attestation
from attested.trust import AWS_NITRO_ROOT_G1_SHA256
from tests.kit import VECTORS, real_vectors, sidecar

REAL = real_vectors()


def _any_policy(allow_debug: bool) -> Policy:
    with pytest.warns(SecurityWarning):
        return Policy(pcrs={}, unsafe_any_pcrs=True, allow_debug=allow_debug)


def test_there_are_seven_real_vectors() -> None:
    assert len(REAL) == 7


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_decoded_fields_match_sidecar(path: Path) -> None:
    expected = sidecar(path)["decoded_by_helper"]
    doc = parse_attestation(path.read_bytes())
    assert doc.module_id == expected["module_id"]
    assert doc.timestamp_ms == expected["timestamp_ms"]
    assert doc.timestamp == datetime.fromisoformat(expected["timestamp_iso"])
    assert doc.digest == expected["digest"]
    assert sorted(doc.pcrs) == expected["pcr_indexes"]
    for index, value in expected["pcrs_hex"].items():
        assert doc.pcrs[int(index)].hex() == value
    assert doc.cose.tagged is expected["cose_tagged"]
    assert len(doc.cabundle) == expected["cabundle_len"]
    assert doc.signing_certificate.subject.rfc4514_string() == expected["leaf_cert"]["subject"]
    for name in ("public_key", "user_data"):
        field = expected[name]
        value = getattr(doc, name)
        if field.get("value", "missing") is None:
            assert value is None
        if "len" in field:
            assert value is not None
            assert len(value) == field["len"]
        if "hex" in field:
            assert value is not None
            assert value.hex() == field["hex"]


@pytest.mark.filterwarnings("ignore::attested.SecurityWarning")
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_verifies_at_its_own_timestamp(path: Path) -> None:
    data = path.read_bytes()
    expected = sidecar(path)["decoded_by_helper"]
    debug = not any(bytes.fromhex(expected["pcrs_hex"]["0"]))
    pcrs = {int(i): bytes.fromhex(v) for i, v in expected["pcrs_hex"].items()}
    policy = Policy(pcrs=pcrs, allow_debug=True) if debug else Policy(pcrs=pcrs)
    verified = Verifier.aws_nitro().verify(data, policy=policy, at_document_time=True)
    assert verified.time_source is TimeSource.DOCUMENT
    assert verified.verified_at == verified.timestamp
    root = verified.chain[-1]
    assert root.fingerprint(hashes.SHA256()) == AWS_NITRO_ROOT_G1_SHA256
    assert len(verified.chain) == 5


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_fails_today_with_a_chain_error(path: Path) -> None:
    today = datetime(2026, 11, 23, tzinfo=UTC)
    with pytest.raises(ChainError):
        Verifier.aws_nitro().verify(path.read_bytes(), policy=_any_policy(True), at=today)


def test_synthetic_marlin_document_fails_the_chain() -> None:
    data = (VECTORS / "attestation" / "synthetic_attestation_marlin_custom.cbor").read_bytes()
    doc = parse_attestation(data)
    with pytest.raises(ChainError, match="not the trust root"), pytest.warns(SecurityWarning):
        Verifier.aws_nitro().verify(doc, policy=_any_policy(True), at_document_time=True)
