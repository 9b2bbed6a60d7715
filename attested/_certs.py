"""Loading DER certificates completely, so that malformed ones fail here, not later.

``cryptography`` parses certificates lazily: names, validity, extensions and the public
key are decoded on first access and may raise ``ValueError`` then. Loading through
:func:`load_certificate` touches everything verification uses, so a malformed
certificate is reported as :class:`~attested.errors.MalformedError` at load time.
"""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from attested.errors import MalformedError

__all__ = ["load_certificate"]


def load_certificate(der: bytes, label: str) -> x509.Certificate:
    """Parse ``der`` and every field verification reads.

    Raises:
        MalformedError: the bytes are not a usable DER X.509 certificate.
    """
    try:
        # cryptography only warns about some malformed names (for example a country
        # name that is not two letters); in evidence that is malformed, so it is refused.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cert = x509.load_der_x509_certificate(der)
            _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
            _ = (cert.signature_algorithm_oid, cert.signature_hash_algorithm, cert.signature)
            _ = list(cert.extensions)
            cert.public_key()
        if caught:
            raise ValueError(str(caught[0].message))
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise MalformedError(f"{label} is not a usable DER X.509 certificate") from exc
    return cert
