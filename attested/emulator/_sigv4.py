"""Checking AWS Signature Version 4 on received requests, with botocore's own signer.

The received request is rebuilt as a botocore ``AWSRequest`` holding exactly the headers
its ``SignedHeaders`` names, then botocore's ``SigV4Auth`` computes the canonical request,
the string to sign and the signature with the identity's secret at the request's own
``X-Amz-Date``. The two signatures are compared in constant time. Like AWS:

* an unknown access key id, or a session token that does not belong to it, is
  ``UnrecognizedClientException``;
* a wrong signature, a credential scope for another region, service or date, or a request
  time more than 5 minutes away from the emulator's clock is ``InvalidSignatureException``;
* a missing or malformed ``Authorization`` header is ``MissingAuthenticationTokenException``
  or ``IncompleteSignatureException``;
* ``SignedHeaders`` must include ``host``, ``x-amz-date``, and ``x-amz-target`` and
  ``x-amz-security-token`` when the request has them (``IncompleteSignatureException``):
  an unsigned ``X-Amz-Target`` would let a captured request run as another operation.

Not supported: presigned query-string authentication, SigV4a, chunked payload signing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from attested._aws import ASSUMED_ROLE_ARN, PRINCIPAL_ARN
from attested.kms._wire import ApiError, parse_authorization

__all__ = ["MAX_SKEW", "Caller", "Identity", "verify_sigv4"]

MAX_SKEW = timedelta(minutes=5)
"""How far a request's X-Amz-Date may be from the emulator's clock (as in AWS)."""

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_UNRECOGNIZED = "The security token included in the request is invalid."
# Headers that must be in SignedHeaders when the request has them (host always): AWS
# requires host and X-Amz-Date signed; X-Amz-Target names the operation, so an unsigned
# one would let a captured request be replayed as another operation; a session token is
# part of the credential. botocore (and every AWS SDK) signs all of them.
_MUST_SIGN = {
    "host": "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
    "x-amz-date": "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
    "x-amz-target": "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.",
    "x-amz-security-token": (
        "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Credentials the emulator accepts, and who they belong to.

    Attributes:
        secret_access_key: the secret (never shown in reprs, logs or messages).
        arn: the caller's ARN: ``arn:aws:iam::ACCOUNT:role/NAME``, ``...:user/NAME``, or
            an STS session ``arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION``.
        session_token: for temporary credentials: requests must carry exactly this token.
        principal_arn: ``aws:PrincipalArn``; defaults to ``arn``, or to the role's ARN
            (without path) for an assumed-role session.
    """

    secret_access_key: str = field(repr=False)
    arn: str
    session_token: str | None = field(default=None, repr=False)
    principal_arn: str | None = None

    def __post_init__(self) -> None:
        secret: object = self.secret_access_key
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret_access_key must be a non-empty string")
        if PRINCIPAL_ARN.fullmatch(self.arn) is None:
            raise ValueError(
                "arn must be an IAM or STS ARN with a 12-digit account, such as "
                "arn:aws:iam::111122223333:role/parent"
            )
        if self.principal_arn is None:
            session = ASSUMED_ROLE_ARN.fullmatch(self.arn)
            principal = self.arn
            if session is not None:
                principal = f"arn:{session[1]}:iam::{session[2]}:role/{session[3]}"
            object.__setattr__(self, "principal_arn", principal)

    @property
    def account(self) -> str:
        """The 12-digit account id from the ARN."""
        match = PRINCIPAL_ARN.fullmatch(self.arn)
        assert match is not None  # noqa: S101 - checked in __post_init__
        return match.group(3)


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """An authenticated caller.

    Attributes:
        access_key_id: the access key id the request was signed with.
        arn: the caller's ARN.
        principal_arn: ``aws:PrincipalArn``.
        account: the caller's account id.
    """

    access_key_id: str
    arn: str
    principal_arn: str
    account: str


