"""A P-384 certificate hierarchy shaped like the AWS Nitro attestation PKI.

Real documents chain ``root -> regional -> zonal -> instance -> leaf`` with these
profiles (read off real documents, see ``tests/vectors/attestation``):

============  =========================  ==========  ===========================  ========
certificate   basicConstraints           pathLen     keyUsage                     lifetime
============  =========================  ==========  ===========================  ========
root          CA, critical               none        critical: DS, keyCertSign,   30 y
                                                     cRLSign
regional      CA, critical               2           same                         20 d 1 h
zonal         CA, critical               1           same                         ~6 d
instance      CA, critical               0           critical: keyCertSign        24 h
leaf          not CA, critical           -           DS + nonRepudiation          3 h
============  =========================  ==========  ===========================  ========

CAs carry subject and authority key identifiers; the leaf has neither (which is why
cryptography's default end-entity policy rejects real leaves). Everything here is
clearly labelled as simulated in its names.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

__all__ = [
    "CertifiedKey",
    "KeyUsageSpec",
    "NitroLikePki",
    "build_pki",
    "build_root",
    "issue_certificate",
    "new_key",
]

ROOT_LIFETIME = timedelta(days=365 * 30)
REGIONAL_LIFETIME = timedelta(days=20, hours=1)
ZONAL_LIFETIME = timedelta(days=6)
INSTANCE_LIFETIME = timedelta(hours=24)
LEAF_LIFETIME = timedelta(hours=3)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyUsageSpec:
    """Which key usage bits to set, and whether the extension is critical."""

    digital_signature: bool = False
    content_commitment: bool = False
    key_cert_sign: bool = False
    crl_sign: bool = False
    critical: bool = True

    def extension(self) -> x509.KeyUsage:
        """The extension value."""
        return x509.KeyUsage(
            digital_signature=self.digital_signature,
            content_commitment=self.content_commitment,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=self.key_cert_sign,
            crl_sign=self.crl_sign,
            encipher_only=False,
            decipher_only=False,
        )


CA_USAGE = KeyUsageSpec(digital_signature=True, key_cert_sign=True, crl_sign=True)
INSTANCE_USAGE = KeyUsageSpec(key_cert_sign=True)
LEAF_USAGE = KeyUsageSpec(digital_signature=True, content_commitment=True, critical=False)


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate and its private key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def der(self) -> bytes:
        """The certificate's DER."""
        return self.certificate.public_bytes(Encoding.DER)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-384 key."""
    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str, *, with_locality: bool = False) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    if with_locality:
        attrs += [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        ]
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "attested (simulated)"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Simulated Nitro"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    return x509.Name(attrs)


def issue_certificate(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: CertifiedKey | None,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None,
    key_usage: KeyUsageSpec | None,
    key_identifiers: bool = True,
    basic_constraints_critical: bool = True,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> CertifiedKey:
    """Issue one certificate; ``issuer=None`` makes it self-signed.

    Every profile detail is a parameter so that tests can build chains that break
    exactly one rule.
    """
    signer_key = key if issuer is None else issuer.private_key
    issuer_name = subject if issuer is None else issuer.certificate.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(15), "big") | 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length),
            critical=basic_constraints_critical,
        )
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage.extension(), critical=key_usage.critical)
    if key_identifiers:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
                critical=False,
            )
    for ext, critical in extra_extensions:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(signer_key, hash_algorithm or hashes.SHA384())
    return CertifiedKey(cert, key)


@dataclass(frozen=True, slots=True)
class NitroLikePki:
    """Root, regional, zonal and instance CAs; issues leaves like the NSM's."""

    root: CertifiedKey
    regional: CertifiedKey
    zonal: CertifiedKey
    instance: CertifiedKey
    instance_id: str
    region: str

    def cabundle(self) -> tuple[bytes, ...]:
        """DER certificates in document order: root first, instance CA last."""
        return (self.root.der, self.regional.der, self.zonal.der, self.instance.der)

    def not_after(self) -> datetime:
        """When the first CA certificate in the chain expires."""
        return min(
            c.certificate.not_valid_after_utc
            for c in (self.root, self.regional, self.zonal, self.instance)
        )

    def issue_leaf(
        self,
        *,
        enclave_id: str,
        not_before: datetime,
        lifetime: timedelta = LEAF_LIFETIME,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> CertifiedKey:
        """Issue a signing certificate for one enclave, valid ``lifetime`` from ``not_before``."""
        return issue_certificate(
            subject=_name(
                f"{self.instance_id}-{enclave_id}.{self.region}.simulated", with_locality=True
            ),
            key=key or new_key(),
            issuer=self.instance,
            not_before=not_before,
            not_after=not_before + lifetime,
            ca=False,
            path_length=None,
            key_usage=LEAF_USAGE,
            key_identifiers=False,
        )


def build_root(*, now: datetime) -> CertifiedKey:
    """A self-signed root shaped like AWS Nitro Enclaves Root-G1, valid from an hour before ``now``.

    Args:
        now: a time the root is valid at.
    """
    start = now - timedelta(hours=1)
    return issue_certificate(
        subject=_name("simulated.nitro-enclaves"),
        key=new_key(),
        issuer=None,
        not_before=start,
        not_after=start + ROOT_LIFETIME,
        ca=True,
        path_length=None,
        key_usage=CA_USAGE,
    )


def build_pki(
    *,
    now: datetime,
    instance_id: str = "i-0simulated000000",
    region: str = "sim-1",
    root: CertifiedKey | None = None,
) -> NitroLikePki:
    """Build a fresh Nitro-shaped hierarchy whose certificates are all valid at ``now``.

    Args:
        now: a time every certificate is valid at (CAs start an hour before it).
        instance_id: the simulated parent instance id, used in names.
        region: the simulated region, used in names.
        root: reuse an existing root instead of making one.
    """
    start = now - timedelta(hours=1)
    if root is None:
        root = build_root(now=now)
    tag = secrets.token_hex(8)
    regional = issue_certificate(
        subject=_name(f"{tag}.{region}.simulated.nitro-enclaves"),
        key=new_key(),
        issuer=root,
        not_before=start,
        not_after=start + REGIONAL_LIFETIME,
        ca=True,
        path_length=2,
        key_usage=CA_USAGE,
    )
    zonal = issue_certificate(
        subject=_name(f"{secrets.token_hex(8)}.zonal.{region}.simulated.nitro-enclaves"),
        key=new_key(),
        issuer=regional,
        not_before=start,
        not_after=start + ZONAL_LIFETIME,
        ca=True,
        path_length=1,
        key_usage=CA_USAGE,
    )
    instance = issue_certificate(
        subject=_name(f"{instance_id}.{region}.simulated.nitro-enclaves", with_locality=True),
        key=new_key(),
        issuer=zonal,
        not_before=start,
        not_after=start + INSTANCE_LIFETIME,
        ca=True,
        path_length=0,
        key_usage=INSTANCE_USAGE,
    )
    return NitroLikePki(root, regional, zonal, instance, instance_id, region)
