"""Signed and unsigned raw HTTP requests, for what boto3 will not send."""

from __future__ import annotations

import http.client
import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from tests.emulator.conftest import REGION


def sign(
    endpoint: str,
    operation: str,
    body: bytes,
    *,
    access_key: str = DEV_ACCESS_KEY_ID,
    secret: str = DEV_SECRET_ACCESS_KEY,
    token: str | None = None,
    region: str = REGION,
) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"TrentService.{operation}",
        },
    )
    SigV4Auth(Credentials(access_key, secret, token), "kms", region).add_auth(request)
    return dict(request.headers.items())


def post(
    endpoint: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST / and return (status, JSON body, headers)."""
    own = connection is None
    if connection is None:
        parts = urlsplit(endpoint)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=dict(headers))
        response = connection.getresponse()
        raw = response.read()
        answer = json.loads(raw) if raw else {}
        return response.status, answer, {k.lower(): v for k, v in response.getheaders()}
    finally:
        if own:
            connection.close()


def call(
    endpoint: str, operation: str, body: bytes, **sign_args: Any
) -> tuple[int, dict[str, Any]]:
    status, answer, _ = post(endpoint, body, sign(endpoint, operation, body, **sign_args))
    return status, answer


def sign_only(
    endpoint: str,
    operation: str,
    body: bytes,
    *,
    signed: Collection[str],
    access_key: str = DEV_ACCESS_KEY_ID,
    secret: str = DEV_SECRET_ACCESS_KEY,
    region: str = REGION,
) -> dict[str, str]:
    """Headers of a correctly signed request whose SignedHeaders are only ``signed``
    (lowercase names; botocore always adds ``host``); the other headers ride unsigned."""
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"TrentService.{operation}",
        "X-Amz-Date": amz_date,
    }
    request = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=body,
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), "kms", region)
    signature = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    names = signer.signed_headers(signer.headers_to_sign(request))
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={names}, "
        f"Signature={signature}"
    )
    return headers
