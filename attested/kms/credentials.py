"""AWS credentials for the KMS client: static, environment, the instance's, or the parent's.

Inside an enclave there is no instance metadata service. The parent instance holds the
role credentials (IMDSv2); its credential server (:class:`attested.parent.CredentialServer`)
hands them, with their ``Expiration``, to the enclave's :class:`ParentCredentials` over
vsock. The enclave side is a botocore refreshable credential: it asks the parent again
before the credentials expire (15 minutes before by default, blocking from 5 minutes
before).

Code that runs on an EC2 instance itself (an instance with NitroTPM, docs/nitrotpm.md)
reads the instance role's credentials from IMDSv2 with :class:`ImdsCredentials`.

Credentials never appear on a command line, in a log, or in a ``repr``.

Deprecated here: ``CredentialServer``, ``CredentialSource``, ``DEFAULT_MAX_CONNECTIONS``,
``imds_source`` and ``botocore_source`` moved to :mod:`attested.parent` (they run on the
parent); importing them from this module still works for one release, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol, runtime_checkable

from botocore.credentials import (
    Credentials,
    DeferredRefreshableCredentials,
    EnvProvider,
    InstanceMetadataProvider,
    RefreshableCredentials,
)
from botocore.exceptions import BotoCoreError
from botocore.utils import InstanceMetadataFetcher

from attested.errors import CredentialsUnavailable
from attested.kms import _credproto
from attested.kms._credproto import AwsCredentials
from attested.net import Address, parse_address

__all__ = [
    "AwsCredentials",
    "CredentialsProvider",
    "EnvironmentCredentials",
    "ImdsCredentials",
    "ParentCredentials",
    "StaticCredentials",
]

logger = logging.getLogger(__name__)

DEFAULT_PARENT_ADDRESS = "vsock:3:8001"
"""Where the enclave finds the parent's credential server by default."""


def __getattr__(name: str) -> Any:
    """The parent-side names that moved to :mod:`attested.parent`, for one release."""
    from attested.parent import _credentials

    if name not in _credentials.__all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"attested.kms.credentials.{name} moved to attested.parent.{name}; the old import "
        "goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_credentials, name)


@runtime_checkable
class CredentialsProvider(Protocol):
    """Something that gives the KMS client botocore credentials."""

    def botocore_credentials(self) -> Credentials:
        """Credentials for botocore's signer (refreshable ones refresh themselves).

        Raises:
            CredentialsUnavailable: there are none.
        """
        ...


class StaticCredentials:
    """Fixed credentials given in code. Prefer :class:`ParentCredentials` in an enclave.

    Args:
        access_key_id: the access key id.
        secret_access_key: the secret access key.
        session_token: the session token, for temporary credentials.

    Raises:
        ValueError: a value is empty or malformed.
    """

    __slots__ = ("_credentials",)

    def __init__(
        self, *, access_key_id: str, secret_access_key: str, session_token: str | None = None
    ) -> None:
        self._credentials = AwsCredentials(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
        )

    def botocore_credentials(self) -> Credentials:
        """Botocore credentials for the fixed values."""
        c = self._credentials
        return Credentials(c.access_key_id, c.secret_access_key, c.session_token, "attested-static")

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credentials!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("StaticCredentials cannot be pickled")


class EnvironmentCredentials:
    """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, read at use.

    ``AWS_CREDENTIAL_EXPIRATION``, when set, makes them refresh from the environment
    (botocore's environment provider).
    """

    __slots__ = ()

    def botocore_credentials(self) -> Credentials:
        """Botocore credentials from the environment.

        Raises:
            CredentialsUnavailable: the variables are not set.
        """
        credentials = EnvProvider(environ=os.environ).load()
        if credentials is None:
            raise CredentialsUnavailable(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set in the environment"
            )
        assert isinstance(credentials, Credentials)  # noqa: S101 - botocore's contract
        return credentials

    def __repr__(self) -> str:
        return "EnvironmentCredentials()"


