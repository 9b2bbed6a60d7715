"""The EIF reader against golden values, hand-built signed images and broken variants."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attested.eif import EifImage, EifLimits, EifSignature, SectionType, read_eif
from attested.eif._build import Zeros, write_eif
from attested.eif._signature import encode_signature_section
from attested.errors import MalformedError
from tests.eif.images import (
    CMDLINE,
    KERNEL,
    METADATA,
    METADATA_JSON,
    RAMDISK,
    SIGNATURE,
    Image,
    Signer,
    assemble,
    build_image,
    cose_sign1,
    make_signer,
    measure,
    pcr_info,
    signature_section,
)
from tests.kit import VECTORS

SYNTHETIC = VECTORS / "eif" / "synthetic_eif_unsigned.eif"


def _sidecar() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(SYNTHETIC.with_suffix(".json").read_text())
    return result


@pytest.mark.parametrize("parallel", [False, True])
def test_synthetic_vector_matches_its_sidecar(parallel) -> None:
    expected = _sidecar()
    with SYNTHETIC.open("rb") as handle:
        image = read_eif(handle, parallel=parallel)
    assert {f"PCR{i}": v.hex() for i, v in image.pcrs.items()} == expected["expected_measurements"]
    assert image.header.version == expected["eif_version"]
    assert image.header.num_sections == expected["num_sections"]
    assert image.size == expected["file_size"]
    assert f"{image.header.crc32:08x}" == expected["crc32_header_field"]
    assert image.crc_ok
    assert image.intact
    assert not image.inconsistencies
    assert image.cmdline.decode() == expected["cmdline"]
    assert [(s.type.label, s.offset, s.size) for s in image.sections] == [
        (s["type"], s["header_offset"], s["data_size"]) for s in expected["sections"]
    ]
    subset = expected["expected_describe_eif_subset"]
    assert image.metadata is not None
    assert image.metadata.image_name == subset["ImageName"]
    assert image.metadata.build_time == subset["Metadata"]["BuildTime"]
    assert image.metadata.docker_info is None
    assert image.signature is None
    assert image.pcr8 is None


def test_unsigned_image_pcrs_and_metadata() -> None:
    built = build_image()
    image = read_eif(built.stream())
    assert (image.pcr0, image.pcr1, image.pcr2) == (built.pcr0, built.pcr1, built.pcr2)
    assert set(image.pcrs) == {0, 1, 2}
    assert image.intact
    assert image.metadata is not None
    assert image.metadata.custom == {"team": "payments"}
    assert image.header.arch == "x86_64"


def test_single_ramdisk_gives_pcr2_of_nothing() -> None:
    built = build_image(ramdisks=(b"only bootstrap",))
    image = read_eif(built.stream())
    assert image.pcr2 == measure(b"")
    assert image.pcr1 == image.pcr0


@pytest.mark.parametrize(
    "curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=["ES256", "ES384", "ES512"]
)
def test_signed_image_gives_pcr8_and_a_valid_signature(curve) -> None:
    signer = make_signer(curve)
    built = build_image(signer=signer)
    image = read_eif(built.stream())
    assert image.pcr0 == built.pcr0  # the signature section is not measured
    assert image.pcr8 == signer.pcr8
    assert image.pcrs[8] == signer.pcr8
    assert _sig(image).valid
    assert _sig(image).problem is None
    assert _sig(image).signed_pcr0 == built.pcr0
    assert image.intact


def test_library_encoder_writes_the_same_shape_as_the_documented_format() -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    ours = encode_signature_section(
        pcr0=built.pcr0, certificate_pem=signer.pem, private_key=signer.key
    )
    theirs = built.sections[-1][1]
    a, b = cbor2.loads(ours), cbor2.loads(theirs)
    assert a[0]["signing_certificate"] == b[0]["signing_certificate"]
    cose_a, cose_b = cbor2.loads(bytes(a[0]["signature"])), cbor2.loads(bytes(b[0]["signature"]))
    assert cose_a[:3] == cose_b[:3]  # same protected header, unprotected map and payload
    sections = [*built.sections[:-1], (SIGNATURE, ours)]
    assert _sig(read_eif(io.BytesIO(assemble(sections)))).valid


def _sig(image: EifImage) -> EifSignature:
    assert image.signature is not None
    return image.signature


def _signed_with(signature: bytes, *, signer=None) -> tuple[EifImage, Image, Signer]:
    signer = signer or make_signer()
    built = build_image(signer=signer)
    sections = [*built.sections[:-1], (SIGNATURE, signature)]
    return read_eif(io.BytesIO(assemble(sections))), built, signer


def test_signature_by_another_key_does_not_verify() -> None:
    signer, other = make_signer(), make_signer()
    built = build_image(signer=signer)
    cose = cose_sign1(pcr_info(built.pcr0), other.key)
    image, _, _ = _signed_with(signature_section(signer.pem, cose), signer=signer)
    assert image.signature is not None
    assert not _sig(image).valid
    assert "does not verify" in str(_sig(image).problem)
    assert image.pcr8 == signer.pcr8
    assert not image.intact


def test_signature_over_another_pcr0_is_reported() -> None:
    signer = make_signer()
    wrong = measure(b"another image")
    cose = cose_sign1(pcr_info(wrong), signer.key)
    image, _, _ = _signed_with(signature_section(signer.pem, cose), signer=signer)
    assert not _sig(image).valid
    assert _sig(image).signed_pcr0 == wrong
    assert "different PCR0" in str(_sig(image).problem)


@pytest.mark.parametrize(
    "payload",
    [
        lambda pcr0: pcr_info(pcr0, index=1),
        lambda pcr0: cbor2.dumps({"register_index": 0, "register_value": pcr0}),  # bstr
        lambda pcr0: cbor2.dumps({"register_value": list(pcr0), "register_index": 0}),
        lambda pcr0: b"\xff",
    ],
    ids=["index-1", "bstr-value", "key-order", "not-cbor"],
)
def test_payload_must_be_exactly_pcrinfo_of_pcr0(payload) -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    cose = cose_sign1(payload(built.pcr0), signer.key)
    image, _, _ = _signed_with(signature_section(signer.pem, cose), signer=signer)
    assert not _sig(image).valid
    assert "PcrInfo" in str(_sig(image).problem) or "different" in str(_sig(image).problem)


def test_algorithm_must_match_the_certificate_key() -> None:
    signer = make_signer(ec.SECP384R1())
    built = build_image(signer=signer)
    cose = cose_sign1(pcr_info(built.pcr0), signer.key, alg=-7)  # claims ES256
    image, _, _ = _signed_with(signature_section(signer.pem, cose), signer=signer)
    assert not _sig(image).valid
    assert "does not match ES256" in str(_sig(image).problem)


def test_tampered_ramdisk_fails_crc_and_signature() -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    data = bytearray(built.data)
    data[-len(built.sections[-1][1]) - 20] ^= 0x01  # inside the last ramdisk
    image = read_eif(io.BytesIO(bytes(data)))
    assert not image.crc_ok
    assert image.pcr0 != built.pcr0
    assert image.pcr1 == built.pcr1
    assert not _sig(image).valid
    assert "different PCR0" in str(_sig(image).problem)


def test_tampered_ramdisk_with_recomputed_crc_still_fails_the_signature() -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    sections = list(built.sections)
    index = max(i for i, (kind, _) in enumerate(sections) if kind == RAMDISK)
    sections[index] = (RAMDISK, sections[index][1] + b"backdoor")
    image = read_eif(io.BytesIO(assemble(sections)))
    assert image.crc_ok
    assert image.pcr2 != built.pcr2
    assert not _sig(image).valid
    assert not image.intact


def test_swapped_certificate_changes_pcr8_and_fails() -> None:
    signer, other = make_signer(), make_signer()
    built = build_image(signer=signer)
    cose = cose_sign1(pcr_info(built.pcr0), signer.key)
    image, _, _ = _signed_with(signature_section(other.pem, cose), signer=signer)
    assert image.pcr8 == other.pcr8
    assert not _sig(image).valid


def test_only_the_first_signature_entry_counts() -> None:
    signer, other = make_signer(), make_signer()
    built = build_image(signer=signer)
    good = cose_sign1(pcr_info(built.pcr0), signer.key)
    section = cbor2.dumps(
        [
            {"signing_certificate": list(signer.pem), "signature": list(good)},
            {"signing_certificate": list(other.pem), "signature": list(b"junk")},
        ]
    )
    image, _, _ = _signed_with(section, signer=signer)
    assert _sig(image).valid
    assert _sig(image).entries == 2
    assert image.pcr8 == signer.pcr8


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (cbor2.dumps([]), "non-empty"),
        (cbor2.dumps({"signing_certificate": [1], "signature": [2]}), "non-empty CBOR array"),
        (cbor2.dumps([{"signing_certificate": b"pem", "signature": [1]}]), "array of bytes"),
        (cbor2.dumps([{"signing_certificate": [256], "signature": [1]}]), "0..255"),
        (cbor2.dumps([{"signing_certificate": [1]}]), "signing_certificate and signature"),
        (cbor2.dumps([{"signing_certificate": list(b"no pem"), "signature": [1]}]), "PEM"),
        (b"\x9f\xff\x00", "trailing bytes"),
        (b"\x9f\x01", "not valid CBOR"),
    ],
)
def test_malformed_signature_sections(section, message) -> None:
    built = build_image()
    sections = [*built.sections, (SIGNATURE, section)]
    with pytest.raises(MalformedError, match=message):
        read_eif(io.BytesIO(assemble(sections)))


def test_malformed_cose_in_signature_section() -> None:
    signer = make_signer()
    section = signature_section(signer.pem, cbor2.dumps([b"", {}, b""]))
    built = build_image()
    with pytest.raises(MalformedError, match="COSE_Sign1"):
        read_eif(io.BytesIO(assemble([*built.sections, (SIGNATURE, section)])))


# --- header and section table ------------------------------------------------------------


def test_offset_table_disagreement_is_reported_not_fatal() -> None:
    built = build_image()
    offsets = [548, 9999, 0, 0, 0]
    data = assemble(built.sections, offsets=offsets)
    image = read_eif(io.BytesIO(data))
    assert image.pcr0 == built.pcr0  # PCRs come from the walk, as describe-eif does
    assert image.crc_ok
    assert not image.intact
    assert any("9999" in problem for problem in image.inconsistencies)
    assert any("offset 0" in problem for problem in image.inconsistencies)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"num_sections": 3}, "declares 3 sections, the file holds 5"),
        ({"sizes": [1, 2, 3, 4, 5]}, "says 1 bytes"),
        ({"reserved": 7}, "offset 24"),
        ({"section_flags": {1: 3}}, "reserved flags 0x0003"),
    ],
)
def test_table_and_reserved_field_problems(change, needle) -> None:
    built = build_image()
    image = read_eif(io.BytesIO(assemble(built.sections, **change)))
    assert any(needle in problem for problem in image.inconsistencies), image.inconsistencies
    assert not image.intact


def test_unused_table_entries_must_be_zero() -> None:
    built = build_image()
    image = read_eif(io.BytesIO(assemble(built.sections)))
    offsets = [s.offset for s in image.sections] + [123]
    image = read_eif(io.BytesIO(assemble(built.sections, offsets=offsets)))
    assert image.inconsistencies == (
        "section table entry 5 (at offsets 68 and 324) is unused but not zero",
    )


def test_crc_mismatch_is_reported() -> None:
    built = build_image()
    image = read_eif(io.BytesIO(assemble(built.sections, fix_crc=False)))
    assert not image.crc_ok
    assert image.header.crc32 == 0x12345678
    assert image.pcr0 == built.pcr0


def test_version_3_signed_without_metadata_and_aarch64() -> None:
    signer = make_signer()
    built = build_image(metadata=None, signer=signer, version=3)
    image = read_eif(io.BytesIO(assemble(built.sections, version=3, flags=1)))
    assert image.header.arch == "aarch64"
    assert image.metadata is None
    assert _sig(image).valid
    assert image.intact


def _sections() -> list[tuple[int, bytes]]:
    return list(build_image().sections)


_K, _C, _R = (KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 at offset 0"),
        (b".eif" + bytes(100), "only 104"),
        (b"EIF." + bytes(544), "magic at offset 0"),
        (assemble(_sections(), version=5), "version 5 at offset 4"),
        (assemble(_sections(), version=1), "version 1"),
        (assemble(_sections(), flags=2), "reserved bits"),
        (assemble(_sections(), num_sections=33), "declares 33 sections"),
        (assemble(_sections(), num_sections=0), "declares 0 sections"),
        (assemble(_sections()) + b"\x00\x03", "truncated EIF section header at offset"),
        (assemble(_sections())[:-5], "declares 810 bytes of data, but the file ends at offset"),
        (assemble([*_sections(), (0, b"")]), "unknown EIF section type 0 at offset"),
        (assemble([*_sections(), (6, b"")]), "unknown EIF section type 6"),
        (assemble([*_sections(), (KERNEL, b"k")]), "second kernel section at offset"),
        (assemble([*_sections(), (CMDLINE, b"c")]), "second cmdline"),
        (assemble([*_sections(), (METADATA, METADATA_JSON)]), "second metadata"),
        (assemble([(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, METADATA_JSON)]), "no ramdisk"),
        (assemble([(KERNEL, b"k"), (RAMDISK, b"r"), (METADATA, METADATA_JSON)]), "no cmdline"),
        (assemble([(CMDLINE, b"c"), (RAMDISK, b"r"), (METADATA, METADATA_JSON)]), "no kernel"),
        (assemble([(KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r")]), "mandatory in version 4"),
        (
            assemble([_K, _C, _R, (SIGNATURE, b"")], version=2),
            "signature section at offset 587 in a version 2 EIF",
        ),
        (
            assemble([_K, _C, _R, (METADATA, b"{}")], version=3),
            "introduced in version 4",
        ),
        (
            assemble([(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, b"[1,"), (RAMDISK, b"r")]),
            r"not valid JSON.*offset 586",
        ),
        (
            assemble([_K, _C, (METADATA, b'{"a":1,"a":2}'), (RAMDISK, b"")]),
            "duplicate key",
        ),
        (
            assemble([(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, b"{}"), (RAMDISK, b"r")]),
            "no BuildMetadata",
        ),
        (
            assemble([(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, b"[]"), (RAMDISK, b"r")]),
            "must be a JSON object",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_files_name_the_problem(data, message) -> None:
    with pytest.raises(MalformedError, match=message):
        read_eif(io.BytesIO(data))


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (EifLimits(max_cmdline_size=10), "cmdline section at offset 3560 is 49 bytes"),
        (EifLimits(max_metadata_size=100), "metadata section at offset 3621 is 265 bytes"),
        (EifLimits(max_sections=3), "more than 3 EIF sections: another starts at offset 3898"),
    ],
)
def test_size_caps(limits, message) -> None:
    with pytest.raises(MalformedError, match=message):
        read_eif(build_image().stream(), limits=limits)


def test_signature_cap() -> None:
    built = build_image(signer=make_signer())
    with pytest.raises(MalformedError, match="signature section at offset"):
        read_eif(built.stream(), limits=EifLimits(max_signature_size=100))


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="cannot exceed 32"):
        EifLimits(max_sections=33)
    with pytest.raises(ValueError, match="positive"):
        EifLimits(max_metadata_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        read_eif(build_image().stream(), chunk_size=10)


class _Trickle:
    """A pipe-like stream: no readinto, at most 7 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 7) if size >= 0 else 7)


