"""NitroTPM PCR7 as nitro-tpm-pcr-compute computes it, checked against real documents."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from attested import Profile, parse_attestation
from attested.pcr import NITROTPM_PCR7_SECURE_BOOT_OFF, ZERO, extend, nitrotpm_pcr7
from tests.kit import VECTORS

TPM = sorted((VECTORS / "attestation").glob("real_nitrotpm_*.cbor"))


@pytest.mark.parametrize("path", TPM, ids=lambda p: p.stem)
def test_secure_boot_off_pcr7_is_what_real_instances_report(path: Path) -> None:
    doc = parse_attestation(path.read_bytes(), profile=Profile.NITROTPM)
    assert doc.pcrs[7] == NITROTPM_PCR7_SECURE_BOOT_OFF
    assert NITROTPM_PCR7_SECURE_BOOT_OFF.hex().startswith("98441c7f7625d100")


def test_each_variable_and_each_authority_changes_pcr7() -> None:
    pk = b"platform key list"
    on = nitrotpm_pcr7(pk=pk)
    values = {
        NITROTPM_PCR7_SECURE_BOOT_OFF,
        on,
        nitrotpm_pcr7(pk=pk, kek=b"k"),
        nitrotpm_pcr7(pk=pk, db=b"d"),
        nitrotpm_pcr7(pk=pk, dbx=b"x"),
        nitrotpm_pcr7(pk=pk, authorities=[b"owner+cert"]),
        nitrotpm_pcr7(pk=pk, authorities=[b"owner+cert", b"other"]),
    }
    assert len(values) == 7
    assert all(len(v) == 48 for v in values)


def test_the_events_are_the_tcg_uefi_variable_events() -> None:
    # Independent spelling of one event: GUID (little-endian fields), two UINT64 lengths,
    # the UTF-16LE name, the data.
    guid_le = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    secure_boot = hashlib.sha384(
        guid_le
        + (10).to_bytes(8, "little")
        + (1).to_bytes(8, "little")
        + "SecureBoot".encode("utf-16-le")
        + b"\x00"
    ).digest()
    pcr = extend(ZERO, secure_boot)
    for name, guid in (("PK", guid_le), ("KEK", guid_le)):
        pcr = extend(
            pcr,
            hashlib.sha384(
                guid + len(name).to_bytes(8, "little") + bytes(8) + name.encode("utf-16-le")
            ).digest(),
        )
    db_guid = bytes.fromhex("cbb219d73a3d9645a3bcdad00e67656f")
    for name in ("db", "dbx"):
        pcr = extend(
            pcr,
            hashlib.sha384(
                db_guid + len(name).to_bytes(8, "little") + bytes(8) + name.encode("utf-16-le")
            ).digest(),
        )
    assert extend(pcr, hashlib.sha384(bytes(4)).digest()) == NITROTPM_PCR7_SECURE_BOOT_OFF


def test_authorities_need_secure_boot() -> None:
    with pytest.raises(ValueError, match="Secure Boot"):
        nitrotpm_pcr7(authorities=[b"x"])
