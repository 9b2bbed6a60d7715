"""Throwaway TLS material for serving the emulator (or a test server) over HTTPS.

Written here, on ``cryptography``'s X.509 builder, because the demo and the tests all
need the same thing: a private CA that lives for a day and one server certificate for a
few names, e.g. ``kms.us-east-1.amazonaws.com`` reached through the relays and
``127.0.0.1`` reached directly. **Development only**: the CA's key is discarded after
signing, the server key is written unencrypted (mode 0600).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevTls", "make_dev_tls"]


@dataclass(frozen=True)
class DevTls:
    """Paths of the files :func:`make_dev_tls` wrote.

    Attributes:
        ca: the CA certificate (PEM): give it to clients (``verify=``, ``ca_bundle``).
        certificate: the server certificate (PEM).
        key: the server's private key (PEM, unencrypted, mode 0600).
        hosts: the names and addresses the certificate is valid for.
    """

    ca: Path
    certificate: Path
    key: Path
    hosts: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca))


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_dev_tls(
    directory: str | Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    *,
    lifetime: timedelta = timedelta(days=1),
    ca_name: str = "attested development CA",
) -> DevTls:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory``.

    Args:
        directory: an existing directory.
        hosts: DNS names and IP addresses for the server certificate (at least one).
        lifetime: how long both certificates are valid (from 5 minutes ago).
        ca_name: the CA's common name.

    Raises:
        ValueError: no hosts.
        OSError: the files cannot be written.
    """
    if not hosts:
        raise ValueError("make_dev_tls needs at least one host name or address")
    directory = Path(directory)
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(minutes=5) + lifetime
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = DevTls(
        ca=directory / "ca.pem",
        certificate=directory / "server.pem",
        key=directory / "server.key",
        hosts=tuple(hosts),
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files.key.touch(mode=0o600)
    files.key.chmod(0o600)
    files.key.write_bytes(pem)
    return files
