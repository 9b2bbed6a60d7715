"""One negative vector per rule of the AWS attestation spec, each with its error type.

Every vector starts from a valid document of the test PKI (AWS certificate profile),
changes exactly one thing and, where the change is inside the signed payload, re-signs
it so that only the rule under test can fail.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attested import (
    ChainError,
    MalformedError,
    Policy,
    SecurityWarning,
    SignatureError,
    TrustRoot,
    Verifier,
    _cose,
)
from attested.simulator._document import sign_payload
from attested.simulator._pki import (
    CA_USAGE,
    INSTANCE_USAGE,
    LEAF_USAGE,
    CertifiedKey,
    KeyUsageSpec,
    build_pki,
    issue_certificate,
    new_key,
)
from tests.kit import PCR0, T0, Kit, make_kit

AT = T0  # verification time for every vector unless it says otherwise


def _policy() -> Policy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return Policy(pcrs={0: PCR0})


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


@dataclass
class Chain:
    """A custom chain: CAs root first, the leaf, and the bundle to put in the document."""

    cas: list[CertifiedKey]
    leaf: CertifiedKey

    def document(self, kit: Kit, *, cabundle: list[bytes] | None = None) -> bytes:
        payload = kit.payload(
            certificate=self.leaf.der,
            cabundle=cabundle if cabundle is not None else [c.der for c in self.cas],
        )
        return sign_payload(payload, self.leaf.private_key)


def custom_chain(
    *,
    root_not_before: datetime = T0 - timedelta(days=1),
    inter_not_after: datetime = T0 + timedelta(days=1),
    inter_usage: KeyUsageSpec = CA_USAGE,
    inter_path_length: int | None = 0,
    inter_bc_critical: bool = True,
    extra_ca: bool = False,
    leaf_ca: bool = False,
    leaf_usage: KeyUsageSpec | None = LEAF_USAGE,
    leaf_key: ec.EllipticCurvePrivateKey | None = None,
) -> Chain:
    """root -> intermediate (-> extra CA) -> leaf, each knob breaking one rule."""
    root = issue_certificate(
        subject=_name("custom root"),
        key=new_key(),
        issuer=None,
        not_before=root_not_before,
        not_after=T0 + timedelta(days=3650),
        ca=True,
        path_length=None,
        key_usage=CA_USAGE,
    )
    inter = issue_certificate(
        subject=_name("custom intermediate"),
        key=new_key(),
        issuer=root,
        not_before=T0 - timedelta(days=1),
        not_after=inter_not_after,
        ca=True,
        path_length=inter_path_length,
        key_usage=inter_usage,
        basic_constraints_critical=inter_bc_critical,
    )
    cas = [root, inter]
    if extra_ca:
        cas.append(
            issue_certificate(
                subject=_name("custom extra CA"),
                key=new_key(),
                issuer=inter,
                not_before=T0 - timedelta(days=1),
                not_after=T0 + timedelta(days=1),
                ca=True,
                path_length=None,
                key_usage=INSTANCE_USAGE,
            )
        )
    leaf = issue_certificate(
        subject=_name("custom leaf"),
        key=leaf_key or new_key(),
        issuer=cas[-1],
        not_before=T0 - timedelta(minutes=10),
        not_after=T0 + timedelta(hours=3),
        ca=leaf_ca,
        path_length=None,
        key_usage=leaf_usage,
        key_identifiers=False,
    )
    return Chain(cas, leaf)


def _verify_chain(chain: Chain, kit: Kit, data: bytes | None = None) -> None:
    root = TrustRoot((chain.cas[0].certificate,), "custom root")
    Verifier(trust_root=root).verify(data or chain.document(kit), policy=_policy(), at=AT)


def _verify(kit: Kit, data: bytes, at: datetime = AT) -> None:
    Verifier(trust_root=kit.root).verify(data, policy=_policy(), at=at)


def _drop(key: str) -> Callable[[dict[str, object]], None]:
    def change(payload: dict[str, object]) -> None:
        del payload[key]

    return change


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(payload: dict[str, object]) -> None:
        payload[key] = value

    return change


# ---- the baseline is valid, so each vector below fails only by its one change ----


def test_baseline_document_verifies(kit: Kit) -> None:
    verified = Verifier(trust_root=kit.root).verify(kit.document(), policy=_policy(), at=AT)
    assert verified.pcrs[0] == PCR0


def test_baseline_custom_chain_verifies(kit: Kit) -> None:
    _verify_chain(custom_chain(), kit)


# ---- chain rules ----


def test_wrong_root(kit: Kit) -> None:
    other = make_kit()
    with pytest.raises(ChainError, match="trust root"):
        _verify(kit, other.document())


def test_aws_root_refuses_a_test_pki_document(kit: Kit) -> None:
    with pytest.raises(ChainError, match="trust root"):
        Verifier.aws_nitro().verify(kit.document(), policy=_policy(), at=AT)


def test_expired_leaf(kit: Kit) -> None:
    with pytest.raises(ChainError, match=r"signing certificate .* expired"):
        _verify(kit, kit.document(), at=AT + timedelta(hours=3))


def test_leaf_not_yet_valid(kit: Kit) -> None:
    with pytest.raises(ChainError, match=r"signing certificate .* not valid before"):
        _verify(kit, kit.document(), at=AT - timedelta(minutes=11))


def test_expired_intermediate(kit: Kit) -> None:
    chain = custom_chain(inter_not_after=T0 - timedelta(seconds=1))
    with pytest.raises(ChainError, match=r"cabundle\[1\] .* expired"):
        _verify_chain(chain, kit)


def test_root_not_yet_valid(kit: Kit) -> None:
    chain = custom_chain(root_not_before=T0 + timedelta(minutes=1))
    with pytest.raises(ChainError, match=r"root certificate .* not valid before"):
        _verify_chain(chain, kit)


def test_cabundle_out_of_order(kit: Kit) -> None:
    bundle = list(kit.pki.cabundle())
    bundle[1], bundle[2] = bundle[2], bundle[1]
    with pytest.raises(ChainError, match="not issued by"):
        _verify(kit, kit.modified(_set("cabundle", bundle)))


def test_cabundle_without_root(kit: Kit) -> None:
    with pytest.raises(ChainError, match="trust root"):
        _verify(kit, kit.modified(_set("cabundle", list(kit.pki.cabundle()[1:]))))


def test_leaf_is_a_ca(kit: Kit) -> None:
    chain = custom_chain(leaf_ca=True)
    with pytest.raises(ChainError, match="not an end entity"):
        _verify_chain(chain, kit)


def test_leaf_without_digital_signature(kit: Kit) -> None:
    chain = custom_chain(leaf_usage=KeyUsageSpec(content_commitment=True, critical=False))
    with pytest.raises(ChainError, match="digitalSignature"):
        _verify_chain(chain, kit)


def test_leaf_without_key_usage(kit: Kit) -> None:
    chain = custom_chain(leaf_usage=None)
    with pytest.raises(ChainError, match="key usage"):
        _verify_chain(chain, kit)


def test_intermediate_without_key_cert_sign(kit: Kit) -> None:
    chain = custom_chain(inter_usage=KeyUsageSpec(digital_signature=True))
    with pytest.raises(ChainError, match="keyCertSign"):
        _verify_chain(chain, kit)


def test_intermediate_basic_constraints_not_critical(kit: Kit) -> None:
    chain = custom_chain(inter_bc_critical=False)
    with pytest.raises(ChainError, match="criticality"):
        _verify_chain(chain, kit)


def test_path_length_exceeded(kit: Kit) -> None:
    chain = custom_chain(inter_path_length=0, extra_ca=True)
    with pytest.raises(ChainError, match="path length"):
        _verify_chain(chain, kit)


def test_leaf_issued_by_a_forged_intermediate_with_the_same_name(kit: Kit) -> None:
    # A CA with the instance CA's exact name but another key signs the leaf.
    forged = issue_certificate(
        subject=kit.pki.instance.certificate.subject,
        key=new_key(),
        issuer=kit.pki.zonal,
        not_before=T0 - timedelta(hours=1),
        not_after=T0 + timedelta(hours=23),
        ca=True,
        path_length=0,
        key_usage=INSTANCE_USAGE,
    )
    leaf = issue_certificate(
        subject=_name("forged leaf"),
        key=new_key(),
        issuer=forged,
        not_before=T0 - timedelta(minutes=5),
        not_after=T0 + timedelta(hours=3),
        ca=False,
        path_length=None,
        key_usage=LEAF_USAGE,
        key_identifiers=False,
    )
    data = sign_payload(kit.payload(certificate=leaf.der), leaf.private_key)
    with pytest.raises(ChainError):
        _verify(kit, data)


# ---- signature rules ----


def test_bad_signature(kit: Kit) -> None:
    data = bytearray(kit.document())
    data[-1] ^= 0x01
    with pytest.raises(SignatureError):
        _verify(kit, bytes(data))


def test_signed_by_another_key(kit: Kit) -> None:
    with pytest.raises(SignatureError):
        _verify(kit, kit.document(key=new_key()))


def test_payload_changed_after_signing(kit: Kit) -> None:
    good = kit.document()
    message = _cose.parse_sign1(good, max_size=1 << 16)
    payload = cbor2.loads(message.payload)
    payload["module_id"] = "i-0attacker000000000-enc0000000000000001"
    forged = _cose.encode_sign1(
        protected=message.protected, payload=cbor2.dumps(payload), signature=message.signature
    )
    with pytest.raises(SignatureError):
        _verify(kit, forged)


def test_leaf_key_is_p256(kit: Kit) -> None:
    chain = custom_chain(leaf_key=ec.generate_private_key(ec.SECP256R1()))
    # ES384 is named, but the certificate's key is P-256: the signature cannot be valid.
    payload = kit.payload(certificate=chain.leaf.der, cabundle=[c.der for c in chain.cas])
    body = cbor2.dumps(payload)
    signature = bytes(96)
    data = _cose.encode_sign1(protected=_cose.PROTECTED_ES384, payload=body, signature=signature)
    with pytest.raises(SignatureError):
        _verify_chain(chain, kit, data)


# ---- format rules (parse) ----


@pytest.mark.parametrize(
    ("name", "protected"),
    [
        ("es256", cbor2.dumps({1: -7})),
        ("es512", cbor2.dumps({1: -36})),
        ("no_alg", cbor2.dumps({})),
        ("empty_protected", b""),
        ("extra_header", cbor2.dumps({1: -35, 4: b"kid"})),
        ("alg_as_text", cbor2.dumps({1: "ES384"})),
    ],
)
def test_protected_header_must_be_exactly_es384(kit: Kit, name: str, protected: bytes) -> None:
    with pytest.raises(MalformedError):
        _verify(kit, kit.document(protected=protected))


def test_alg_in_unprotected_header(kit: Kit) -> None:
    good = _cose.parse_sign1(kit.document(), max_size=1 << 16)
    data = _cose.encode_sign1(
        protected=good.protected,
        payload=good.payload,
        signature=good.signature,
        unprotected={1: -35},
    )
    with pytest.raises(MalformedError, match="protected header only"):
        _verify(kit, data)


@pytest.mark.parametrize(
    "field", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"]
)
def test_missing_required_field(kit: Kit, field: str) -> None:
    with pytest.raises(MalformedError, match=field):
        _verify(kit, kit.modified(_drop(field)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("module_id", b"i-0123"),
        ("module_id", ""),
        ("digest", "SHA256"),
        ("digest", b"SHA384"),
        ("timestamp", 0),
        ("timestamp", -5),
        ("timestamp", "2026-01-01"),
        ("pcrs", {}),
        ("pcrs", {32: bytes(48)}),
        ("pcrs", {0: bytes(40)}),
        ("pcrs", {"0": bytes(48)}),
        ("pcrs", [bytes(48)]),
        ("certificate", b""),
        ("certificate", b"\x30\x03\x02\x01\x00"),
        ("certificate", bytes(1025)),
        ("cabundle", []),
        ("cabundle", [b""]),
        ("cabundle", [bytes(10)] * 9),
        ("cabundle", b"not an array"),
        ("public_key", "text"),
        ("user_data", bytes(1025)),
        ("nonce", bytes(1025)),
        ("nonce", 5),
    ],
)
def test_mistyped_or_oversized_field(kit: Kit, field: str, value: object) -> None:
    with pytest.raises(MalformedError):
        _verify(kit, kit.modified(_set(field, value)))


def test_unknown_field(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="unknown fields"):
        _verify(kit, kit.modified(_set("extra", b"x")))


def test_cabundle_entry_not_der(kit: Kit) -> None:
    bundle = [*kit.pki.cabundle()[:-1], b"\x30\x03garbage"]
    with pytest.raises(MalformedError, match="cabundle"):
        _verify(kit, kit.modified(_set("cabundle", bundle)))


def test_duplicate_payload_key(kit: Kit) -> None:
    body = cbor2.dumps(kit.payload())
    # The map has 9 entries (0xa9); append a second "nonce" and count 10.
    duplicated = b"\xaa" + body[1:] + cbor2.dumps("nonce") + cbor2.dumps(None)
    with pytest.raises(MalformedError, match="Duplicate"):
        _verify(kit, kit.document(duplicated))


def test_tag_inside_payload(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="tag"):
        _verify(kit, kit.modified(_set("user_data", cbor2.CBORTag(24, b"x"))))


def test_float_inside_payload(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="float"):
        _verify(kit, kit.modified(_set("timestamp", 1.5e12)))


def test_trailing_bytes_after_document(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="trailing"):
        _verify(kit, kit.document() + b"\x00")


def test_trailing_bytes_inside_payload(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="trailing"):
        _verify(kit, kit.document(cbor2.dumps(kit.payload()) + b"\xf6"))


def test_signature_of_wrong_length(kit: Kit) -> None:
    good = _cose.parse_sign1(kit.document(), max_size=1 << 16)
    data = _cose.encode_sign1(
        protected=good.protected, payload=good.payload, signature=good.signature[:64]
    )
    with pytest.raises(MalformedError, match="96 bytes"):
        _verify(kit, data)


def test_not_a_cose_array(kit: Kit) -> None:
    for data in (cbor2.dumps([1, 2, 3]), cbor2.dumps({"a": 1}), b"", b"\xd2", b"\x84"):
        with pytest.raises(MalformedError):
            _verify(kit, data)


def test_payload_not_a_map(kit: Kit) -> None:
    with pytest.raises(MalformedError, match="must be a map"):
        _verify(kit, kit.document(cbor2.dumps([1, 2])))


def test_document_over_the_size_cap(kit: Kit) -> None:
    data = kit.modified(_set("user_data", bytes(1000))) + bytes(16384)
    with pytest.raises(MalformedError, match="limit"):
        _verify(kit, data)


def test_other_cbor_tag_than_18(kit: Kit) -> None:
    with pytest.raises(MalformedError):
        _verify(kit, b"\xd8\x62" + kit.document())


# ---- accepted variants: what real NSMs emit ----


def test_tagged_document_verifies(kit: Kit) -> None:
    data = kit.document(tagged=True)
    assert data[0] == 0xD2
    _verify(kit, data)


def test_indefinite_length_payload_map_verifies(kit: Kit) -> None:
    data = kit.document(indefinite=True)
    assert b"\xbf" in data[:16]
    _verify(kit, data)


def test_zero_length_and_null_optional_fields_verify(kit: Kit) -> None:
    _verify(kit, kit.modified(_set("public_key", b"")))
    _verify(kit, kit.modified(_set("user_data", b"")))
    _verify(kit, kit.modified(_set("nonce", None)))
    _verify(kit, kit.modified(_drop("nonce")))


@pytest.mark.parametrize("size", [32, 48, 64])
def test_pcr_sizes_and_counts(kit: Kit, size: int) -> None:
    pcrs = {i: bytes([i + 1]) * size for i in range(32)}
    pcrs[0] = PCR0 if size == 48 else b"\xaa" * size
    data = kit.modified(_set("pcrs", pcrs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        policy = Policy(pcrs={0: pcrs[0], 31: pcrs[31]})
    verified = Verifier(trust_root=kit.root).verify(data, policy=policy, at=AT)
    assert len(verified.pcrs) == 32


def test_single_pcr_document(kit: Kit) -> None:
    _verify(kit, kit.modified(_set("pcrs", {0: PCR0})))


def test_fresh_pki_built_at_another_time_verifies_only_then() -> None:
    later = T0 + timedelta(days=30)
    pki = build_pki(now=later)
    leaf = pki.issue_leaf(enclave_id="enc1", not_before=later)
    kit = Kit(pki, leaf)
    _verify(kit, kit.document(kit.payload(certificate=leaf.der)), at=later + timedelta(minutes=1))
    with pytest.raises(ChainError):
        _verify(kit, kit.document(kit.payload(certificate=leaf.der)), at=T0)
