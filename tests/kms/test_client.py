"""KmsClient with real boto3 over loopback against the KMS stand-in, proxy and TLS."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attested import parse_attestation
from attested.errors import (
    ConfigurationError,
    KmsAccessDenied,
    KmsCredentialsRejected,
    KmsError,
    KmsIncorrectKey,
    KmsInvalidCiphertext,
    KmsKeyDisabled,
    KmsKeyNotFound,
    KmsThrottled,
    KmsTlsError,
    KmsUnreachable,
    ProxyUnreachable,
    RecipientIgnored,
)
from attested.kms import KmsClient, NetworkSettings, RecipientKey, RetryPolicy
from attested.kms.credentials import ParentCredentials, StaticCredentials
from attested.parent import CredentialServer
from tests.kit import PCR0, PCR1, PCR2, PCR8
from tests.kms.servers import (
    KEY_ARN,
    SEALED,
    ConnectProxy,
    DocumentProvider,
    KmsStandIn,
    LocalCa,
    closed_port,
)
from tests.kms.test_credentials import SECRET, Clock, Source

CREDS = StaticCredentials(access_key_id="AKIAEXAMPLEEXAMPLE01", secret_access_key=SECRET)


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(
    kms: KmsStandIn, provider: DocumentProvider, recipient_key: RecipientKey, sleeps: Sleeps
) -> Iterator[KmsClient]:
    with KmsClient(
        region="us-east-1",
        attestation=provider,
        credentials=CREDS,
        recipient_key=recipient_key,
        network=NetworkSettings(endpoint_url=kms.url),
        sleep=sleeps,
        uniform=lambda: 0.5,
    ) as made:
        yield made


def _sent_document(kms: KmsStandIn, index: int = -1) -> bytes:
    recipient = kms.requests[index].body["Recipient"]
    assert recipient["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    return base64.b64decode(recipient["AttestationDocument"])


# --- the five operations --------------------------------------------------------------------


def test_decrypt_sends_a_fresh_bound_document_and_opens_the_envelope(
    client: KmsClient, kms: KmsStandIn, provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    first = client.decrypt(
        SEALED + b"hello",
        encryption_context={"purpose": "test"},
        key_id="alias/app",
        grant_tokens=["grant-1"],
    )
    second = client.decrypt(SEALED + b"again")
    assert first.plaintext.reveal() == b"hello"
    assert second.plaintext.reveal() == b"again"
    assert first.key_id == KEY_ARN
    assert first.encryption_algorithm == "SYMMETRIC_DEFAULT"

    assert provider.calls == 2
    documents = [_sent_document(kms, 0), _sent_document(kms, 1)]
    assert documents[0] != documents[1]  # a fresh document per call
    for document in documents:
        assert parse_attestation(document).public_key == recipient_key.spki_der()
    body = kms.requests[0].body
    assert body["EncryptionContext"] == {"purpose": "test"}
    assert body["KeyId"] == "alias/app"
    assert body["GrantTokens"] == ["grant-1"]
    assert kms.requests[0].target == "TrentService.Decrypt"
    assert "Credential=AKIAEXAMPLEEXAMPLE01/" in kms.requests[0].headers["Authorization"]


def test_generate_data_key(client: KmsClient, kms: KmsStandIn) -> None:
    key = client.generate_data_key("alias/app", encryption_context={"a": "b"})
    assert len(key.plaintext) == 32
    assert key.ciphertext_blob == SEALED + key.plaintext.reveal()
    assert kms.requests[-1].body["KeySpec"] == "AES_256"
    small = client.generate_data_key("alias/app", number_of_bytes=7)
    assert len(small.plaintext) == 7
    assert kms.requests[-1].body["NumberOfBytes"] == 7
    assert len(client.generate_data_key("alias/app", key_spec="AES_128").plaintext) == 16


def test_generate_data_key_pair(client: KmsClient) -> None:
    pair = client.generate_data_key_pair("alias/app", "ECC_NIST_P256")
    private = serialization.load_der_private_key(pair.private_key.reveal(), None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == pair.public_key
    assert pair.private_key_ciphertext_blob == SEALED + pair.private_key.reveal()
    assert pair.key_pair_spec == "ECC_NIST_P256"


def test_generate_random(client: KmsClient, kms: KmsStandIn) -> None:
    random = client.generate_random(64)
    assert len(random) == 64
    assert kms.requests[-1].body["NumberOfBytes"] == 64
    assert not random.equals(client.generate_random(64))


def test_derive_shared_secret(client: KmsClient, kms: KmsStandIn) -> None:
    ours = ec.generate_private_key(ec.SECP256R1())
    public = ours.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    result = client.derive_shared_secret("alias/agree", public)
    expected = ours.exchange(ec.ECDH(), kms.agreement_key.public_key())
    assert result.shared_secret.equals(expected)
    assert result.key_agreement_algorithm == "ECDH"
    assert kms.requests[-1].body["KeyAgreementAlgorithm"] == "ECDH"


def test_results_never_show_plaintext(client: KmsClient) -> None:
    result = client.decrypt(SEALED + b"top-secret-value")
    pair = client.generate_data_key_pair("alias/app", "ECC_NIST_P256")
    for text in (repr(result), str(result), repr(pair), f"{result.plaintext}"):
        assert "top-secret-value" not in text
        assert b"top-secret-value".hex() not in text
        assert pair.private_key.reveal().hex()[:16] not in text
    with pytest.raises(TypeError):
        _ = result.plaintext == b"top-secret-value"
    assert result.plaintext.equals(b"top-secret-value")


def test_no_rsa_key_is_generated_per_call(
    kms: KmsStandIn, provider: DocumentProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = []
    real = rsa.generate_private_key

    def counting(*args: Any, **kwargs: Any) -> rsa.RSAPrivateKey:
        generated.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rsa, "generate_private_key", counting)
    monkeypatch.setattr(RecipientKey, "_default", None)
    with KmsClient(
        region="us-east-1",
        attestation=provider,
        credentials=CREDS,
        network=NetworkSettings(endpoint_url=kms.url),
    ) as client:
        assert client.recipient_key is RecipientKey.process_default()
        assert len(generated) == 1  # the process key, once
        for _ in range(3):
            client.generate_random(8)
            client.decrypt(SEALED + b"x")
    assert len(generated) == 1


# --- refusing answers that bypass the envelope ------------------------------------------------


def test_plaintext_next_to_the_envelope_is_refused(client: KmsClient, kms: KmsStandIn) -> None:
    kms.mode = "plaintext-too"
    with pytest.raises(RecipientIgnored, match="Plaintext in plaintext"):
        client.decrypt(SEALED + b"leaked")
    with pytest.raises(RecipientIgnored, match="PrivateKeyPlaintext"):
        client.generate_data_key_pair("alias/app", "ECC_NIST_P256")
    with pytest.raises(RecipientIgnored, match="SharedSecret"):
        client.derive_shared_secret(
            "alias/agree",
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


def test_an_answer_without_envelope_is_refused(client: KmsClient, kms: KmsStandIn) -> None:
    kms.mode = "no-envelope"
    with pytest.raises(RecipientIgnored, match="without CiphertextForRecipient"):
        client.generate_random(16)


# --- KMS errors: typed, actionable ------------------------------------------------------------


def test_access_denied_names_the_pcrs_we_sent(client: KmsClient, kms: KmsStandIn) -> None:
    kms.fail_next(
        1,
        "AccessDeniedException",
        message="User: arn:aws:sts::111122223333:assumed-role/parent/i-0 is not authorized",
    )
    with pytest.raises(KmsAccessDenied) as caught:
        client.decrypt(SEALED + b"x", key_id="alias/app")
    error = caught.value
    assert error.code == "AccessDeniedException"
    assert error.operation == "Decrypt"
    assert error.attested is True
    assert error.pcrs[0] == PCR0
    assert error.pcrs[8] == PCR8
    text = str(error)
    for index, value in ((0, PCR0), (1, PCR1), (2, PCR2), (8, PCR8), (3, bytes(48))):
        assert f"PCR{index}={value.hex()}" in text
    assert "is not authorized" in text  # KMS's own message is kept
    assert "request id" in text
    assert "alias/app" in text


@pytest.mark.parametrize(
    ("code", "error_type", "hint"),
    [
        ("InvalidCiphertextException", KmsInvalidCiphertext, "encryption context"),
        ("IncorrectKeyException", KmsIncorrectKey, "not the key that encrypted"),
        ("NotFoundException", KmsKeyNotFound, "us-east-1"),
        ("DisabledException", KmsKeyDisabled, "disabled"),
        ("KMSInvalidStateException", KmsKeyDisabled, "pending deletion"),
        ("UnrecognizedClientException", KmsCredentialsRejected, "role credentials"),
        ("ExpiredTokenException", KmsCredentialsRejected, "refreshed"),
        ("InvalidSignatureException", KmsCredentialsRejected, "clock"),
        ("ValidationException", KmsError, "parameter"),
        ("SomethingNewException", KmsError, "SomethingNewException"),
    ],
)
def test_kms_errors_are_typed(
    client: KmsClient, kms: KmsStandIn, code: str, error_type: type[KmsError], hint: str
) -> None:
    kms.fail_next(1, code)
    with pytest.raises(error_type, match=hint) as caught:
        client.decrypt(SEALED + b"x")
    assert type(caught.value) is error_type
    assert caught.value.code == code
    assert len(kms.requests) == 1  # not retried


def test_throttling_is_retried_with_jittered_backoff(
    client: KmsClient, kms: KmsStandIn, provider: DocumentProvider, sleeps: Sleeps
) -> None:
    kms.fail_next(2, "ThrottlingException")
    assert client.generate_random(8)
    assert len(kms.requests) == 3
    assert sleeps.pauses == [0.5 * 0.2, 0.5 * 0.4]  # uniform 0.5 of 0.2 s, 0.4 s
    assert provider.calls == 3  # a fresh document per attempt
    assert len({_sent_document(kms, i) for i in range(3)}) == 3


def test_throttling_surfaces_after_the_bounded_retries(
    kms: KmsStandIn, provider: DocumentProvider, recipient_key: RecipientKey, sleeps: Sleeps
) -> None:
    kms.fail_next(10, "ThrottlingException")
    with (
        KmsClient(
            region="us-east-1",
            attestation=provider,
            credentials=CREDS,
            recipient_key=recipient_key,
            network=NetworkSettings(endpoint_url=kms.url),
            retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=1.5),
            sleep=sleeps,
            uniform=lambda: 0.999,
        ) as client,
        pytest.raises(KmsThrottled) as caught,
    ):
        client.decrypt(SEALED + b"x")
    assert caught.value.attempts == 3
    assert len(kms.requests) == 3
    assert len(sleeps.pauses) == 2
    assert all(0 <= p <= 1.5 for p in sleeps.pauses)
    assert "3 attempts" in str(caught.value)


def test_internal_errors_are_retried(client: KmsClient, kms: KmsStandIn) -> None:
    kms.fail_next(1, "KMSInternalException", status=500)
    kms.fail_next(1, "DependencyTimeoutException", status=503)
    assert client.decrypt(SEALED + b"ok").plaintext.reveal() == b"ok"
    assert len(kms.requests) == 3


# --- the network path -------------------------------------------------------------------------


def _client(provider: DocumentProvider, key: RecipientKey, **network: Any) -> KmsClient:
    return KmsClient(
        region=network.pop("region", "us-east-1"),
        attestation=provider,
        credentials=CREDS,
        recipient_key=key,
        network=NetworkSettings(connect_timeout=2, read_timeout=5, **network),
        retry=RetryPolicy(max_attempts=1),
    )


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"])
def test_ambient_endpoint_variables_do_not_redirect_the_client(
    monkeypatch: pytest.MonkeyPatch,
    provider: DocumentProvider,
    recipient_key: RecipientKey,
    variable: str,
) -> None:
    """Only NetworkSettings.endpoint_url redirects KMS; an app's SDK variables do not."""
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    with _client(provider, recipient_key) as client:
        assert client.endpoint_url == "https://kms.us-east-1.amazonaws.com"
    with _client(provider, recipient_key, endpoint_url="http://127.0.0.1:8") as client:
        assert client.endpoint_url == "http://127.0.0.1:8"


