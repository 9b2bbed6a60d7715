"""The CA-chain cache never skips a check that protects the document."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attested import ChainError, Policy, Verifier
from attested._chain import ChainValidator
from attested.simulator._document import sign_payload
from attested.simulator._pki import LEAF_USAGE, build_pki, new_key
from tests.kit import PCR0, T0, Kit, make_kit


def _policy() -> Policy:
    return Policy(pcrs={0: PCR0})


def _leaf(
    kit: Kit,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    serial: int,
) -> x509.Certificate:
    """A signing certificate naming the instance CA as issuer, with the right profile."""
    return (
        x509.CertificateBuilder()
        .subject_name(kit.leaf.certificate.subject)
        .issuer_name(kit.pki.instance.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(T0 - timedelta(minutes=5))
        .not_valid_after(T0 + timedelta(hours=3))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(LEAF_USAGE.extension(), critical=False)
        .sign(signer, hashes.SHA384())
    )


def _warm(kit: Kit) -> Verifier:
    verifier = Verifier(trust_root=kit.root)
    verifier.verify(kit.document(), policy=_policy(), at=T0)
    return verifier


def test_cached_chain_still_checks_leaf_validity(kit: Kit) -> None:
    verifier = _warm(kit)
    with pytest.raises(ChainError, match=r"signing certificate .* expired"):
        verifier.verify(kit.document(), policy=_policy(), at=T0 + timedelta(hours=3))


def test_cached_chain_still_checks_the_leaf_signature(kit: Kit) -> None:
    verifier = _warm(kit)
    # A leaf naming the instance CA as issuer, with the right profile, signed by another key.
    impostor = new_key()
    fake = _leaf(kit, impostor.public_key(), impostor, 7)
    data = sign_payload(kit.payload(certificate=fake.public_bytes(Encoding.DER)), impostor)
    with pytest.raises(ChainError, match="signature by its issuer"):
        verifier.verify(data, policy=_policy(), at=T0)
    # And the uncached path refuses it too.
    with pytest.raises(ChainError):
        Verifier(trust_root=kit.root, cache_size=0).verify(data, policy=_policy(), at=T0)


def test_cache_entry_is_not_used_after_a_ca_expires(kit: Kit) -> None:
    verifier = _warm(kit)
    instance_end = kit.pki.instance.certificate.not_valid_after_utc
    late_leaf = kit.pki.issue_leaf(
        enclave_id="late", not_before=instance_end - timedelta(minutes=30)
    )
    data = sign_payload(kit.payload(certificate=late_leaf.der), late_leaf.private_key)
    # Valid while the instance CA is: the cached entry is used.
    verifier.verify(data, policy=_policy(), at=instance_end - timedelta(minutes=1))
    with pytest.raises(ChainError, match=r"cabundle\[3\] .* expired"):
        verifier.verify(data, policy=_policy(), at=instance_end + timedelta(seconds=1))


def test_cache_is_keyed_by_exact_bytes(kit: Kit) -> None:
    validator = ChainValidator(kit.root)
    validator.validate(kit.leaf.certificate, kit.pki.cabundle(), T0)
    validator.validate(kit.leaf.certificate, kit.pki.cabundle(), T0)
    assert list(validator._cache) == [kit.pki.cabundle()]
    validator.clear_cache()
    assert not validator._cache


def test_cache_size_limit_evicts_oldest() -> None:
    base = make_kit()
    validator = ChainValidator(base.root, cache_size=2)
    # Same root, three different intermediate sets.
    bundles = []
    for _ in range(3):
        pki = build_pki(now=T0, root=base.pki.root)
        leaf = pki.issue_leaf(enclave_id="e", not_before=T0 - timedelta(minutes=1))
        validator.validate(leaf.certificate, pki.cabundle(), T0)
        bundles.append(pki.cabundle())
    assert list(validator._cache) == bundles[1:]


def test_negative_cache_size_is_refused(kit: Kit) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        ChainValidator(kit.root, cache_size=-1)


def test_remembered_leaf_still_checks_validity_and_a_new_leaf_its_signature(kit: Kit) -> None:
    verifier = _warm(kit)
    validator = verifier._chains
    (entry,) = validator._cache.values()
    leaf_der = kit.leaf.certificate.public_bytes(Encoding.DER)
    # The full validation remembered the signing certificate it checked.
    assert list(entry.leaves) == [leaf_der]
    # Same bytes, later time: the remembered signature does not skip the validity check.
    with pytest.raises(ChainError, match=r"signing certificate .* expired"):
        verifier.verify(kit.document(), policy=_policy(), at=T0 + timedelta(hours=3))
    # A refused leaf is never remembered.
    impostor = new_key()
    fake = _leaf(kit, impostor.public_key(), impostor, 8)
    data = sign_payload(kit.payload(certificate=fake.public_bytes(Encoding.DER)), impostor)
    for _ in range(2):
        with pytest.raises(ChainError, match="signature by its issuer"):
            verifier.verify(data, policy=_policy(), at=T0)
    assert list(entry.leaves) == [leaf_der]


def test_remembered_leaves_are_bounded(kit: Kit) -> None:
    from attested._chain import _LEAVES_PER_CHAIN

    verifier = _warm(kit)
    (entry,) = verifier._chains._cache.values()
    for serial in range(_LEAVES_PER_CHAIN + 5):
        key = new_key()
        leaf = _leaf(kit, key.public_key(), kit.pki.instance.private_key, 100 + serial)
        data = sign_payload(kit.payload(certificate=leaf.public_bytes(Encoding.DER)), key)
        verifier.verify(data, policy=_policy(), at=T0)
    assert len(entry.leaves) == _LEAVES_PER_CHAIN
