"""policies/generated/ is exactly what the generator makes from policies/manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attested.cli import main
from attested.keypolicy import lint_policy, parse_policy_json

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MANIFEST = json.loads((POLICIES / "manifest.json").read_text())


def test_every_generated_file_is_in_the_manifest() -> None:
    listed = {entry["output"] for entry in MANIFEST}
    on_disk = {f"generated/{p.name}" for p in (POLICIES / "generated").iterdir()}
    assert listed == on_disk


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["output"])
def test_generated_policy_matches_byte_for_byte(entry, capsys, monkeypatch) -> None:
    monkeypatch.chdir(POLICIES)
    assert main(["keypolicy", "generate", *entry["args"]]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    expected = (POLICIES / entry["output"]).read_text()
    assert out == expected, f"regenerate with: python policies/regenerate.py ({entry['output']})"
    if "--format" not in entry["args"]:  # the others embed it: tests/keypolicy/test_iac.py
        assert lint_policy(parse_policy_json(expected.encode())) == ()