def test_the_production_path_through_a_connect_proxy_with_tls(
    connect_proxy: ConnectProxy,
    kms_tls: KmsStandIn,
    test_ca: LocalCa,
    provider: DocumentProvider,
    recipient_key: RecipientKey,
) -> None:
    """No endpoint_url: boto3 asks the proxy for kms.us-east-1.amazonaws.com:443 and
    checks the certificate for that name against the CA bundle, end to end."""
    with _client(
        provider, recipient_key, proxy=connect_proxy.url, ca_bundle=str(test_ca.ca_pem)
    ) as client:
        assert client.endpoint_url == "https://kms.us-east-1.amazonaws.com"
        assert client.decrypt(SEALED + b"via proxy").plaintext.reveal() == b"via proxy"
        client.generate_random(4)
    assert connect_proxy.connects == ["kms.us-east-1.amazonaws.com:443"]  # one kept-alive tunnel
    assert kms_tls.requests[0].headers["Host"] == "kms.us-east-1.amazonaws.com"


def test_a_proxy_that_refuses_is_named(
    provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    with (
        _client(provider, recipient_key, proxy=proxy) as client,
        pytest.raises(ProxyUnreachable) as caught,
    ):
        client.generate_random(4)
    assert caught.value.proxy == proxy
    assert proxy in str(caught.value)
    assert "enclave-egress relay" in str(caught.value)


def test_a_proxy_that_denies_the_host_points_at_the_allowlist(
    connect_proxy: ConnectProxy,
    test_ca: LocalCa,
    provider: DocumentProvider,
    recipient_key: RecipientKey,
) -> None:
    with (
        _client(
            provider,
            recipient_key,
            region="eu-west-1",
            proxy=connect_proxy.url,
            ca_bundle=str(test_ca.ca_pem),
        ) as client,
        pytest.raises(ProxyUnreachable, match="allowlist") as caught,
    ):
        client.generate_random(4)
    assert "403" in str(caught.value)
    assert "kms.eu-west-1.amazonaws.com" in str(caught.value)


def test_tls_with_an_untrusted_certificate_names_the_ca_bundle(
    kms_tls: KmsStandIn, provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    with (
        _client(provider, recipient_key, endpoint_url=kms_tls.url) as client,
        pytest.raises(KmsTlsError) as caught,
    ):
        client.generate_random(4)
    text = str(caught.value)
    assert "CA bundle" in text
    assert "botocore's default bundle" in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert caught.value.ca_bundle is None


def test_tls_with_the_wrong_host_name_is_a_tls_error(
    kms_tls: KmsStandIn, test_ca: LocalCa, provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    with (
        _client(
            provider, recipient_key, endpoint_url=kms_tls.url, ca_bundle=str(test_ca.ca_pem)
        ) as client,
        pytest.raises(KmsTlsError, match=r"127\.0\.0\.1") as caught,
    ):
        client.generate_random(4)
    assert str(test_ca.ca_pem) in str(caught.value)


def test_a_closed_endpoint_is_unreachable_and_says_there_is_no_proxy(
    provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        _client(provider, recipient_key, endpoint_url=url) as client,
        pytest.raises(KmsUnreachable) as caught,
    ):
        client.decrypt(SEALED + b"x")
    assert type(caught.value) is KmsUnreachable
    assert "no proxy configured" in str(caught.value)
    assert caught.value.endpoint.startswith(url)


# --- credentials from the parent, end to end ------------------------------------------------


def test_credentials_from_the_parent_sign_the_requests(
    kms: KmsStandIn, provider: DocumentProvider, recipient_key: RecipientKey
) -> None:
    source = Source(Clock(datetime.now(UTC)))  # botocore's own clock reads real time
    with CredentialServer("tcp:127.0.0.1:0", source=source) as server:
        parent = ParentCredentials(server.address)
        with KmsClient(
            region="us-east-1",
            attestation=provider,
            credentials=parent,
            recipient_key=recipient_key,
            network=NetworkSettings(endpoint_url=kms.url),
        ) as client:
            assert parent.fetches == 0
            client.generate_random(4)
            client.generate_random(4)
    assert parent.fetches == 1
    assert "Credential=ASIAEXAMPLE000000001/" in kms.requests[0].headers["Authorization"]
    assert kms.requests[0].headers["X-Amz-Security-Token"]


# --- misuse -----------------------------------------------------------------------------------


def test_arguments_are_checked(client: KmsClient) -> None:
    with pytest.raises(TypeError):
        client.decrypt("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="6144"):
        client.decrypt(bytes(6145))
    with pytest.raises(ValueError, match="1 to 1024"):
        client.generate_random(0)
    with pytest.raises(TypeError):
        client.generate_random(True)
    with pytest.raises(ValueError, match="not both"):
        client.generate_data_key("k", key_spec="AES_256", number_of_bytes=32)
    with pytest.raises(ValueError, match="key_spec"):
        client.generate_data_key("k", key_spec="AES_512")
    with pytest.raises(ValueError, match="key_pair_spec"):
        client.generate_data_key_pair("k", "RSA_1024")
    with pytest.raises(TypeError, match="encryption_context"):
        client.decrypt(b"x", encryption_context={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="grant tokens"):
        client.decrypt(b"x", grant_tokens=["t"] * 11)
    with pytest.raises(TypeError):
        client.decrypt(b"x", grant_tokens="token")


def test_configuration_is_checked(provider: DocumentProvider, tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="region"):
        KmsClient(region="us east 1", attestation=provider, credentials=CREDS)
    with pytest.raises(ConfigurationError, match="CA bundle"):
        KmsClient(
            region="us-east-1",
            attestation=provider,
            credentials=CREDS,
            network=NetworkSettings(ca_bundle=str(tmp_path / "missing.pem")),
        )
    with pytest.raises(ConfigurationError, match="HTTP CONNECT"):
        NetworkSettings(proxy="https://127.0.0.1:3128")
    with pytest.raises(ConfigurationError, match="credentials"):
        NetworkSettings(proxy="http://user:pw@127.0.0.1:3128")
    with pytest.raises(ConfigurationError, match="endpoint_url"):
        NetworkSettings(endpoint_url="kms.local")
    with pytest.raises(TypeError, match="attestation"):
        KmsClient(region="us-east-1", attestation=object(), credentials=CREDS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="credentials"):
        KmsClient(region="us-east-1", attestation=provider, credentials=object())  # type: ignore[arg-type]


def test_the_recipient_key_in_the_document_is_the_one_that_opens(
    client: KmsClient, kms: KmsStandIn, recipient_key: RecipientKey
) -> None:
    client.generate_random(4)
    document = parse_attestation(_sent_document(kms))
    assert document.public_key is not None
    assert hashlib.sha256(document.public_key).digest() == recipient_key.key_id


def test_live_documents_verify_now_like_the_emulator_will(recipient_key: RecipientKey) -> None:
    """The e2e tests' provider: a PKI valid now, documents stamped now, bound to our key."""
    from datetime import timedelta

    from attested import Policy, Verifier
    from tests.kit import make_kit

    kit = make_kit(datetime.now(UTC))
    document = DocumentProvider(kit, live=True).get_attestation_document(
        public_key=recipient_key.spki_der()
    )
    verified = Verifier(trust_root=kit.root).verify(
        document,
        policy=Policy(
            pcrs={0: PCR0}, public_key=recipient_key.spki_der(), max_age=timedelta(minutes=1)
        ),
    )
    assert verified.document.public_key == recipient_key.spki_der()
