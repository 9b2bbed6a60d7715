"""Stock boto3 against ``attested serve``'s KMS endpoint, backed by ``attested emulator kms``.

Three processes: this one (an application in the enclave, with dummy credentials), the
service, the emulator. Every raw answer is checked against botocore's model.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key

from tests.kit import PCR0
from tests.kms_endpoint.stack import (
    PLAINTEXT,
    REGION,
    Stack,
    admin_client,
    endpoint_client,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_decrypt_answers_the_plaintext_only_because_the_service_attested(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    answer = kms.decrypt(CiphertextBlob=stack.blob)  # no KeyId: the ciphertext names it
    assert answer["Plaintext"] == PLAINTEXT
    assert answer["KeyId"] == stack.keys.good
    assert answer["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert "CiphertextForRecipient" not in answer
    # The same call without attestation, with the service's own credentials: refused.
    with pytest.raises(ClientError) as denied:
        admin_client(stack.emulator_url).decrypt(CiphertextBlob=stack.blob)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"


def test_generate_data_key_pair_random_and_shared_secret(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    keys = stack.keys
    data_key = kms.generate_data_key(
        KeyId=keys.good, KeySpec="AES_256", EncryptionContext={"tenant": "42"}
    )
    assert len(data_key["Plaintext"]) == 32
    assert data_key["KeyId"] == keys.good
    again = kms.decrypt(
        CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext={"tenant": "42"}
    )
    assert again["Plaintext"] == data_key["Plaintext"]
    assert len(kms.generate_data_key(KeyId=keys.good, NumberOfBytes=7)["Plaintext"]) == 7

    pair = kms.generate_data_key_pair(KeyId=keys.good, KeyPairSpec="ECC_NIST_P256")
    private = load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pair["PublicKey"]
    )
    assert pair["KeyPairSpec"] == "ECC_NIST_P256"
    assert (
        kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"]
        == (pair["PrivateKeyPlaintext"])
    )

    assert len(kms.generate_random(NumberOfBytes=48)["Plaintext"]) == 48

    ours = ec.generate_private_key(ec.SECP256R1())
    kms_public = load_public(kms.get_public_key(KeyId=keys.agreement)["PublicKey"])
    shared = kms.derive_shared_secret(
        KeyId=keys.agreement,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=ours.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    assert shared["SharedSecret"] == ours.exchange(ec.ECDH(), kms_public)
    assert shared["KeyAgreementAlgorithm"] == "ECDH"
    assert shared["KeyOrigin"] == "AWS_KMS"


def load_public(der: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(der)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_pass_through_operations_keyrings_call(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    keys = stack.keys
    blob = kms.encrypt(KeyId=keys.good, Plaintext=b"through", EncryptionContext={"a": "b"})
    assert blob["KeyId"] == keys.good
    assert (
        kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "b"})[
            "Plaintext"
        ]
        == b"through"
    )
    without = kms.generate_data_key_without_plaintext(KeyId=keys.good, KeySpec="AES_128")
    assert "Plaintext" not in without
    assert len(kms.decrypt(CiphertextBlob=without["CiphertextBlob"])["Plaintext"]) == 16
    pair = kms.generate_data_key_pair_without_plaintext(KeyId=keys.good, KeyPairSpec="RSA_2048")
    assert "PrivateKeyPlaintext" not in pair
    assert pair["PublicKey"]
    described = kms.describe_key(KeyId=keys.good)["KeyMetadata"]
    assert described["Arn"] == keys.good
    assert described["Description"] == "the enclave's data key"
    assert described["CreationDate"].tzinfo is not None


def test_aliases_are_resolved_as_kms_resolves_them(stack: Stack) -> None:
    """kms.allowed_keys lists only the alias ARN; the key ARN, its id and the alias name work."""
    kms = endpoint_client(stack.endpoint_url)
    keys = stack.keys
    key_id = keys.aliased.rsplit("/", 1)[1]
    for name in (keys.alias_arn, "alias/endpoint-aliased", keys.aliased, key_id):
        data_key = kms.generate_data_key(KeyId=name, NumberOfBytes=16)
        assert data_key["KeyId"] == keys.aliased, name
    blob = kms.encrypt(KeyId="alias/endpoint-aliased", Plaintext=b"aliased")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"aliased"


def test_a_key_outside_allowed_keys_is_refused_in_kms_shape(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    outside = stack.keys.outside
    calls: tuple[Callable[[], object], ...] = (
        lambda: kms.generate_data_key(KeyId=outside, KeySpec="AES_256"),
        lambda: kms.encrypt(KeyId=outside, Plaintext=b"x"),
        lambda: kms.describe_key(KeyId=outside),
    )
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        error = refused.value.response["Error"]
        assert error["Code"] == "AccessDeniedException"
        assert "kms.allowed_keys" in error["Message"]
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Decrypt names no key: KMS's answer is checked, and the plaintext never leaves.
    blob = admin_client(stack.emulator_url).encrypt(KeyId=outside, Plaintext=PLAINTEXT)
    with pytest.raises(ClientError) as refused:
        kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert outside in refused.value.response["Error"]["Message"]


def test_the_key_policy_refusal_keeps_the_pcrs_presented(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    with pytest.raises(ClientError) as denied:
        kms.generate_data_key(KeyId=stack.keys.other_image, KeySpec="AES_256")
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert f"PCR0={PCR0.hex()}" in error["Message"]
    assert "kms:RecipientAttestation" in error["Message"]


def test_administration_is_unsupported(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    calls: tuple[Callable[[], object], ...] = (
        lambda: kms.create_key(),
        lambda: kms.list_keys(),
        lambda: kms.schedule_key_deletion(KeyId=stack.keys.good),
        lambda: kms.put_key_policy(KeyId=stack.keys.good, Policy="{}"),
        lambda: kms.re_encrypt(CiphertextBlob=stack.blob, DestinationKeyId=stack.keys.good),
    )
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "UnsupportedOperationException"
        assert "not a key administrator" in refused.value.response["Error"]["Message"] or (
            "allow_reencrypt" in refused.value.response["Error"]["Message"]
        )


def test_the_sdk_region_must_be_the_service_region(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url, region="eu-west-1")
    assert kms.meta.region_name == "eu-west-1"
    with pytest.raises(ClientError) as refused:
        kms.generate_random(NumberOfBytes=8)
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert REGION in refused.value.response["Error"]["Message"]


def test_the_service_log_holds_no_secret(stack: Stack) -> None:
    kms = endpoint_client(stack.endpoint_url)
    secrets = [
        PLAINTEXT,
        kms.generate_data_key(KeyId=stack.keys.good, KeySpec="AES_256")["Plaintext"],
        kms.generate_random(NumberOfBytes=32)["Plaintext"],
        kms.decrypt(CiphertextBlob=stack.blob)["Plaintext"],
    ]
    log = stack.serve_log.read_bytes()
    assert b"POST kms:Decrypt 200" in log  # the access lines are there (DEBUG level)

    for secret in secrets:
        for form in (secret, base64.b64encode(secret), secret.hex().encode()):
            assert form not in log
    for credential in (b"endpoint-caller-secret-not-checked",):
        assert credential not in log