def verify_sigv4(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    identities: Mapping[str, Identity],
    region: str,
    now: datetime,
    service: str = "kms",
    anyone: Identity | None = None,
) -> Caller:
    """Authenticate a request signed with SigV4.

    Args:
        method: the HTTP method.
        url: ``scheme://host/path?query`` as received (the scheme only matters to botocore
            for deciding whether the payload hash is signed; it always is here).
        headers: the received headers (names case-insensitive: pass lowercased names).
        body: the received body.
        identities: access key id to identity.
        region: the region requests must be scoped to.
        now: the emulator's time.
        service: the signing name.
        anyone: who a caller with an access key id not in ``identities`` is taken to be
            (``--accept-any-credentials``): everything is checked but the signature, which
            needs a secret the emulator does not have. **Development only.**

    Returns:
        The caller.

    Raises:
        ApiError: ``MissingAuthenticationTokenException``,
            ``IncompleteSignatureException``, ``UnrecognizedClientException`` or
            ``InvalidSignatureException``.
    """
    auth = parse_authorization(headers.get("authorization"))
    access_key_id = auth.access_key_id
    scope_date, scope_region, scope_service = auth.date, auth.region, auth.service
    shown = repr(access_key_id[:40])
    identity = identities.get(access_key_id)
    if identity is None and anyone is None:
        raise ApiError(
            "UnrecognizedClientException", _UNRECOGNIZED, note=f"unknown access key id {shown}"
        )
    token = headers.get("x-amz-security-token")
    if identity is not None and (
        (token is None) != (identity.session_token is None)
        or (
            token is not None
            and identity.session_token is not None
            and not hmac.compare_digest(token.encode(), identity.session_token.encode())
        )
    ):
        why = "a session token" if identity.session_token is None else "no or another token"
        raise ApiError(
            "UnrecognizedClientException",
            _UNRECOGNIZED,
            note=f"access key id {shown} came with {why}",
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(
            "IncompleteSignatureException",
            "Authorization header requires existence of a valid 'X-Amz-Date' header",
        ) from None
    _check_scope(scope_date, scope_region, scope_service, amz_date, region, service)
    _check_skew(when, now)
    signed = list(auth.signed_headers)
    if signed != sorted(set(signed)):
        raise ApiError("InvalidSignatureException", "SignedHeaders must be sorted and unique")
    for name in _MUST_SIGN:
        if (name == "host" or name in headers) and name not in signed:
            raise ApiError("IncompleteSignatureException", _MUST_SIGN[name])
    missing = [h for h in signed if h not in headers]
    if missing:
        raise ApiError(
            "InvalidSignatureException", f"Signed header {missing[0]!r:.60} is not in the request"
        )
    content_sha = headers.get("x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise ApiError("InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body")
    if identity is None:
        assert anyone is not None  # noqa: S101 - refused above otherwise
        return _caller(access_key_id, anyone)
    request = AWSRequest(method=method, url=url, headers={h: headers[h] for h in signed}, data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(access_key_id, identity.secret_access_key, identity.session_token),
        service,
        region,
    )
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("ascii")):
        raise ApiError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            note=f"access key id {shown}: the signature does not match its secret",
        )
    return _caller(access_key_id, identity)


def _caller(access_key_id: str, identity: Identity) -> Caller:
    assert identity.principal_arn is not None  # noqa: S101 - set in __post_init__
    return Caller(
        access_key_id=access_key_id,
        arn=identity.arn,
        principal_arn=identity.principal_arn,
        account=identity.account,
    )


def _check_scope(
    scope_date: str,
    scope_region: str,
    scope_service: str,
    amz_date: str,
    region: str,
    service: str,
) -> None:
    if scope_region != region:
        raise ApiError(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{scope_region[:40]}'. "
            f"(the emulator serves {region})",
        )
    if scope_service != service:
        raise ApiError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    if scope_date != amz_date[:8]:
        raise ApiError(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{scope_date[:8]}' != '{amz_date[:8]}'",
        )


def _check_skew(when: datetime, now: datetime) -> None:
    stamp = when.strftime(_DATE_FORMAT)
    if when < now - MAX_SKEW:
        limit = (now - MAX_SKEW).strftime(_DATE_FORMAT)
        raise ApiError(
            "InvalidSignatureException",
            f"Signature expired: {stamp} is now earlier than {limit} "
            f"({now.strftime(_DATE_FORMAT)} - 5 min.)",
        )
    if when > now + MAX_SKEW:
        limit = (now + MAX_SKEW).strftime(_DATE_FORMAT)
        raise ApiError(
            "InvalidSignatureException",
            f"Signature not yet current: {stamp} is still later than {limit} "
            f"({now.strftime(_DATE_FORMAT)} + 5 min.)",
        )
