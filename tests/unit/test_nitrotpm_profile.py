"""NitroTPM documents are their own profile: accepted only when asked for (ADR 0130)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from attested import (
    ChainError,
    MalformedError,
    Policy,
    PolicyError,
    Profile,
    SecurityWarning,
    TimeSource,
    Verifier,
    parse_attestation,
)
from attested.cli import main
from attested.trust import AWS_NITRO_ROOT_G1_SHA256
from tests.kit import T0, VECTORS, Kit, make_kit, sidecar

TPM = sorted((VECTORS / "attestation").glob("real_nitrotpm_*.cbor"))
ENCLAVE = VECTORS / "attestation" / "real_attestation_marlin.cbor"
LATEST = VECTORS / "attestation" / "real_nitrotpm_vaportpm_2026_02_03.cbor"


def _decoded(path: Path) -> dict[str, object]:
    decoded: dict[str, object] = sidecar(path)["decoded_by_helper"]
    return decoded


def _pcrs(path: Path, *indexes: int) -> dict[int, bytes]:
    values = _decoded(path)["nitrotpm_pcrs_hex"]
    assert isinstance(values, dict)
    return {i: bytes.fromhex(values[str(i)]) for i in indexes}


@pytest.fixture(scope="module")
def kit() -> Kit:
    return make_kit()


def _tpm_payload(kit: Kit) -> dict[str, object]:
    payload = kit.payload(module_id="i-0test0000000000000-tpm0000000000000000")
    pcrs = payload.pop("pcrs")
    assert isinstance(pcrs, dict)
    payload["nitrotpm_pcrs"] = {i: bytes(48) for i in range(24)} | {4: b"\x44" * 48}
    return payload


def test_there_are_two_real_nitrotpm_vectors_with_provenance() -> None:
    assert [p.name for p in TPM] == [
        "real_nitrotpm_vaportpm_2026_02_01.cbor",
        "real_nitrotpm_vaportpm_2026_02_03.cbor",
    ]
    for path in TPM:
        side = sidecar(path)
        assert side["real_nitro_hardware"] is True
        assert side["profile"] == "nitrotpm"
        assert side["source"]["repo"] == "lockboot/vaportpm"
        assert len(side["source"]["commit"]) == 40
        assert side["checks"]["chain_verifies_to_root_g1_at_doc_timestamp"] is True


@pytest.mark.parametrize("path", TPM, ids=lambda p: p.stem)
def test_real_document_parses_as_nitrotpm_and_matches_its_sidecar(path: Path) -> None:
    expected = _decoded(path)
    doc = parse_attestation(path.read_bytes(), profile=Profile.NITROTPM)
    assert doc.profile is Profile.NITROTPM
    assert doc.module_id == expected["module_id"]
    assert doc.module_id.endswith("-tpm0000000000000000")
    assert doc.timestamp_ms == expected["timestamp_ms"]
    assert sorted(doc.pcrs) == expected["nitrotpm_pcr_indexes"] == list(range(24))
    hexes = expected["nitrotpm_pcrs_hex"]
    assert isinstance(hexes, dict)
    assert {str(i): v.hex() for i, v in doc.pcrs.items()} == hexes
    assert doc.nonce is not None
    assert doc.nonce.hex() == expected["nonce"]["hex"]  # type: ignore[index]
    assert doc.user_data is None
    assert "nitrotpm" in repr(doc)


@pytest.mark.parametrize("path", TPM, ids=lambda p: p.stem)
def test_real_document_verifies_at_its_own_time_pinned_to_pcr4_and_pcr12(path: Path) -> None:
    verifier = Verifier.aws_nitro(profile=Profile.NITROTPM)
    policy = Policy(pcrs=_pcrs(path, 4, 12))
    with pytest.warns(SecurityWarning):
        verified = verifier.verify(path.read_bytes(), policy=policy, at_document_time=True)
    assert verified.profile is Profile.NITROTPM
    assert verified.time_source is TimeSource.DOCUMENT
    assert verified.chain[-1].fingerprint(hashes.SHA256()) == AWS_NITRO_ROOT_G1_SHA256
    assert len(verified.chain) == 5


def test_real_document_verifies_at_the_time_its_source_test_uses() -> None:
    expects = sidecar(LATEST)["source_test_expects"]
    at = datetime.fromtimestamp(expects["verify_at_unix_s"], UTC)
    nonce = bytes.fromhex(expects["expected_nonce_hex"])
    policy = Policy(pcrs=_pcrs(LATEST, 4, 7, 12), nonce=nonce)
    verified = Verifier.aws_nitro(profile=Profile.NITROTPM).verify(
        LATEST.read_bytes(), policy=policy, at=at
    )
    assert verified.nonce == nonce
    with pytest.raises(ChainError):
        Verifier.aws_nitro(profile=Profile.NITROTPM).verify(
            LATEST.read_bytes(), policy=policy, at=datetime(2026, 11, 23, tzinfo=UTC)
        )


def test_another_pcr4_fails_the_policy_naming_pcr4() -> None:
    other = {4: b"\x01" * 48, 12: _pcrs(LATEST, 12)[12]}
    with pytest.raises(PolicyError) as caught, pytest.warns(SecurityWarning):
        Verifier.aws_nitro(profile=Profile.NITROTPM).verify(
            LATEST.read_bytes(), policy=Policy(pcrs=other), at_document_time=True
        )
    assert [(f.check, f.index) for f in caught.value.failures] == [("pcr", 4)]


@pytest.mark.parametrize("path", TPM, ids=lambda p: p.stem)
def test_the_enclave_profile_refuses_a_nitrotpm_document_naming_the_missing_pcrs(
    path: Path,
) -> None:
    data = path.read_bytes()
    with pytest.raises(MalformedError, match=r"missing required field 'pcrs'.*nitrotpm_pcrs"):
        parse_attestation(data)
    with pytest.raises(MalformedError, match="missing required field 'pcrs'"):
        Verifier.aws_nitro().verify(data, policy=Policy(pcrs=_pcrs(path, 4)))


def test_the_nitrotpm_profile_refuses_an_enclave_document_naming_the_missing_field() -> None:
    data = ENCLAVE.read_bytes()
    with pytest.raises(MalformedError, match=r"missing required field 'nitrotpm_pcrs'.*'pcrs'"):
        parse_attestation(data, profile=Profile.NITROTPM)
    verifier = Verifier.aws_nitro(profile=Profile.NITROTPM)
    with pytest.raises(MalformedError, match="missing required field 'nitrotpm_pcrs'"):
        verifier.verify(data, policy=Policy(pcrs={4: b"\x01" * 48}))


def test_a_document_parsed_as_one_profile_is_refused_by_the_other_verifier() -> None:
    tpm = parse_attestation(LATEST.read_bytes(), profile=Profile.NITROTPM)
    with pytest.raises(MalformedError, match="accepts enclave documents"):
        Verifier.aws_nitro().check(tpm, policy=Policy(pcrs=_pcrs(LATEST, 4)), at=T0)
    enclave = parse_attestation(ENCLAVE.read_bytes())
    with pytest.raises(MalformedError, match="accepts nitrotpm documents"):
        Verifier.aws_nitro(profile=Profile.NITROTPM).check(
            enclave, policy=Policy(pcrs={4: b"\x01" * 48}), at=T0
        )


def test_a_signed_document_with_both_pcr_fields_is_refused_by_both_profiles(kit: Kit) -> None:
    payload = _tpm_payload(kit)
    payload["pcrs"] = {0: b"\xaa" * 48}
    data = kit.document(payload)
    for profile in Profile:
        with pytest.raises(MalformedError, match="has both 'pcrs' and 'nitrotpm_pcrs'"):
            parse_attestation(data, profile=profile)


def test_a_synthetic_nitrotpm_document_verifies_and_skips_the_enclave_debug_check(
    kit: Kit,
) -> None:
    # PCR0 all zero would be a debug-mode enclave; for an instance it means nothing.
    data = kit.document(_tpm_payload(kit), indefinite=True)
    verifier = Verifier(trust_root=kit.root, profile=Profile.NITROTPM)
    verified = verifier.verify(data, policy=Policy(pcrs={4: b"\x44" * 48}), at=T0)
    assert verified.pcrs[0] == bytes(48)
    with pytest.raises(MalformedError, match="missing required field 'pcrs'"):
        Verifier(trust_root=kit.root).verify(data, policy=Policy(pcrs={4: b"\x44" * 48}), at=T0)


def test_the_profile_must_be_a_profile() -> None:
    with pytest.raises(TypeError, match="Profile"):
        Verifier.aws_nitro(profile="nitrotpm")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Profile"):
        parse_attestation(LATEST.read_bytes(), profile="nitrotpm")  # type: ignore[arg-type]


# The command line: `attested verify --nitrotpm`, and the enclave default refusing it.

PCR4_ARG = "4=" + _pcrs(LATEST, 4)[4].hex()
PCR12_ARG = "12=" + "00" * 48


def test_cli_verify_nitrotpm_accepts_the_real_document(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["verify", "--nitrotpm", "--at-document-time", "--json", str(LATEST)]
    assert main([*argv, "--pcr", PCR4_ARG, "--pcr", PCR12_ARG]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is True
    assert out["profile"] == "nitrotpm"
    assert out["module_id"] == "i-01cfb383223e42522-tpm0000000000000000"


def test_cli_verify_nitrotpm_names_a_wrong_pcr4(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["verify", "--nitrotpm", "--at-document-time", str(LATEST)]
    assert main([*argv, "--pcr", "4=" + "01" * 48, "--pcr", PCR12_ARG]) == 1
    assert "policy: pcr4: expected 0101" in capsys.readouterr().out


def test_cli_verify_without_nitrotpm_refuses_naming_pcrs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["verify", "--at-document-time", str(LATEST)]) == 2
    err = capsys.readouterr().err
    assert "missing required field 'pcrs'" in err
    assert "--nitrotpm" in err


def test_cli_verify_nitrotpm_refuses_an_enclave_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["verify", "--nitrotpm", "--at-document-time", str(ENCLAVE)]) == 2
    assert "missing required field 'nitrotpm_pcrs'" in capsys.readouterr().err


def test_cli_allow_debug_with_nitrotpm_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["verify", "--nitrotpm", "--allow-debug", str(LATEST)]) == 2
    assert "no debug mode" in capsys.readouterr().err


def test_cli_inspect_nitrotpm_shows_the_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--nitrotpm", str(LATEST)]) == 0
    assert "NitroTPM (EC2 instance)" in capsys.readouterr().out
    assert main(["inspect", str(LATEST)]) == 2
