"""Certificate chain validation for attestation documents, per the AWS rules.

The document carries ``cabundle = [ROOT, INTERM_1, ..., INTERM_N]`` and the signing
``certificate``. The chain checked is ``[certificate, INTERM_N, ..., INTERM_1, ROOT]``:

1. ``cabundle[0]`` is byte for byte one of the trusted roots;
2. every certificate, the root included, is valid at the verification time;
3. each certificate is issued by the one before it in the bundle (names and signature);
4. the CA profile holds (basicConstraints critical with CA set, keyCertSign, path
   lengths), checked by ``cryptography.x509.verification`` with its web-PKI CA policy;
5. the signing certificate is an end entity (no CA flag, no path length) whose key
   usage includes digitalSignature. cryptography's default end-entity policy is not
   used because it requires an authority key identifier that Nitro leaves lack.

CRLs are not consulted: AWS states that CRL checking must be disabled.

Validated CA chains are cached, keyed by the exact bytes of the whole ``cabundle``, and
a cache entry is only used at times when every CA certificate in it is valid. On a hit,
the signing certificate's validity and profile are still checked every time. Its
signature by its issuer is checked once per exact certificate bytes and remembered in
the chain's entry (an NSM signs many documents with one certificate for up to 3 hours):
the same bytes under the same issuer bytes always give the same answer, so only that
signature check is skipped, never a time or profile check.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as xv

from attested._certs import load_certificate
from attested.errors import ChainError
from attested.trust import TrustRoot

__all__ = ["ChainValidator"]

# Extensions whose meaning for a leaf depends on the CA; chains holding them are not cached.
_UNCACHEABLE = (x509.NameConstraints, x509.PolicyConstraints, x509.InhibitAnyPolicy)
# Critical extensions a signing certificate may carry.
_LEAF_CRITICAL_OK = (
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectAlternativeName,
)


# Signing certificates whose signature was checked, remembered per cached CA chain.
_LEAVES_PER_CHAIN = 32


@dataclass(frozen=True, slots=True)
class _CaChain:
    certificates: tuple[x509.Certificate, ...]  # issuer of the leaf first, root last
    issuer_key: ec.EllipticCurvePublicKey  # key of certificates[0]
    not_before: datetime
    not_after: datetime
    # DER of signing certificates whose signature by certificates[0] verified (LRU);
    # guarded by the validator's lock.
    leaves: OrderedDict[bytes, None] = field(default_factory=OrderedDict)


_ECDSA_OIDS = frozenset(
    {
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)


def _check_issued_by(
    leaf: x509.Certificate, issuer: x509.Certificate, key: ec.EllipticCurvePublicKey
) -> None:
    """Check the leaf names ``issuer`` and carries a valid ECDSA signature by ``key``."""
    hash_algorithm = leaf.signature_hash_algorithm
    if (
        leaf.issuer != issuer.subject
        or leaf.signature_algorithm_oid not in _ECDSA_OIDS
        or hash_algorithm is None
    ):
        raise ChainError("signing certificate is not issued by the last cabundle certificate")
    try:
        key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature as exc:
        raise ChainError("signing certificate's signature by its issuer does not verify") from exc


def _describe(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = cns[0].value if cns else cert.subject.rfc4514_string()
    return str(value)


def _check_validity(cert: x509.Certificate, label: str, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise ChainError(
            f"{label} ({_describe(cert)}) is not valid before "
            f"{cert.not_valid_before_utc.isoformat()} (verification time {at.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise ChainError(
            f"{label} ({_describe(cert)}) expired at "
            f"{cert.not_valid_after_utc.isoformat()} (verification time {at.isoformat()})"
        )


def check_leaf_profile(cert: x509.Certificate) -> None:
    """Check that the signing certificate is an end entity allowed to sign.

    Raises:
        ChainError: it is a CA, carries a path length, lacks digitalSignature, or has a
            critical extension this verifier does not understand.
    """
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise ChainError("signing certificate has malformed extensions") from exc
    for ext in extensions:
        if ext.critical and not isinstance(ext.value, _LEAF_CRITICAL_OK):
            raise ChainError(f"signing certificate has an unknown critical extension {ext.oid}")
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and (bc.ca or bc.path_length is not None):
        raise ChainError("signing certificate is a CA certificate, not an end entity")
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ChainError("signing certificate has no key usage extension") from exc
    if not ku.digital_signature:
        raise ChainError("signing certificate's key usage does not allow digitalSignature")


class ChainValidator:
    """Validates signing certificate + cabundle against one trust root, with a cache.

    Thread-safe. One instance per trust root; :class:`attested.verify.Verifier` owns one.
    """

    def __init__(self, trust_root: TrustRoot, *, cache_size: int = 64) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self._root = trust_root
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, ...], _CaChain] = OrderedDict()
        self._lock = threading.Lock()

    def validate(
        self, leaf: x509.Certificate, cabundle: tuple[bytes, ...], at: datetime
    ) -> tuple[x509.Certificate, ...]:
        """Validate the chain at time ``at``.

        Args:
            leaf: the document's signing certificate.
            cabundle: the document's ``cabundle``, root first.
            at: the verification time (timezone-aware).

        Returns:
            The validated chain, signing certificate first and root last.

        Raises:
            ChainError: the chain is not valid at ``at`` or does not reach the trust root.
            MalformedError: a ``cabundle`` entry is not a DER certificate.
        """
        if at.tzinfo is None:
            raise ValueError("verification time must be timezone-aware")
        at = at.astimezone(UTC)
        if not cabundle:
            raise ChainError("cabundle is empty")
        # (1) the bundle starts at a trusted root
        if not self._root.contains(cabundle[0]):
            raise ChainError(f"cabundle[0] is not the trust root ({self._root.name})")
        cached = self._lookup(cabundle, at)
        if cached is not None:
            _check_validity(leaf, "signing certificate", at)  # (2) for the leaf
            self._check_leaf_signature(leaf, cached)  # (3) for the leaf
            check_leaf_profile(leaf)  # (5)
            return (leaf, *cached.certificates)
        return self._validate_full(leaf, cabundle, at)

    def _check_leaf_signature(self, leaf: x509.Certificate, chain: _CaChain) -> None:
        der = leaf.public_bytes(Encoding.DER)
        with self._lock:
            if der in chain.leaves:
                chain.leaves.move_to_end(der)
                return
        _check_issued_by(leaf, chain.certificates[0], chain.issuer_key)
        with self._lock:
            chain.leaves[der] = None
            chain.leaves.move_to_end(der)
            while len(chain.leaves) > _LEAVES_PER_CHAIN:
                chain.leaves.popitem(last=False)

    def _lookup(self, cabundle: tuple[bytes, ...], at: datetime) -> _CaChain | None:
        with self._lock:
            entry = self._cache.get(cabundle)
            if entry is None:
                return None
            self._cache.move_to_end(cabundle)
        if entry.not_before <= at <= entry.not_after:
            return entry
        return None

    def _validate_full(
        self, leaf: x509.Certificate, cabundle: tuple[bytes, ...], at: datetime
    ) -> tuple[x509.Certificate, ...]:
        cas = [load_certificate(der, f"cabundle[{i}]") for i, der in enumerate(cabundle)]
        # (2) every certificate, root included, is valid at the verification time
        for i, cert in enumerate(cas):
            _check_validity(cert, "root certificate" if i == 0 else f"cabundle[{i}]", at)
        _check_validity(leaf, "signing certificate", at)
        # (3) the bundle is in order: each certificate names the previous one as issuer
        for i in range(1, len(cas)):
            if cas[i].issuer != cas[i - 1].subject:
                raise ChainError(f"cabundle[{i}] is not issued by cabundle[{i - 1}]")
        if leaf.issuer != cas[-1].subject:
            raise ChainError("signing certificate is not issued by the last cabundle certificate")
        # (3) + (4) signatures and the CA profile, by cryptography's path validation
        verifier = (
            xv.PolicyBuilder()
            .store(xv.Store([cas[0]]))
            .time(at.replace(tzinfo=None))
            .max_chain_depth(len(cas))
            .extension_policies(
                ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=xv.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, cas[1:])
        except xv.VerificationError as exc:
            raise ChainError(f"certificate chain does not validate: {exc}") from exc
        expected = [leaf, *reversed(cas)]
        if list(verified.chain) != expected:  # pragma: no cover - defensive
            raise ChainError("certificate chain was built in an unexpected order")
        check_leaf_profile(leaf)  # (5)
        self._store(cabundle, tuple(reversed(cas)), leaf)
        return tuple(expected)

    def _store(
        self, cabundle: tuple[bytes, ...], cas: tuple[x509.Certificate, ...], leaf: x509.Certificate
    ) -> None:
        if self._cache_size == 0:
            return
        issuer_key = cas[0].public_key()
        if not isinstance(issuer_key, ec.EllipticCurvePublicKey):
            return
        for cert in cas:
            for ext in cert.extensions:
                if isinstance(ext.value, _UNCACHEABLE):
                    return
        entry = _CaChain(
            certificates=cas,
            issuer_key=issuer_key,
            not_before=max(c.not_valid_before_utc for c in cas),
            not_after=min(c.not_valid_after_utc for c in cas),
            leaves=OrderedDict({leaf.public_bytes(Encoding.DER): None}),
        )
        with self._lock:
            self._cache[cabundle] = entry
            self._cache.move_to_end(cabundle)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached CA chain."""
        with self._lock:
            self._cache.clear()
