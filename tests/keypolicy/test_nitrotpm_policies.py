"""NitroTPM measurements (tpm_pcr.json) and the NitroTPM key policy generator."""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested import pcr
from attested.document import Profile
from attested.errors import ConfigurationError, MalformedError, SecurityWarning
from attested.keypolicy import (
    ADMIN_ACTIONS,
    MeasurementSet,
    generate_nitrotpm_policy,
    lint_policy,
    parse_measurements,
    parse_policy_json,
    render_policy,
)
from tests.keypolicy.values import ACCOUNT, ADMIN_ROLE, UG, ZERO, build_output

INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/app-instance"
TPM = "kms:RecipientAttestation:NitroTPMPCR"
# The standard-boot PCR4 of the real documents in tests/vectors (docs/nitrotpm.md).
REAL_PCR4 = "1a1f166e1995c1e1bfdf1c1d13b1ebc9d5d4e44397501655c911a2062d92063483ca9e17f0264efe336d4b61c5b98d1e"  # noqa: E501
SB_OFF = pcr.NITROTPM_PCR7_SECURE_BOOT_OFF.hex()
SECURE_BOOT = UG[2]


def tpm_pcr_json(**pcrs: str) -> bytes:
    """A tpm_pcr.json as nitro-tpm-pcr-compute writes it; ``pcrs`` as ``PCR4="..."``."""
    values = pcrs or {"PCR4": REAL_PCR4, "PCR7": SB_OFF, "PCR12": ZERO}
    return json.dumps({"Measurements": {"HashAlgorithm": "SHA384", **values}}, indent=2).encode()


def read(data: bytes, source: str = "tpm_pcr.json") -> MeasurementSet:
    (measured,) = parse_measurements(data, source=source, profile=Profile.NITROTPM)
    return measured


# --- the reader ------------------------------------------------------------------------------


def test_tpm_pcr_json_is_read_as_one_nitrotpm_set() -> None:
    measured = read(tpm_pcr_json())
    assert measured.profile is Profile.NITROTPM
    assert measured.source == "tpm_pcr.json"
    assert measured.pcrs == {
        4: bytes.fromhex(REAL_PCR4),
        7: pcr.NITROTPM_PCR7_SECURE_BOOT_OFF,
        12: bytes(48),
    }
    # More PCRs (up to 23), and the bare inner object, are read as well.
    more = read(tpm_pcr_json(PCR0=UG[0], PCR4=REAL_PCR4, PCR12=ZERO, PCR23=UG[1]))
    assert sorted(more.pcrs) == [0, 4, 12, 23]
    bare = parse_measurements(
        json.dumps({"HashAlgorithm": "SHA384", "PCR4": REAL_PCR4}).encode(),
        profile=Profile.NITROTPM,
    )
    assert bare[0].pcrs == {4: bytes.fromhex(REAL_PCR4)}


def test_each_profile_refuses_the_other_tools_output_by_name() -> None:
    with pytest.raises(MalformedError, match=r"nitro-tpm-pcr-compute's output.*--nitrotpm"):
        parse_measurements(tpm_pcr_json())  # the enclave reader, the default
    for algorithm in ("Sha384 { ... }", "Sha512_48 { .. }"):
        with pytest.raises(MalformedError, match=r"nitro-cli's output.*leave out --nitrotpm"):
            parse_measurements(build_output(UG, algorithm), profile=Profile.NITROTPM)
    listed = json.dumps([{"Measurements": {"PCR0": UG[0]}}]).encode()
    with pytest.raises(MalformedError, match="is a list: it is nitro-cli's output"):
        parse_measurements(listed, profile=Profile.NITROTPM)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tpm_pcr_json(PCR24=UG[0]), "a NitroTPM has PCR0 to PCR23"),
        (tpm_pcr_json(PCR4=REAL_PCR4[:64]), "96 hex digits"),
        (tpm_pcr_json(PCR4="0x" + REAL_PCR4), "0x prefix"),
        (
            json.dumps({"Measurements": {"HashAlgorithm": "SHA256", "PCR4": UG[0]}}).encode(),
            'is not SHA-384 \\("SHA384"\\)',
        ),
        (json.dumps({"Measurements": {"HashAlgorithm": "SHA384"}}).encode(), "no PCR values"),
        (
            json.dumps({"Measurements": {"PCR4": UG[0]}, "Name": "x"}).encode(),
            "unexpected key 'Name' beside Measurements",
        ),
        (json.dumps({"Image": "x"}).encode(), "has no Measurements \\(tpm_pcr.json is"),
        (b"{", "JSON"),
    ],
)
def test_refused_tpm_pcr_json(data: bytes, message: str) -> None:
    with pytest.raises(MalformedError, match=message):
        parse_measurements(data, source="tpm_pcr.json", profile=Profile.NITROTPM)