def imds_fetcher(
    *, base_url: str | None = None, timeout: int = 1, attempts: int = 2
) -> InstanceMetadataFetcher:
    """Botocore's metadata fetcher, IMDSv2 only (a session token first; IMDSv1 unused).

    Shared by :class:`ImdsCredentials` (on an instance itself) and the parent's
    :func:`attested.parent.imds_source`.
    """
    options: dict[str, Any] = {"config": {"ec2_metadata_v1_disabled": True}}
    if base_url is not None:
        options["base_url"] = base_url
    return InstanceMetadataFetcher(timeout=timeout, num_attempts=attempts, **options)


def imds_unavailable(cause: BaseException | None) -> CredentialsUnavailable:
    """What to say when IMDSv2 did not answer (``cause``) or gave no role (``None``)."""
    if cause is not None:
        return CredentialsUnavailable(
            f"the instance metadata service did not answer with IMDSv2 ({cause}): check that "
            "IMDS is enabled on the instance and reachable from this process"
        )
    return CredentialsUnavailable(
        "the instance metadata service gave no role credentials: check that an IAM role "
        "(instance profile) is attached, that IMDS is enabled, and that its hop limit "
        "allows this process (2 or more inside a container)"
    )


class ImdsCredentials:
    """The instance role's credentials from IMDSv2, refreshed before they expire.

    For code that runs on the EC2 instance itself (an instance with NitroTPM); an enclave
    has no metadata service and uses :class:`ParentCredentials`. botocore's provider does
    the work: a session token first (IMDSv1 is not used), then the role's temporary
    credentials, fetched again shortly before they expire.

    Args:
        base_url: the metadata service (default ``http://169.254.169.254/``; tests point
            it at a loopback server).
        timeout: seconds per IMDS request.
        attempts: tries per IMDS request.
    """

    def __init__(self, *, base_url: str | None = None, timeout: int = 1, attempts: int = 2) -> None:
        self._fetcher = imds_fetcher(base_url=base_url, timeout=timeout, attempts=attempts)
        self._base_url = base_url
        self._lock = threading.Lock()
        self._loaded: Credentials | None = None

    def botocore_credentials(self) -> Credentials:
        """The role's refreshable credentials (fetched on first use).

        Raises:
            CredentialsUnavailable: IMDSv2 did not answer, or no role is attached.
        """
        with self._lock:
            if self._loaded is None:
                try:
                    loaded = InstanceMetadataProvider(iam_role_fetcher=self._fetcher).load()
                except BotoCoreError as exc:
                    raise imds_unavailable(exc) from None
                if not isinstance(loaded, Credentials):
                    raise imds_unavailable(None)
                self._loaded = loaded
            return self._loaded

    def __repr__(self) -> str:
        where = "" if self._base_url is None else f"base_url={self._base_url!r}"
        return f"ImdsCredentials({where})"


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise EOFError(f"connection closed with {remaining} of {size} bytes missing")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> bytes:
    length = _credproto.frame_length(_recv_exact(sock, _credproto.HEADER_SIZE))
    return _recv_exact(sock, length)