def test_streams_without_readinto_and_with_short_reads() -> None:
    signer = make_signer()
    built = build_image(signer=signer)
    image = read_eif(_Trickle(built.data), chunk_size=4096)
    assert (image.pcr0, image.pcr1, image.pcr2, image.pcr8) == (
        built.pcr0,
        built.pcr1,
        built.pcr2,
        signer.pcr8,
    )
    assert image.intact


@pytest.mark.parametrize("parallel", [False, True])
def test_many_chunks_unusual_order_and_the_pcr1_fork(parallel) -> None:
    # Ramdisks before the cmdline: PCRs follow file order, as the upstream reader does.
    kernel, cmdline = bytes(range(256)) * 40, b"console=ttyS0"
    rd0, rd1, rd2 = b"a" * 9000, b"b" * 20000, b"c" * 5000
    sections = [
        (KERNEL, kernel),
        (RAMDISK, rd0),
        (RAMDISK, rd1),
        (CMDLINE, cmdline),
        (METADATA, METADATA_JSON),
        (RAMDISK, rd2),
    ]
    image = read_eif(io.BytesIO(assemble(sections)), chunk_size=4096, parallel=parallel)
    assert image.pcr0 == measure(kernel + rd0 + rd1 + cmdline + rd2)
    assert image.pcr1 == measure(kernel + rd0 + cmdline)
    assert image.pcr2 == measure(rd1 + rd2)


def test_writer_round_trips_with_a_sparse_section(tmp_path: Path) -> None:
    path = tmp_path / "sparse.eif"
    with path.open("w+b") as handle:
        write_eif(
            handle,
            [
                (SectionType.KERNEL, b"kernel"),
                (SectionType.CMDLINE, b"cmd"),
                (SectionType.METADATA, METADATA_JSON),
                (SectionType.RAMDISK, b"boot"),
                (SectionType.RAMDISK, Zeros(3 << 20)),
            ],
        )
    with path.open("rb") as handle:
        image = read_eif(handle)
    assert image.intact
    assert image.pcr2 == measure(bytes(3 << 20))
    assert image.size == path.stat().st_size


def _helpers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "attested-eif-hash"]


def test_parallel_mode_stops_its_thread_on_success_and_on_errors() -> None:
    built = build_image()
    read_eif(built.stream(), parallel=True, chunk_size=4096)
    assert _helpers() == []
    truncated = built.data[:-100]
    with pytest.raises(MalformedError, match="the file ends"):
        read_eif(io.BytesIO(truncated), parallel=True, chunk_size=4096)
    assert _helpers() == []
