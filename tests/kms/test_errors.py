"""Mapping botocore exceptions, constructed as botocore raises them, to our error tree."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from attested.errors import (
    CredentialsUnavailable,
    KmsAccessDenied,
    KmsError,
    KmsThrottled,
    KmsTlsError,
    KmsUnreachable,
    ProxyUnreachable,
)
from attested.kms._errors import (
    PCRS_SHOWN,
    CallContext,
    from_client_error,
    from_transport_error,
    is_retryable,
)
from attested.simulator import SimulatedNitroTpm
from tests.kit import PCR0, Kit

ENDPOINT = "https://kms.us-east-1.amazonaws.com"


def _client_error(code: str, message: str = "KMS said no", operation: str = "Decrypt"):
    # The shape botocore's parser gives for a JSON error response.
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "RequestId": "6f3c0e1a-0000-4000-8000-000000000001",
                "HostId": "",
                "HTTPStatusCode": 400,
                "HTTPHeaders": {"x-amzn-requestid": "6f3c0e1a-0000-4000-8000-000000000001"},
                "RetryAttempts": 0,
            },
        },
        operation,
    )


def _context(**changes: object) -> CallContext:
    values: dict[str, object] = {
        "operation": "Decrypt",
        "region": "us-east-1",
        "endpoint": ENDPOINT,
    }
    values.update(changes)
    return CallContext(**values)  # type: ignore[arg-type]


def test_access_denied_lists_the_policy_pcrs_of_our_document(kit: Kit) -> None:
    document = kit.document(kit.payload(public_key=b"spki"))
    error = from_client_error(
        _client_error("AccessDeniedException"), _context(document=document, key_id="alias/x")
    )
    assert isinstance(error, KmsAccessDenied)
    assert error.attested is True
    assert set(PCRS_SHOWN) <= set(error.pcrs)
    assert error.pcrs[0] == PCR0
    assert f"PCR0={PCR0.hex()}" in str(error)
    assert "6f3c0e1a-0000-4000-8000-000000000001" in str(error)
    assert "KMS said no" in str(error)
    with pytest.raises(TypeError):
        error.pcrs[0] = b""  # type: ignore[index]


def test_access_denied_without_a_document_says_so() -> None:
    error = from_client_error(_client_error("AccessDeniedException"), _context())
    assert isinstance(error, KmsAccessDenied)
    assert error.attested is False
    assert error.pcrs == {}
    assert "no attestation document" in str(error)


def test_access_denied_for_a_debug_mode_enclave_says_so(kit: Kit) -> None:
    document = kit.document(kit.payload(pcrs={i: bytes(48) for i in range(16)}))
    error = from_client_error(_client_error("AccessDeniedException"), _context(document=document))
    assert "debug-mode" in str(error)


def test_access_denied_for_an_instance_lists_its_nitrotpm_pcrs() -> None:
    pcr4 = bytes.fromhex("4a" * 48)
    document = SimulatedNitroTpm(pcrs={4: pcr4, 12: bytes(48)}).get_attestation_document()
    error = from_client_error(_client_error("AccessDeniedException"), _context(document=document))
    assert isinstance(error, KmsAccessDenied)
    assert error.pcrs[4] == pcr4
    text = str(error)
    assert f"NitroTPMPCR4={pcr4.hex()}" in text
    assert f"NitroTPMPCR12={bytes(48).hex()}" in text
    assert "kms:RecipientAttestation:NitroTPMPCR<n>" in text
    assert "ImageSha384" not in text


def test_access_denied_with_a_broken_document_still_maps() -> None:
    error = from_client_error(
        _client_error("AccessDeniedException"), _context(document=b"\x84garbage")
    )
    assert isinstance(error, KmsAccessDenied)
    assert "does not parse" in str(error)


def test_throttled_reports_the_attempts() -> None:
    error = from_client_error(_client_error("ThrottlingException"), _context(attempts=4))
    assert isinstance(error, KmsThrottled)
    assert error.attempts == 4


def test_an_error_without_message_or_code_still_maps() -> None:
    error = from_client_error(ClientError({"Error": {}}, "GenerateRandom"), _context())
    assert type(error) is KmsError
    assert error.code == "Unknown"


def test_retryable_errors() -> None:
    assert is_retryable(_client_error("ThrottlingException"))
    assert is_retryable(_client_error("KMSInternalException"))
    assert not is_retryable(_client_error("AccessDeniedException"))
    assert is_retryable(ReadTimeoutError(endpoint_url=ENDPOINT))
    assert is_retryable(ConnectionClosedError(endpoint_url=ENDPOINT))
    assert not is_retryable(EndpointConnectionError(endpoint_url=ENDPOINT))
    assert not is_retryable(SSLError(endpoint_url=ENDPOINT, error=OSError("x")))


def test_transport_errors_map_to_unavailable() -> None:
    proxy = "http://127.0.0.1:3128"
    mapped = from_transport_error(
        ProxyConnectionError(proxy_url=proxy, error=OSError("Tunnel connection failed: 502")),
        _context(proxy=proxy),
    )
    assert isinstance(mapped, ProxyUnreachable)
    assert mapped.proxy == proxy
    assert "Tunnel connection failed: 502" in str(mapped)

    mapped = from_transport_error(
        SSLError(endpoint_url=ENDPOINT, error=OSError("certificate verify failed")),
        _context(ca_bundle="/etc/ssl/certs/ca-certificates.crt"),
    )
    assert isinstance(mapped, KmsTlsError)
    assert "/etc/ssl/certs/ca-certificates.crt" in str(mapped)
    assert "kms.us-east-1.amazonaws.com" in str(mapped)

    for exc in (
        EndpointConnectionError(endpoint_url=ENDPOINT, error=OSError("refused")),
        ConnectTimeoutError(endpoint_url=ENDPOINT, error=OSError("timed out")),
        ReadTimeoutError(endpoint_url=ENDPOINT, error=OSError("timed out")),
    ):
        mapped = from_transport_error(exc, _context())
        assert type(mapped) is KmsUnreachable
        assert mapped.endpoint == ENDPOINT

    mapped = from_transport_error(NoCredentialsError(), _context())
    assert isinstance(mapped, CredentialsUnavailable)
    assert "ParentCredentials" in str(mapped)


def test_parameter_validation_is_misuse_and_other_failures_are_unreachable() -> None:
    with pytest.raises(ValueError, match="Invalid"):
        from_transport_error(ParamValidationError(report="Invalid type"), _context())
    mapped = from_transport_error(HTTPClientError(error=OSError("reset")), _context())
    assert type(mapped) is KmsUnreachable
