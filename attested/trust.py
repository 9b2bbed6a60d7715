"""Trust roots for attestation documents.

:meth:`TrustRoot.aws_nitro` is the AWS Nitro Enclaves Root-G1, shipped with the package
and checked against its pinned SHA-256 fingerprint every time it is loaded.
:meth:`TrustRoot.from_pem` takes any other root, for example the root of a simulated
NSM; documents from real enclaves will not verify against it, and simulated documents
will not verify against the AWS root.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from attested.errors import ConfigurationError, MalformedError

__all__ = ["AWS_NITRO_ROOT_G1_SHA256", "TrustRoot"]

AWS_NITRO_ROOT_G1_SHA256 = bytes.fromhex(
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
)
"""SHA-256 fingerprint of the DER of the AWS Nitro Enclaves Root-G1 certificate."""

_MAX_PEM_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True, eq=False)
class TrustRoot:
    """One or more trusted root certificates.

    Attributes:
        certificates: the root certificates.
        name: a short label for messages (``"AWS Nitro Enclaves Root-G1"``).
    """

    certificates: tuple[x509.Certificate, ...]
    name: str
    _ders: frozenset[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.certificates:
            raise ValueError("a trust root needs at least one certificate")
        ders = frozenset(c.public_bytes(Encoding.DER) for c in self.certificates)
        object.__setattr__(self, "_ders", ders)

    @classmethod
    def aws_nitro(cls) -> TrustRoot:
        """Return the AWS Nitro Enclaves Root-G1, checked against its pinned fingerprint.

        Raises:
            ConfigurationError: the packaged certificate does not match the pin (the
                installation is damaged or was tampered with).
        """
        pem = resources.files("attested._store").joinpath("aws_nitro_root_g1.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        if not hmac.compare_digest(cert.fingerprint(hashes.SHA256()), AWS_NITRO_ROOT_G1_SHA256):
            raise ConfigurationError(
                "the packaged AWS Nitro root certificate does not match its pinned "
                "fingerprint; reinstall attested-nitro"
            )
        return cls((cert,), "AWS Nitro Enclaves Root-G1")

    @classmethod
    def from_pem(cls, data: bytes, *, name: str = "custom root") -> TrustRoot:
        """Load one or more root certificates from PEM.

        Args:
            data: PEM text with one or more ``CERTIFICATE`` blocks.
            name: a short label for messages.

        Raises:
            MalformedError: no certificate could be read.
        """
        if len(data) > _MAX_PEM_SIZE:
            raise MalformedError(f"trust root PEM is larger than {_MAX_PEM_SIZE} bytes")
        try:
            certs = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise MalformedError("trust root is not a PEM certificate") from exc
        return cls(certs, name)

    def contains(self, der: bytes) -> bool:
        """Whether ``der`` is exactly one of the root certificates."""
        return der in self._ders

    def fingerprints(self) -> tuple[str, ...]:
        """SHA-256 fingerprints of the roots, lowercase hex."""
        return tuple(c.fingerprint(hashes.SHA256()).hex() for c in self.certificates)
