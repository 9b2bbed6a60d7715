"""Reading nitro-cli measurement output."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.errors import MalformedError
from attested.keypolicy import MeasurementSet, parse_measurements
from tests.eif.test_cli import SYNTHETIC
from tests.keypolicy.values import CLI_X86, UG, build_output


def _hex(measured: MeasurementSet) -> dict[int, str]:
    return {i: v.hex() for i, v in measured.pcrs.items()}


@pytest.mark.parametrize("algorithm", ["Sha384 { ... }", "Sha512_48 { .. }"])
def test_build_enclave_output_in_both_spellings(algorithm) -> None:
    (measured,) = parse_measurements(build_output(UG, algorithm), source="build.json")
    assert _hex(measured) == UG
    assert measured.source == "build.json"
    assert not measured.debug_mode


def test_describe_eif_output(capsys) -> None:
    from attested.cli import main

    assert main(["eif", "describe", str(SYNTHETIC), "--json"]) == 0
    described = capsys.readouterr().out
    (measured,) = parse_measurements(described.encode())
    expected = json.loads(SYNTHETIC.with_suffix(".json").read_text())["expected_measurements"]
    assert {f"PCR{i}": v for i, v in _hex(measured).items()} == expected


def test_describe_enclaves_list_with_debug_flag() -> None:
    enclaves = [
        {
            "EnclaveName": "old",
            "EnclaveID": "i-0abc-enc01",
            "Flags": "NONE",
            "Measurements": {"HashAlgorithm": "Sha384 { ... }"}
            | {f"PCR{i}": v for i, v in UG.items()},
        },
        {
            "EnclaveName": "new",
            "EnclaveID": "i-0abc-enc02",
            "Flags": "DEBUG_MODE",
            "Measurements": {"HashAlgorithm": "Sha512_48 { .. }"}
            | {f"PCR{i}": v for i, v in CLI_X86.items()},
        },
    ]
    old, new = parse_measurements(json.dumps(enclaves).encode(), source="enclaves.json")
    assert _hex(old) == UG
    assert _hex(new) == CLI_X86
    assert old.source == "enclaves.json[0] (old)"
    assert new.debug_mode
    assert not old.debug_mode


def test_bare_measurements_and_uppercase_hex() -> None:
    bare = {f"PCR{i}": v.upper() for i, v in CLI_X86.items()}
    (measured,) = parse_measurements(json.dumps(bare).encode())
    assert _hex(measured) == CLI_X86


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (build_output(UG, "Sha256 { ... }"), "is not SHA-384"),
        (json.dumps({"Measurements": {"PCR0": "0x" + UG[0]}}), "0x prefix"),
        (json.dumps({"Measurements": {"PCR0": UG[0] * 2}}), "got 192 characters"),
        (json.dumps({"Measurements": {"PCR0": UG[0][:64]}}), "got 64 characters"),
        (json.dumps({"Measurements": {"PCRO": UG[0]}}), "unexpected key 'PCRO'"),
        (json.dumps({"Measurements": {"PCR32": UG[0]}}), "unexpected key 'PCR32'"),
        (json.dumps({"Measurements": {"PCR0": 7}}), "hex string"),
        (json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }"}}), "no PCR values"),
        (json.dumps({"Measurements": []}), "must be an object"),
        (json.dumps([]), "empty list"),
        (json.dumps([{"EnclaveID": "x", "State": "RUNNING"}]), "before nitro-cli 1.2"),
        (json.dumps([{"EnclaveID": "x"}] * 65), "more than 64"),
        (json.dumps({"EifVersion": 4}), "no Measurements"),
        ('{"Measurements": {"PCR0": "a", "PCR0": "b"}}', "duplicate key"),
        ("Enclave Image successfully created.", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 100 + "]" * 100, "nesting"),
        (" " * (1024 * 1024 + 1), "more than the limit"),
    ],
)
def test_refused_inputs(data, message) -> None:
    raw = data if isinstance(data, bytes) else data.encode()
    with pytest.raises(MalformedError, match=message):
        parse_measurements(raw)


def test_measurement_set_checks_its_values() -> None:
    with pytest.raises(ValueError, match="48 bytes"):
        MeasurementSet(pcrs={0: b"short"})
    with pytest.raises(ValueError, match=r"0\.\.31"):
        MeasurementSet(pcrs={32: bytes(48)})
    with pytest.raises(TypeError):
        MeasurementSet(pcrs={0: "a" * 48})  # type: ignore[dict-item]
    measured = MeasurementSet(pcrs={8: bytes(48), 0: bytes(48)})
    assert list(measured.pcrs) == [0, 8]
    with pytest.raises(TypeError):
        measured.pcrs[1] = bytes(48)  # type: ignore[index]


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        parse_measurements(data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=100),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(_json_values, st.sampled_from(["Measurements", "PCR0", "HashAlgorithm", "EnclaveName"]))
def test_arbitrary_json_raises_only_malformed(value, key) -> None:
    for candidate in (value, {key: value}, [{key: value}], {"Measurements": {key: value}}):
        with contextlib.suppress(MalformedError):
            parse_measurements(json.dumps(candidate).encode())