def _connect(address: Address, timeout: float) -> socket.socket:
    if address.kind == "tcp":
        return socket.create_connection(address.sockaddr(), timeout=timeout)  # type: ignore[arg-type]
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.sockaddr())
    except BaseException:
        sock.close()
        raise
    return sock


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ParentCredentials:
    """Credentials asked from the parent's credential server, refreshed before expiry.

    Nothing is fetched until the first KMS call. After that, botocore asks again when
    the credentials are within ``advisory_refresh`` of their expiration (a failure is
    logged and the current ones are kept) and blocks on a new answer within
    ``mandatory_refresh`` (a failure is raised).

    Args:
        address: the server's address; ``vsock:3:8001`` (the parent, port 8001) by
            default, ``tcp:127.0.0.1:PORT`` in tests.
        timeout: seconds for one exchange (connect, send, receive).
        clock: the current time as an aware datetime (tests inject one).
        advisory_refresh: start refreshing this long before expiry.
        mandatory_refresh: insist on refreshing this long before expiry.
        unknown_expiry_lifetime: how long to use credentials the parent sent without an
            expiration before asking again.

    Raises:
        ValueError: the address does not parse, or the refresh windows are inconsistent.
    """

    def __init__(
        self,
        address: Address | str = DEFAULT_PARENT_ADDRESS,
        *,
        timeout: float = 3.0,
        clock: Callable[[], datetime] = _utc_now,
        advisory_refresh: timedelta = timedelta(minutes=15),
        mandatory_refresh: timedelta = timedelta(minutes=5),
        unknown_expiry_lifetime: timedelta = timedelta(minutes=30),
    ) -> None:
        self.address = parse_address(address) if isinstance(address, str) else address
        if self.address.kind == "unix":
            raise ValueError("the credential server is reached over vsock or tcp")
        if not timedelta(0) <= mandatory_refresh <= advisory_refresh:
            raise ValueError("need 0 <= mandatory_refresh <= advisory_refresh")
        if unknown_expiry_lifetime <= advisory_refresh:
            raise ValueError("unknown_expiry_lifetime must be longer than advisory_refresh")
        self._timeout = timeout
        self._clock = clock
        self._advisory = advisory_refresh
        self._mandatory = mandatory_refresh
        self._unknown_lifetime = unknown_expiry_lifetime
        self._lock = threading.Lock()
        self._botocore: RefreshableCredentials | None = None
        self.fetches = 0
        """How many times the parent was asked (for tests and metrics)."""

    def fetch(self) -> AwsCredentials:
        """Ask the parent once.

        Raises:
            CredentialsUnavailable: the server is unreachable, refused us, or has none.
            MalformedError: the answer is not a valid protocol message.
        """
        where = str(self.address)
        try:
            sock = _connect(self.address, self._timeout)
        except OSError as exc:
            raise CredentialsUnavailable(
                f"could not reach the parent credential server at {where} "
                f"({exc.strerror or exc}). Check that 'attested parent' runs with the "
                "credential server on that port."
            ) from None
        try:
            with sock:
                sock.settimeout(self._timeout)
                sock.sendall(_credproto.encode_request())
                payload = _read_frame(sock)
        except TimeoutError:
            raise CredentialsUnavailable(
                f"the parent credential server at {where} did not answer within {self._timeout} s"
            ) from None
        except (EOFError, OSError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CredentialsUnavailable(
                f"the parent credential server at {where} closed the connection without an "
                f"answer ({detail}). Most likely this enclave is not among its allowed peers "
                "(check the enclave CID in the parent's configuration and its log)."
            ) from None
        self.fetches += 1
        credentials = _credproto.decode_response(payload)
        logger.debug(
            "credentials from %s, expiring %s", where, credentials.expiration or "(unknown)"
        )
        return credentials

    def _refresh(self) -> dict[str, str | None]:
        credentials = self.fetch()
        now = self._clock()
        if credentials.expiration is not None and credentials.expiration <= now:
            raise CredentialsUnavailable(
                f"the parent credential server at {self.address} sent credentials that "
                f"expired at {credentials.expiration.isoformat()} (now "
                f"{now.isoformat()}): check the parent's credential source and both clocks"
            )
        expiry = credentials.expiration or now + self._unknown_lifetime
        return {
            "access_key": credentials.access_key_id,
            "secret_key": credentials.secret_access_key,
            "token": credentials.session_token,
            "expiry_time": expiry.isoformat(),
        }

    def botocore_credentials(self) -> RefreshableCredentials:
        """One botocore refreshable credential object, fetching on first use."""
        with self._lock:
            if self._botocore is None:
                credentials = DeferredRefreshableCredentials(
                    refresh_using=self._refresh,
                    method="attested-parent",
                    time_fetcher=self._clock,
                )
                # DeferredRefreshableCredentials takes no window arguments; the
                # attributes are the ones RefreshableCredentials' constructor sets.
                windows: Any = credentials
                windows._advisory_refresh_timeout = int(self._advisory.total_seconds())
                windows._mandatory_refresh_timeout = int(self._mandatory.total_seconds())
                self._botocore = credentials
            return self._botocore

    def __repr__(self) -> str:
        return f"ParentCredentials({str(self.address)!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("ParentCredentials cannot be pickled")
