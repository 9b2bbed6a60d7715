"""Build EIFs and their expected PCRs for tests, independently of the reader.

Expected values are computed here with hashlib and cbor2 directly from the layout and
algorithms in ``shared/docs/eif-pcrs.md``, not with ``attested.pcr`` or the reader, so
the tests compare two implementations.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

KERNEL, CMDLINE, RAMDISK, SIGNATURE, METADATA = 1, 2, 3, 4, 5
ZEROS48 = bytes(48)

METADATA_JSON = json.dumps(
    {
        "ImageName": "test-app",
        "ImageVersion": "1.2.3",
        "BuildMetadata": {
            "BuildTime": "2026-03-01T12:00:00+00:00",
            "BuildTool": "tests",
            "BuildToolVersion": "0",
            "OperatingSystem": "Linux",
            "KernelVersion": "6.1",
        },
        "DockerInfo": {"Id": "sha256:00"},
        "CustomMetadata": {"team": "payments"},
    },
    separators=(",", ":"),
).encode()


def measure(content: bytes) -> bytes:
    return hashlib.sha384(ZEROS48 + hashlib.sha384(content).digest()).digest()


_COSE_ALG = {256: -7, 384: -35, 521: -36}
_COORD = {256: 32, 384: 48, 521: 66}
_HASH: dict[int, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    256: hashes.SHA256,
    384: hashes.SHA384,
    521: hashes.SHA512,
}


@dataclass
class Signer:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)

    @property
    def pcr8(self) -> bytes:
        return measure(self.certificate.public_bytes(Encoding.DER))


def make_signer(curve: ec.EllipticCurve | None = None, name: str = "eif signer") -> Signer:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "attested tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    digest = _HASH[key.curve.key_size]()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, digest)
    )
    return Signer(key=key, certificate=certificate)


def pcr_info(pcr0: bytes, index: int = 0) -> bytes:
    """serde_cbor of PcrInfo: a map with text keys; register_value an array of uints."""
    return cbor2.dumps({"register_index": index, "register_value": list(pcr0)})


def cose_sign1(payload: bytes, key: ec.EllipticCurvePrivateKey, *, alg: int | None = None) -> bytes:
    size = key.curve.key_size
    protected = cbor2.dumps({1: _COSE_ALG[size] if alg is None else alg})
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(_HASH[size]())))
    coord = _COORD[size]
    signature = r.to_bytes(coord, "big") + s.to_bytes(coord, "big")
    return cbor2.dumps([protected, {}, payload, signature])


def signature_section(certificate_pem: bytes, cose: bytes) -> bytes:
    """``Vec<PcrSignature>``: byte vectors are CBOR arrays of small unsigned integers."""
    return cbor2.dumps([{"signing_certificate": list(certificate_pem), "signature": list(cose)}])


def assemble(
    sections: list[tuple[int, bytes]],
    *,
    version: int = 4,
    flags: int = 0,
    num_sections: int | None = None,
    offsets: list[int] | None = None,
    sizes: list[int] | None = None,
    reserved: int = 0,
    section_flags: dict[int, int] | None = None,
    fix_crc: bool = True,
) -> bytes:
    """The bytes of an EIF, with every header field overridable for negative tests."""
    real_offsets, position = [], 548
    for _, data in sections:
        real_offsets.append(position)
        position += 12 + len(data)
    offsets = real_offsets if offsets is None else offsets
    sizes = [len(d) for _, d in sections] if sizes is None else sizes
    table_offsets = (offsets + [0] * 32)[:32]
    table_sizes = (sizes + [0] * 32)[:32]
    count = len(sections) if num_sections is None else num_sections
    head = struct.pack(">4sHHQQHH", b".eif", version, flags, 1 << 30, 2, reserved, count)
    head += struct.pack(">32Q", *table_offsets) + struct.pack(">32Q", *table_sizes)
    head += struct.pack(">I", 0)
    body = b"".join(
        struct.pack(">HHQ", kind, (section_flags or {}).get(i, 0), len(data)) + data
        for i, (kind, data) in enumerate(sections)
    )
    crc = zlib.crc32(head + body) if fix_crc else 0x12345678
    return head + struct.pack(">I", crc) + body


@dataclass
class Image:
    """An EIF and what the reader must compute for it."""

    data: bytes
    pcr0: bytes
    pcr1: bytes
    pcr2: bytes
    pcr8: bytes | None
    sections: list[tuple[int, bytes]]

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def build_image(
    *,
    kernel: bytes = b"K" * 3000,
    cmdline: bytes = b"reboot=k panic=30 pci=off nomodules console=ttyS0",
    ramdisks: tuple[bytes, ...] = (b"bootstrap ramdisk" * 50, b"app layer" * 90),
    metadata: bytes | None = METADATA_JSON,
    signer: Signer | None = None,
    version: int = 4,
) -> Image:
    """An image in nitro-cli's section order: kernel, cmdline, metadata, ramdisks, signature."""
    pcr0 = measure(kernel + cmdline + b"".join(ramdisks))
    pcr1 = measure(kernel + cmdline + ramdisks[0])
    pcr2 = measure(b"".join(ramdisks[1:]))
    sections = [(KERNEL, kernel), (CMDLINE, cmdline)]
    if metadata is not None:
        sections.append((METADATA, metadata))
    sections += [(RAMDISK, r) for r in ramdisks]
    if signer is not None:
        cose = cose_sign1(pcr_info(pcr0), signer.key)
        sections.append((SIGNATURE, signature_section(signer.pem, cose)))
    return Image(
        data=assemble(sections, version=version),
        pcr0=pcr0,
        pcr1=pcr1,
        pcr2=pcr2,
        pcr8=None if signer is None else signer.pcr8,
        sections=sections,
    )
