"""RecipientKey and Secret: what they show, what they refuse."""

from __future__ import annotations

import copy
import hashlib
import pickle
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attested.kms import RecipientKey, Secret
from attested.kms._results import DecryptResult


def test_the_spki_is_rsa_2048_der_and_its_hash_is_the_key_id(
    recipient_key: RecipientKey,
) -> None:
    spki = recipient_key.spki_der()
    public = serialization.load_der_public_key(spki)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert public.public_numbers().e == 65537
    assert recipient_key.key_id == hashlib.sha256(spki).digest()
    assert recipient_key.spki_der() == spki  # stable without rotation


def test_the_private_key_is_never_exposed(
    recipient_key: RecipientKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    text = repr(recipient_key)
    assert recipient_key.key_id.hex()[:16] in text
    private_der = rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert private_der.hex()[:64] not in text
    assert str(rsa_key.private_numbers().p) not in text
    public_methods = {name for name in dir(recipient_key) if not name.startswith("_")}
    assert public_methods == {
        "from_private_key",
        "key_id",
        "key_size",
        "process_default",
        "spki_der",
    }
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled"):
            attempt(recipient_key)
    assert not hasattr(recipient_key, "__dict__")


def test_from_private_key_checks_the_key() -> None:
    with pytest.raises(TypeError):
        RecipientKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1024 bits"):
        RecipientKey.from_private_key(rsa.generate_private_key(65537, 1024))  # noqa: S505
    with pytest.raises(ValueError, match="65537"):
        RecipientKey.from_private_key(rsa.generate_private_key(3, 2048))


def test_the_process_default_is_one_key() -> None:
    assert RecipientKey.process_default() is RecipientKey.process_default()


def test_rotation_needs_a_sane_age() -> None:
    with pytest.raises(ValueError, match="one minute"):
        RecipientKey(max_age=timedelta(seconds=5))


def test_secret_hides_its_value() -> None:
    secret = Secret(b"hunter2-hunter2")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r:>40}", repr([secret])):
        assert "hunter2" not in text
        assert b"hunter2".hex() not in text
        assert "15 bytes" in text
    assert secret.reveal() == b"hunter2-hunter2"
    assert len(secret) == 15
    assert secret.equals(b"hunter2-hunter2")
    assert secret.equals(Secret(b"hunter2-hunter2"))
    assert not secret.equals(b"hunter3-hunter3")
    with pytest.raises(TypeError, match="equals"):
        _ = secret == b"hunter2-hunter2"
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        bytes(secret)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        Secret("text")  # type: ignore[arg-type]


def test_results_hide_plaintext_in_their_repr() -> None:
    result = DecryptResult(plaintext=Secret(b"hunter2"), key_id="arn:aws:kms:...:key/k")
    assert "hunter2" not in repr(result)
    assert "arn:aws:kms" in repr(result)
