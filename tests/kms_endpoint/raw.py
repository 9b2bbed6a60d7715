"""Hand-made requests to the endpoint, for what stock SDKs never send (shape errors)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

DATE = "20260301T120000Z"
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIAENDPOINTCALLER01/20260301/us-east-1/kms/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64
)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}

    @property
    def code(self) -> str:
        return str(self.json().get("__type", ""))

    @property
    def message(self) -> str:
        doc = self.json()
        return str(doc.get("message", doc.get("Message", "")))


def headers_for(
    operation: str | None, changes: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Headers an SDK would send (the signature is well formed but signs nothing)."""
    headers: dict[str, str | None] = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Date": DATE,
        "Authorization": AUTHORIZATION,
        "X-Amz-Target": None if operation is None else f"TrentService.{operation}",
    }
    headers.update(changes or {})
    return {k: v for k, v in headers.items() if v is not None}


def send(
    port: int,
    operation: str | None,
    body: bytes | dict[str, Any] = b"{}",
    *,
    method: str = "POST",
    path: str = "/",
    changes: dict[str, str | None] | None = None,
) -> Reply:
    """One request on a new connection to 127.0.0.1:``port``."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=headers_for(operation, changes))
        response = conn.getresponse()
        return Reply(
            response.status,
            response.read(),
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()
