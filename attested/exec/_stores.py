"""Where ciphertexts are kept: the configuration, a file, Secrets Manager, SSM, S3.

These places only *store* a KMS ciphertext; none of them can open it. Secrets Manager,
SSM and S3 are reached with boto3 on the KMS client's own path
(:func:`attested.kms._egress.make_aws_client`): the same egress proxy, CA bundle,
credentials and timeouts, with an endpoint override each (VPC endpoints, tests).
Secrets Manager and SSM decrypt their own encryption server side, with the parent's role
and no attestation condition: the value they hold must be the KMS ciphertext made under
the attested key, so what they hand back is still only a ciphertext.

Values are bounded: a ciphertext is at most 6144 bytes (16 KiB of text in base64).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
)

from attested.errors import CredentialsUnavailable, MalformedError
from attested.exec._config import (
    MAX_CIPHERTEXT,
    CiphertextFile,
    ExecSettings,
    InlineCiphertext,
    SecretsManagerItem,
    Source,
    SsmParameter,
    decode_ciphertext_text,
)
from attested.exec._errors import StoreAccessDenied, StoreItemMissing, StoreUnavailable
from attested.kms import NetworkSettings
from attested.kms._egress import make_aws_client
from attested.kms._errors import _detail
from attested.kms.credentials import CredentialsProvider

__all__ = ["Stores", "ciphertext_from_bytes"]

log = logging.getLogger("attested.exec")

_MAX_STORED = 16 * 1024
_MISSING = {
    "ResourceNotFoundException",  # Secrets Manager
    "ParameterNotFound",  # SSM
    "ParameterVersionNotFound",
    "NoSuchKey",  # S3
    "NoSuchBucket",
    "404",
    "NotFound",
}
_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "403",
    "Forbidden",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "KMSAccessDeniedException",  # the store's own encryption key
    "DecryptionFailure",
}


def ciphertext_from_bytes(data: bytes, *, what: str = "the stored value") -> bytes:
    """A stored value as a ciphertext: base64 text if it is that, else raw bytes.

    Raises:
        MalformedError: empty, or larger than a KMS ciphertext.
    """
    if len(data) > _MAX_STORED:
        raise MalformedError(f"{what} is larger than a KMS ciphertext ({len(data)} bytes)")
    try:
        return decode_ciphertext_text(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        pass
    if not 1 <= len(data) <= MAX_CIPHERTEXT:
        raise MalformedError(
            f"{what} is not a KMS ciphertext: {len(data)} bytes, and not base64 of one"
        )
    return data


class Stores:
    """Fetches the ciphertext of each source; boto3 clients are made on first use.

    Args:
        region: the configuration's region (SSM and S3, and Secrets Manager names).
        credentials: the credentials the KMS client signs with.
        network: the KMS client's network settings (proxy, CA bundle, timeouts); the
            endpoint is replaced per service by ``settings``.
        settings: ``[exec]``, for the endpoint overrides.
    """

    def __init__(
        self,
        *,
        region: str,
        credentials: CredentialsProvider,
        network: NetworkSettings,
        settings: ExecSettings,
    ) -> None:
        self._region = region
        self._credentials = credentials
        self._network = network
        self._endpoints = {
            "secretsmanager": settings.secretsmanager_endpoint_url,
            "ssm": settings.ssm_endpoint_url,
            "s3": settings.s3_endpoint_url,
        }
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def fetch(self, source: Source) -> bytes:
        """The ciphertext ``source`` holds.

        Raises:
            StoreUnavailable: a store did not give it (a subclass says missing or denied).
            CredentialsUnavailable: no credentials to sign with.
            MalformedError: what is stored is not a KMS ciphertext.
            OSError: a ciphertext file cannot be read.
        """
        if isinstance(source, InlineCiphertext):
            return source.blob
        if isinstance(source, CiphertextFile):
            with open(source.path, "rb") as handle:
                return ciphertext_from_bytes(handle.read(_MAX_STORED + 1))
        if isinstance(source, SecretsManagerItem):
            region = source.region or self._region
            answer = self._call(
                "secretsmanager", region, source, "GetSecretValue", SecretId=source.secret_id
            )
            binary, text = answer.get("SecretBinary"), answer.get("SecretString")
            if isinstance(binary, bytes):
                return ciphertext_from_bytes(binary)
            if isinstance(text, str):
                return ciphertext_from_bytes(text.encode("utf-8", "replace"))
            raise MalformedError("the secret holds neither SecretBinary nor SecretString")
        if isinstance(source, SsmParameter):
            answer = self._call(
                "ssm", self._region, source, "GetParameter", Name=source.name, WithDecryption=True
            )
            value = answer.get("Parameter", {}).get("Value")
            if not isinstance(value, str):
                raise MalformedError("the parameter has no value")
            return ciphertext_from_bytes(value.encode("utf-8", "replace"))
        answer = self._call(
            "s3", self._region, source, "GetObject", Bucket=source.bucket, Key=source.key
        )
        body = answer["Body"]
        try:
            data = body.read(_MAX_STORED + 1)
        except BotoCoreError as exc:
            raise self._transport(exc, "s3", source) from exc
        finally:
            body.close()
        return ciphertext_from_bytes(data)

    def close(self) -> None:
        """Close the HTTPS connections."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                network = NetworkSettings(
                    endpoint_url=self._endpoints[service] or None,
                    proxy=self._network.proxy,
                    ca_bundle=self._network.ca_bundle,
                    connect_timeout=self._network.connect_timeout,
                    read_timeout=self._network.read_timeout,
                    max_pool_connections=self._network.max_pool_connections,
                )
                client = make_aws_client(
                    service,
                    region=region,
                    credentials=self._credentials.botocore_credentials(),
                    network=network,
                    attempts=3,
                )
                self._clients[(service, region)] = client
            return client

    def _call(
        self, service: str, region: str, source: Source, operation: str, **params: Any
    ) -> Any:
        client = self._client(service, region)
        method = getattr(client, _snake(operation))
        try:
            return method(**params)
        except ClientError as exc:
            raise _client_error(exc, service, operation) from exc
        except BotoCoreError as exc:
            raise self._transport(exc, service, source) from exc

    def _transport(self, exc: BotoCoreError, service: str, source: Source) -> Exception:
        region = source.region if isinstance(source, SecretsManagerItem) else None
        client = self._clients.get((service, region or self._region))
        endpoint = str(client.meta.endpoint_url) if client is not None else service
        parts = urlsplit(endpoint)
        host = parts.hostname or endpoint
        port = parts.port or 443
        proxy = self._network.proxy
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return CredentialsUnavailable(f"{service}: no AWS credentials to sign with")
        if isinstance(exc, ProxyConnectionError):
            return StoreUnavailable(
                f"the egress proxy {proxy} refused the tunnel to {host} "
                f"({_detail(exc)}); check that the parent's egress allowlist lists "
                f"{host}:{port} (each store has its own host name)",
                service=service,
            )
        via = f" through the proxy {proxy}" if proxy else " directly (no proxy configured)"
        return StoreUnavailable(
            f"could not reach {endpoint}{via} ({_detail(exc)})", service=service
        )


def _client_error(exc: ClientError, service: str, operation: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or "").strip()
    head = f"{service} {operation} failed with {code}" + (f": {message}" if message else "")
    if code in _MISSING:
        return StoreItemMissing(
            f"{head}. Check the name, the region and that the item was created",
            service=service,
            code=code,
        )
    if code in _DENIED:
        return StoreAccessDenied(
            f"{head}. The parent's role (whose credentials the enclave uses) needs "
            f"{_permission(service)} on it, and its encryption key if it has one",
            service=service,
            code=code,
        )
    return StoreUnavailable(head, service=service, code=code)


def _permission(service: str) -> str:
    return {
        "secretsmanager": "secretsmanager:GetSecretValue",
        "ssm": "ssm:GetParameter",
        "s3": "s3:GetObject",
    }[service]


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