def test_the_reader_has_a_size_cap() -> None:
    padded = tpm_pcr_json()[:-1] + b" " * (1024 * 1024) + b"}"
    with pytest.raises(MalformedError):
        parse_measurements(padded, profile=Profile.NITROTPM)


def test_a_nitrotpm_set_checks_its_values() -> None:
    with pytest.raises(ValueError, match=r"0\.\.23"):
        MeasurementSet(pcrs={24: bytes(48)}, profile=Profile.NITROTPM)
    with pytest.raises(ValueError, match="debug mode"):
        MeasurementSet(pcrs={4: bytes(48)}, profile=Profile.NITROTPM, debug_mode=True)
    with pytest.raises(TypeError):
        MeasurementSet(pcrs={4: bytes(48)}, profile="nitrotpm")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_measurements(tpm_pcr_json(), profile="nitrotpm")  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        parse_measurements(data, profile=Profile.NITROTPM)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=100),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    _json_values,
    st.sampled_from(["Measurements", "PCR4", "PCR23", "PCR24", "HashAlgorithm", "SHA384"]),
)
def test_arbitrary_json_raises_only_malformed(value: Any, key: str) -> None:
    for candidate in (value, {key: value}, [{key: value}], {"Measurements": {key: value}}):
        with contextlib.suppress(MalformedError):
            parse_measurements(json.dumps(candidate).encode(), profile=Profile.NITROTPM)


# --- the generator --------------------------------------------------------------------------


