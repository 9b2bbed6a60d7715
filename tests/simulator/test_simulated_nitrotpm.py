"""The simulated NitroTPM: TPM PCR semantics, documents shaped like EC2's, the shared root."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import cbor2
import pytest

from attested import MalformedError, Policy, Verifier, pcr
from attested.document import Profile, parse_attestation
from attested.enclave import open_provider
from attested.errors import ConfigError
from attested.service import Service, ServiceConfig, load_config
from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm, SimulatedNsm
from attested.verify import VerifiedAttestation
from nsm.errors import InvalidIndex
from tests.kit import T0
from tests.service.helpers import ApiClient

REAL = Path(__file__).parents[1] / "vectors" / "attestation"
PCR4 = bytes.fromhex("a4" * 48)
ANY = Policy(pcrs={12: pcr.ZERO})  # every document here has PCR12 zero


def _verify(sim: SimulatedNitroTpm, document: bytes, policy: Policy = ANY) -> VerifiedAttestation:
    """Verify a document of the ``sim`` fixture (whose clock stands at T0)."""
    verifier = Verifier(trust_root=sim.trust_root, profile=Profile.NITROTPM)
    return verifier.verify(document, policy=policy, at=T0)


@pytest.fixture
def sim() -> SimulatedNitroTpm:
    return SimulatedNitroTpm(clock=lambda: T0)


def _payload(document: bytes) -> dict[object, object]:
    payload = cbor2.loads(cbor2.loads(document)[2])
    assert isinstance(payload, dict)
    return payload


def test_a_document_is_a_nitrotpm_one_with_24_pcrs_at_their_boot_values(sim) -> None:
    nonce, user_data = b"n" * 32, b"hello"
    verified = _verify(
        sim,
        sim.get_attestation_document(nonce=nonce, user_data=user_data, public_key=b"spki"),
        Policy(pcrs={4: DEFAULT_NITROTPM_PCRS[4], 12: pcr.ZERO}, nonce=nonce),
    )
    assert sorted(verified.pcrs) == list(range(24))
    assert verified.pcrs[7] == pcr.NITROTPM_PCR7_SECURE_BOOT_OFF
    assert all(verified.pcrs[i] == b"\xff" * 48 for i in range(17, 23))
    assert all(verified.pcrs[i] == pcr.ZERO for i in (2, 3, 5, 6, 8, 9, 10, 11, 12, 16, 23))
    assert (verified.user_data, verified.public_key) == (user_data, b"spki")
    assert re.fullmatch(r"i-[0-9a-z]+-tpm0{16}", verified.module_id)


def test_the_layout_is_the_real_documents_and_an_enclave_verifier_refuses_it(sim) -> None:
    document = sim.get_attestation_document(nonce=b"n")
    real = (REAL / "real_nitrotpm_vaportpm_2026_02_03.cbor").read_bytes()
    assert list(_payload(document)) == list(_payload(real))
    assert parse_attestation(document, profile=Profile.NITROTPM).profile is Profile.NITROTPM
    with pytest.raises(MalformedError, match="nitrotpm_pcrs"):
        Verifier(trust_root=sim.trust_root).verify(document, policy=ANY, at=T0)


def test_pcrs_extend_only_and_a_new_instance_boots_afresh(sim) -> None:
    before = sim.describe_pcr(10).value
    after = sim.extend_pcr(10, b"ima event")
    assert after == pcr.extend(before, b"ima event") != before
    assert sim.describe_pcr(10).value == after
    assert not sim.describe_pcr(10).locked
    assert _verify(sim, sim.get_attestation_document()).pcrs[10] == after
    assert SimulatedNitroTpm(clock=lambda: T0).describe_pcr(10).value == before
    with pytest.raises(InvalidIndex):
        sim.extend_pcr(24, b"x")
    with pytest.raises(InvalidIndex):
        sim.describe_pcr(24)


def test_boot_values_are_checked() -> None:
    assert SimulatedNitroTpm(pcrs={4: PCR4}).describe_pcr(4).value == PCR4
    # Given PCRs replace the defaults; the others read as at boot.
    assert SimulatedNitroTpm(pcrs={4: PCR4}).describe_pcr(7).value == pcr.ZERO
    with pytest.raises(ValueError, match="0-23"):
        SimulatedNitroTpm(pcrs={24: PCR4})
    with pytest.raises(ValueError, match="48 bytes"):
        SimulatedNitroTpm(pcrs={4: b"short"})


def test_it_shares_the_state_root_with_the_simulated_nsm_and_says_it_is_simulated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        tpm = SimulatedNitroTpm(state_dir=tmp_path)
    assert "SIMULATED NitroTPM" in caplog.text
    enclave = SimulatedNsm(state_dir=tmp_path)
    assert tpm.root_certificate == enclave.root_certificate
    verifier = Verifier(trust_root=enclave.trust_root, profile=Profile.NITROTPM)
    assert verifier.verify(tpm.get_attestation_document(), policy=ANY).module_id == tpm.module_id
    tpm.close()
    with pytest.raises(ValueError, match="closed"):
        tpm.get_attestation_document()


def test_open_provider_gives_it_only_when_chosen(tmp_path: Path) -> None:
    with open_provider("simulated-nitrotpm", state_dir=tmp_path, pcrs={4: PCR4}) as provider:
        assert provider.backend == "simulated-nitrotpm"
        document = provider.get_attestation_document(nonce=b"n")
    assert parse_attestation(document, profile=Profile.NITROTPM).pcrs[4] == PCR4
    with pytest.raises(ValueError, match="simulated backends only"):
        open_provider("ioctl", pcrs={4: PCR4})


def _config(tmp_path: Path, backend: str, pcrs: str) -> Path:
    path = tmp_path / "attested.toml"
    path.write_text(
        f'region = "us-east-1"\n[kms]\nallowed_keys = ["*"]\n'
        f'[api]\nunix = "{tmp_path / "api.sock"}"\n'
        f'[nsm]\nbackend = "{backend}"\nsimulated_state = "{tmp_path / "sim"}"\n'
        f"simulated_pcrs = {{{pcrs}}}\n"
    )
    return path


def test_the_service_config_takes_the_backend_and_its_pcr_range(tmp_path: Path) -> None:
    pcr23 = f'"23" = "{"ab" * 48}"'
    config = load_config(_config(tmp_path, "simulated-nitrotpm", pcr23), {})
    assert config.nsm_backend == "simulated-nitrotpm"
    assert config.nsm_simulated_pcrs[23] == bytes.fromhex("ab" * 48)
    with pytest.raises(ConfigError, match=r"0-15"):
        load_config(_config(tmp_path, "simulated", pcr23), {})
    with pytest.raises(ConfigError, match="simulated-nitrotpm"):
        ServiceConfig(nsm_backend="libnsm", nsm_simulated_state="x", allowed_keys=("*",))


def test_serve_on_the_simulated_nitrotpm_answers_with_an_instance_document(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "simulated-nitrotpm", f'"4" = "{PCR4.hex()}"'), {})
    service = Service(config)
    service.start()
    try:
        with ApiClient(str(tmp_path / "api.sock")) as api:
            nonce = b"\x01" * 32
            answer = api.post("/v1/attestation", {"nonce": base64.b64encode(nonce).decode()}).json()
            health = api.get("/v1/health").json()
    finally:
        service.stop(10)
    document = base64.b64decode(answer["document"])
    verifier = Verifier(
        trust_root=SimulatedNsm(state_dir=tmp_path / "sim").trust_root, profile=Profile.NITROTPM
    )
    verified = verifier.verify(document, policy=Policy(pcrs={4: PCR4}, nonce=nonce))
    assert verified.pcrs[4] == PCR4
    assert "simulated-nitrotpm" in str(health)
