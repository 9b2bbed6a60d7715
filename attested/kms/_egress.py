"""How boto3 reaches KMS from inside an enclave.

An enclave has no network interface. botocore speaks HTTPS through an HTTP CONNECT
proxy (``Config(proxies={"https": ...})``): the enclave-egress relay listens on
``127.0.0.1:3128`` inside the enclave and carries the tunnel over vsock to the parent,
which connects to ``kms.<region>.amazonaws.com:443``. TLS runs end to end inside the
tunnel: botocore sends SNI ``kms.<region>.amazonaws.com`` and verifies the real
certificate and host name, so the parent sees only ciphertext. No ``/etc/hosts``
edits, no DNS inside the enclave (the proxy resolves the name).

For the emulator or a test server, ``endpoint_url`` replaces the AWS endpoint. Other
services an enclave reads (``attested exec`` fetches stored ciphertexts from Secrets
Manager, SSM and S3) take the same path: :func:`make_aws_client`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials

from attested import __version__
from attested.errors import ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["NetworkSettings", "make_aws_client", "make_boto_client"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSettings:
    """Where and how the KMS client connects.

    Attributes:
        endpoint_url: replaces ``https://kms.<region>.amazonaws.com`` (the emulator, a
            VPC endpoint). ``None`` for AWS's regional endpoint.
        proxy: ``http://HOST:PORT`` of an HTTP CONNECT proxy for HTTPS (inside an
            enclave: the enclave-egress relay, e.g. ``http://127.0.0.1:3128``). ``None``
            connects directly (botocore may still honour ``HTTPS_PROXY``).
        ca_bundle: PEM file of CA certificates to verify KMS's certificate with;
            ``None`` uses botocore's default bundle (certifi when installed).
        connect_timeout: seconds to connect (proxy included).
        read_timeout: seconds to wait for an answer.
        max_pool_connections: HTTPS connections kept open. Keep it small: each one
            holds one worker of the parent's relay.

    Raises:
        ConfigurationError: a URL or timeout is not valid.
    """

    endpoint_url: str | None = None
    proxy: str | None = None
    ca_bundle: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_pool_connections: int = 4

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parts = _split(self.endpoint_url)
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"endpoint_url {_shown(self.endpoint_url)} must be an http:// or https:// URL"
                )
        if self.proxy is not None:
            parts = _split(self.proxy)
            if parts is not None and (parts.username or parts.password):
                raise ConfigurationError("proxy must not carry credentials in its URL")
            if parts is None or parts.scheme != "http" or not parts.hostname or not parts.port:
                raise ConfigurationError(
                    f"proxy {_shown(self.proxy)} must be http://HOST:PORT (an HTTP CONNECT proxy)"
                )
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 600:
                raise ConfigurationError(f"{name} must be between 0 and 600 seconds")
        pool: object = self.max_pool_connections
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
            raise ConfigurationError("max_pool_connections must be a positive integer")

    def check_files(self) -> None:
        """Check what only this machine can tell: the CA bundle file exists.

        Done when a client is built; a configuration loader calls it earlier.

        Raises:
            ConfigurationError: ``ca_bundle`` is not a file.
        """
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise ConfigurationError(
                f"CA bundle {self.ca_bundle!r:.200} does not exist or is not a file"
            )


def _split(url: object) -> SplitResult | None:
    """``url`` split into its parts, or ``None`` when it is not a URL with a valid port.

    ``urlsplit`` raises ``ValueError`` for a bad bracketed host (``http://[::1``,
    ``http://[x]:80``) and ``.port`` for a port that is not a number or out of range.
    """
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return parts


def _shown(url: str) -> str:
    """``url`` for a message: user information removed, at most 200 characters."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "***@" + authority.rpartition("@")[2]
        url = f"{scheme}{sep}{authority}{slash}{path}"
    return f"{url!r:.200}"


class _GivenCredentials(CredentialProvider):
    """A botocore credential provider that returns one credentials object."""

    METHOD = "attested"
    CANONICAL_NAME = "attested"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def make_boto_client(
    *, region: str, credentials: Credentials, network: NetworkSettings
) -> KMSClient:
    """A boto3 KMS client for ``network``, signing with ``credentials``; retries off.

    Raises:
        ConfigurationError: the CA bundle file does not exist.
    """
    client: KMSClient = make_aws_client(
        "kms", region=region, credentials=credentials, network=network
    )
    return client


_IGNORE_CONFIGURED_ENDPOINTS: dict[str, Any] = {"ignore_configured_endpoint_urls": True}


def make_aws_client(
    service: str,
    *,
    region: str,
    credentials: Credentials,
    network: NetworkSettings,
    attempts: int = 1,
) -> Any:
    """A boto3 client of ``service`` for ``network``, signing with ``credentials``.

    ``attempts`` is botocore's ``total_max_attempts`` (standard mode); 1, for KMS, whose
    client retries itself with a fresh attestation document.

    Raises:
        ConfigurationError: the CA bundle file does not exist.
    """
    network.check_files()
    core = botocore.session.Session()
    core.register_component(
        "credential_provider", CredentialResolver(providers=[_GivenCredentials(credentials)])
    )
    config = Config(
        region_name=region,
        connect_timeout=network.connect_timeout,
        read_timeout=network.read_timeout,
        max_pool_connections=network.max_pool_connections,
        # The KMS client retries itself (jittered, with a fresh attestation document).
        retries={"total_max_attempts": attempts, "mode": "standard"},
        proxies={"https": network.proxy} if network.proxy else None,
        user_agent_extra=f"attested/{__version__}",
        tcp_keepalive=True,
        # Only network.endpoint_url redirects KMS: AWS_ENDPOINT_URL(_KMS) and the config
        # file's endpoint_url are for the app's SDKs (attested exec points them at the
        # in-enclave KMS endpoint), and must never silently send the service elsewhere.
        # botocore has it since 1.31.3 (we need 1.34.126); botocore-stubs lags behind,
        # so it goes in by name, which type-checks whether or not the stubs know it.
        **_IGNORE_CONFIGURED_ENDPOINTS,
    )
    session = boto3.session.Session(botocore_session=core, region_name=region)
    return session.client(
        service,  # type: ignore[call-overload]
        region_name=region,
        endpoint_url=network.endpoint_url,
        verify=network.ca_bundle if network.ca_bundle is not None else True,
        config=config,
    )
