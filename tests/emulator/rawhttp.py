"""Signed and unsigned raw HTTP requests, for what boto3 will not send."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
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