def generate(*sets: MeasurementSet, **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
    args: dict[str, Any] = {
        "account": ACCOUNT,
        "instance_role": INSTANCE_ROLE,
        "admin_role": ADMIN_ROLE,
        "measurements": sets or (read(tpm_pcr_json()),),
    }
    args.update(kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = generate_nitrotpm_policy(**args)
    return policy, [str(w.message) for w in caught if issubclass(w.category, SecurityWarning)]


def statement(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in policy["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1
    return found[0]


def test_standard_boot_pins_pcr4_and_pcr12() -> None:
    policy, warned = generate()
    assert warned == []
    assert [s["Sid"] for s in policy["Statement"]] == [
        "KeyAdministration",
        "InstanceDescribeKey",
        "InstanceAttestedOperations",
    ]
    assert statement(policy, "KeyAdministration")["Action"] == list(ADMIN_ACTIONS)
    attested = statement(policy, "InstanceAttestedOperations")
    assert attested["Principal"] == {"AWS": INSTANCE_ROLE}
    assert attested["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert attested["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}4": REAL_PCR4, f"{TPM}12": ZERO}
    }
    assert lint_policy(parse_policy_json(render_policy(policy).encode())) == ()


def test_secure_boot_pins_pcr7_and_refuses_the_secure_boot_off_value() -> None:
    signed = read(tpm_pcr_json(PCR4=REAL_PCR4, PCR7=SECURE_BOOT, PCR12=ZERO))
    policy, _ = generate(signed, secure_boot=True)
    assert statement(policy, "InstanceAttestedOperations")["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}7": SECURE_BOOT}
    }
    assert lint_policy(parse_policy_json(render_policy(policy).encode())) == ()
    with pytest.raises(ConfigurationError, match=r"booted without Secure Boot.*admit any AMI"):
        generate(read(tpm_pcr_json()), secure_boot=True)


def test_several_amis_for_a_rollout() -> None:
    old = read(tpm_pcr_json(PCR4=REAL_PCR4, PCR12=ZERO), "old.json")
    new = read(tpm_pcr_json(PCR4=UG[0], PCR12=ZERO), "new.json")
    policy, _ = generate(old, new, old)
    assert statement(policy, "InstanceAttestedOperations")["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}4": [REAL_PCR4, UG[0]], f"{TPM}12": ZERO}
    }
    # AMIs with different command lines get a statement each: no AMI gets another's.
    odd = read(tpm_pcr_json(PCR4=UG[1], PCR12=UG[8]), "odd.json")
    policy, _ = generate(old, new, odd)
    assert statement(policy, "InstanceAttestedOperations")["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}4": [REAL_PCR4, UG[0]], f"{TPM}12": ZERO}
    }
    assert statement(policy, "InstanceAttestedOperations2")["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}4": UG[1], f"{TPM}12": UG[8]}
    }
    assert lint_policy(parse_policy_json(render_policy(policy).encode())) == ()
    # Secure Boot: a db key rotation lists both PCR7 values.
    rotated = [read(tpm_pcr_json(PCR7=v), f"{n}.json") for n, v in enumerate((UG[0], UG[1]))]
    policy, _ = generate(*rotated, secure_boot=True)
    assert statement(policy, "InstanceAttestedOperations")["Condition"] == {
        "StringEqualsIgnoreCase": {f"{TPM}7": [UG[0], UG[1]]}
    }


def test_deny_without_attestation_and_encryptors() -> None:
    producer = f"arn:aws:iam::{ACCOUNT}:role/producer"
    policy, _ = generate(deny_without_attestation=True, encryptors=[producer])
    deny = statement(policy, "DenyWithoutAttestation")
    assert deny["Condition"] == {"Null": {f"{TPM}4": "true"}}
    assert deny["Principal"] == "*"
    assert statement(policy, "EncryptOnly")["Principal"] == {"AWS": producer}
    assert lint_policy(parse_policy_json(render_policy(policy).encode())) == ()
    signed = read(tpm_pcr_json(PCR7=SECURE_BOOT))
    policy, _ = generate(signed, secure_boot=True, deny_without_attestation=True)
    assert statement(policy, "DenyWithoutAttestation")["Condition"] == {"Null": {f"{TPM}7": "true"}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"measurements": ()}, "no measurements"),
        (
            {"measurements": (MeasurementSet(pcrs={0: bytes.fromhex(UG[0])}, source="x.json"),)},
            "x.json holds an enclave image's measurements",
        ),
        (
            {"measurements": (read(tpm_pcr_json(PCR4=REAL_PCR4)),)},
            "PCR12 is not in tpm_pcr.json.*GHSA-xrv8-2pf5-f3q7",
        ),
        ({"measurements": (read(tpm_pcr_json(PCR12=ZERO)),)}, "PCR4 is not in"),
        (
            {
                "measurements": (read(tpm_pcr_json(PCR4=REAL_PCR4, PCR12=ZERO)),),
                "secure_boot": True,
            },
            "PCR7 is not in",
        ),
        ({"instance_role": ADMIN_ROLE}, "must differ"),
        ({"instance_role": f"arn:aws:iam::{ACCOUNT}:user/bob"}, "not an IAM role ARN"),
        ({"account": "1234"}, "12-digit"),
        ({"operations": ["Encrypt"]}, "not an attested operation"),
    ],
)
def test_refusals(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        generate(**changes)
