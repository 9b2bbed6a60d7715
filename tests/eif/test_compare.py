"""``attested eif compare`` and ``compare_eifs``: which PCR and which section moved, and why."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.cli import main
from attested.eif import compare_eifs, read_eif, read_sections
from attested.errors import MalformedError
from tests.eif.images import METADATA_JSON, Image, assemble, build_image, make_signer

SIGNER = make_signer(name="release")
OTHER_SIGNER = make_signer(name="someone else")


def _write(tmp_path: Path, name: str, image: Image | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(image if isinstance(image, bytes) else image.data)
    return str(path)


def _compare(tmp_path: Path, capsys, a: Image | bytes, b: Image | bytes, *extra: str):
    status = main(
        ["eif", "compare", _write(tmp_path, "a.eif", a), _write(tmp_path, "b.eif", b), *extra]
    )
    out, err = capsys.readouterr()
    return status, out, err


def _json(tmp_path: Path, capsys, a: Image | bytes, b: Image | bytes, *extra: str):
    status, out, err = _compare(tmp_path, capsys, a, b, "--json", *extra)
    assert err == ""
    return status, json.loads(out)


def _differ(report: dict[str, Any]) -> dict[str, bool]:
    return {name: not value["Equal"] for name, value in report["PCRs"].items()}


def _sections(report: dict[str, Any]) -> dict[str, bool]:
    return {s["Section"]: s["Equal"] for s in report["Sections"]}


def test_application_ramdisk_changes_pcr0_and_pcr2_not_pcr1(tmp_path: Path, capsys) -> None:
    a = build_image()
    b = build_image(ramdisks=(b"bootstrap ramdisk" * 50, b"app layer, version 2" * 90))
    status, report = _json(tmp_path, capsys, a, b)
    assert status == 1
    assert _differ(report) == {"PCR0": True, "PCR1": False, "PCR2": True, "PCR8": False}
    assert report["PCRs"]["PCR0"] == {"A": a.pcr0.hex(), "B": b.pcr0.hex(), "Equal": False}
    assert report["PCRs"]["PCR8"] == {"A": None, "B": None, "Equal": True}
    assert _sections(report) == {
        "kernel": True,
        "cmdline": True,
        "ramdisk 1": True,
        "ramdisk 2": False,
        "metadata": True,
    }
    (ramdisk,) = [s for s in report["Sections"] if not s["Equal"]]
    assert ramdisk["MeasuredIn"] == ["PCR0", "PCR2"]
    assert "application ramdisk" in ramdisk["Meaning"]
    assert report["DifferingPCRs"] == ["PCR0", "PCR2"]
    assert report["Equal"] is False
    status, out, _ = _compare(tmp_path, capsys, a, b)
    assert status == 1
    assert out.splitlines()[-1] == (
        "DIFFERENT: PCR0, PCR2 differ; a key policy pinning A's values refuses B"
    )
    assert "PCR1  equal" in out


@pytest.mark.parametrize(
    ("change", "section"),
    [({"kernel": b"another kernel" * 200}, "kernel"), ({"cmdline": b"console=ttyS1"}, "cmdline")],
)
def test_kernel_and_cmdline_change_pcr0_and_pcr1(tmp_path: Path, capsys, change, section) -> None:
    status, report = _json(tmp_path, capsys, build_image(), build_image(**change))
    assert status == 1
    assert _differ(report) == {"PCR0": True, "PCR1": True, "PCR2": False, "PCR8": False}
    assert [name for name, equal in _sections(report).items() if not equal] == [section]


def test_bootstrap_ramdisk_changes_pcr0_and_pcr1(tmp_path: Path, capsys) -> None:
    b = build_image(ramdisks=(b"newer bootstrap" * 50, b"app layer" * 90))
    status, report = _json(tmp_path, capsys, build_image(), b)
    assert status == 1
    assert _differ(report) == {"PCR0": True, "PCR1": True, "PCR2": False, "PCR8": False}
    (moved,) = [s for s in report["Sections"] if not s["Equal"]]
    assert moved["Section"] == "ramdisk 1"
    assert moved["MeasuredIn"] == ["PCR0", "PCR1"]


def test_another_signer_changes_only_pcr8(tmp_path: Path, capsys) -> None:
    a, b = build_image(signer=SIGNER), build_image(signer=OTHER_SIGNER)
    status, report = _json(tmp_path, capsys, a, b)
    assert status == 0  # PCR8 is not compared unless asked for
    assert _differ(report) == {"PCR0": False, "PCR1": False, "PCR2": False, "PCR8": True}
    assert [n for n, equal in _sections(report).items() if not equal] == ["signature"]
    assert report["Equal"] is True
    status, report = _json(tmp_path, capsys, a, b, "--pcrs", "0,1,2,8")
    assert status == 1
    assert report["Equal"] is False
    status, out, _ = _compare(tmp_path, capsys, a, b)
    assert status == 0
    assert (
        out.splitlines()[-1]
        == "SAME MEASUREMENTS: PCR0, PCR1, PCR2 are equal (PCR8 differs, not compared)"
    )


def test_a_new_signature_by_the_same_certificate_keeps_pcr8(tmp_path: Path, capsys) -> None:
    # ECDSA signatures are randomised: signing the same image twice gives other bytes.
    a, b = build_image(signer=SIGNER), build_image(signer=SIGNER)
    assert a.data != b.data
    status, report = _json(tmp_path, capsys, a, b, "--pcrs", "0,1,2,8")
    assert status == 0
    assert not any(_differ(report).values())
    (signature,) = [s for s in report["Sections"] if not s["Equal"]]
    assert signature["Section"] == "signature"
    assert "same certificate leaves PCR8 equal" in signature["Meaning"]


def test_signed_against_unsigned(tmp_path: Path, capsys) -> None:
    status, report = _json(tmp_path, capsys, build_image(), build_image(signer=SIGNER))
    assert status == 0
    assert report["PCRs"]["PCR8"]["A"] is None
    assert report["PCRs"]["PCR8"]["B"] == SIGNER.pcr8.hex()
    (signature,) = [s for s in report["Sections"] if s["Section"] == "signature"]
    assert signature["A"] is None
    assert signature["Meaning"].startswith("only the second image has it")


def test_metadata_only_changes_no_pcr(tmp_path: Path, capsys) -> None:
    rebuilt = METADATA_JSON.replace(b"2026-03-01T12:00:00", b"2026-04-02T08:30:00")
    status, report = _json(tmp_path, capsys, build_image(), build_image(metadata=rebuilt))
    assert status == 0
    assert not any(_differ(report).values())
    assert [n for n, equal in _sections(report).items() if not equal] == ["metadata"]
    assert report["MetadataDifferences"] == ["BuildMetadata.BuildTime"]
    status, out, _ = _compare(tmp_path, capsys, build_image(), build_image(metadata=rebuilt))
    assert "metadata is not measured: no PCR changes" in out
    assert out.splitlines()[-1] == "SAME MEASUREMENTS: PCR0, PCR1, PCR2 are equal"


def test_an_extra_application_ramdisk(tmp_path: Path, capsys) -> None:
    two = build_image()
    three = build_image(ramdisks=(b"bootstrap ramdisk" * 50, b"app layer" * 90, b"more" * 10))
    status, report = _json(tmp_path, capsys, two, three)
    assert status == 1
    assert _differ(report) == {"PCR0": True, "PCR1": False, "PCR2": True, "PCR8": False}
    extra = report["Sections"][-2]
    assert (extra["Section"], extra["A"], extra["Equal"]) == ("ramdisk 3", None, False)


def test_identical_images(tmp_path: Path, capsys) -> None:
    status, out, err = _compare(tmp_path, capsys, build_image(), build_image())
    assert (status, err) == (0, "")
    assert "DIFFERS" not in out


def test_failed_checks_fail_the_comparison(tmp_path: Path, capsys) -> None:
    good = build_image()
    broken = assemble(good.sections, fix_crc=False)
    status, report = _json(tmp_path, capsys, good, broken)
    assert status == 1
    assert report["CheckProblems"] == {"A": [], "B": ["CRC mismatch"]}
    assert not any(_differ(report).values())


def test_input_errors(tmp_path: Path, capsys) -> None:
    status, out, err = _compare(tmp_path, capsys, build_image(), b".eif garbage")
    assert status == 2
    assert out == ""
    assert err.startswith("attested eif compare: B ")
    assert "not a well-formed EIF" in err
    assert err.count("\n") == 1
    status = main(["eif", "compare", "/nonexistent/a.eif", "/nonexistent/b.eif"])
    _, err = capsys.readouterr()
    assert status == 3
    assert "cannot read EIF" in err
    status = main(["eif", "compare", "a.eif", "b.eif", "--pcrs", "3"])
    _, err = capsys.readouterr()
    assert status == 2
    assert "PCR0, 1, 2 and 8 only" in err


def test_an_image_that_changed_between_reads_is_refused() -> None:
    a, b = build_image(), build_image(kernel=b"k" * 10)
    image = read_eif(a.stream())
    with pytest.raises(MalformedError, match="changed between its two reads"):
        compare_eifs(image, read_sections(b.stream()), image, read_sections(a.stream()))


def test_read_sections_agrees_with_the_reader() -> None:
    image = build_image(signer=SIGNER)
    sections = read_sections(image.stream(), chunk_size=4096)
    assert [(s.header.type, s.ordinal) for s in sections] == [
        (1, 0),
        (2, 0),
        (5, 0),
        (3, 0),
        (3, 1),
        (4, 0),
    ]
    assert [s.header for s in sections] == list(read_eif(image.stream()).sections)


_VALID = build_image(kernel=b"K" * 300, ramdisks=(b"boot" * 20, b"app" * 30)).data


@settings(max_examples=300)
@given(st.binary(max_size=1024))
def test_read_sections_raises_only_malformed_error(tail: bytes) -> None:
    for data in (tail, _VALID[:548] + tail, _VALID[: len(tail)]):
        try:
            sections = read_sections(io.BytesIO(data))
        except MalformedError:
            continue
        assert sum(12 + s.header.size for s in sections) + 548 == len(data)
