"""Helpers for the service tests: an HTTP client over a Unix socket, the emulator setup."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

from attested import emulator
from attested.service._http import UnixHTTPConnection
from attested.simulator import SimulatedNsm
from tests.kit import PCR0

REGION = "us-east-1"
ACCESS_KEY = "AKIASERVICETESTKEY01"
SECRET = "service/test/SECRETKEYdoNotLogMe0123456"
SESSION_TOKEN = "service-test-session-token-doNotLogMe-987654"
PARENT = "arn:aws:iam::111122223333:role/parent"
OTHER_PCR0 = bytes.fromhex("ee" * 48)


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class ApiClient:
    """A keep-alive client of the service's API (one connection, reopened when closed)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.conn = UnixHTTPConnection(path, timeout)

    def request(
        self,
        method: str,
        route: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, route, body=body, headers=all_headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.conn.close()
            self.conn = UnixHTTPConnection(self.path, self.timeout)
            self.conn.request(method, route, body=body, headers=all_headers)
            response = self.conn.getresponse()
        data = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = UnixHTTPConnection(self.path, self.timeout)
        return Answer(response.status, data, {k.lower(): v for k, v in response.getheaders()})

    def post(self, route: str, value: Any) -> Answer:
        return self.request("POST", route, json.dumps(value).encode())

    def get(self, route: str) -> Answer:
        return self.request("GET", route)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emulator_config(
    nsm: SimulatedNsm, *, session_token: str | None = None, **faults: Any
) -> emulator.EmulatorConfig:
    identity = emulator.Identity(secret_access_key=SECRET, arn=PARENT, session_token=session_token)
    return emulator.EmulatorConfig(
        host="127.0.0.1",
        port=0,
        region=REGION,
        trust_root=nsm.trust_root,
        identities={ACCESS_KEY: identity},
        state_path=None,
        faults=emulator.FaultConfig(**faults),
        tls=None,
    )


def key_policy(pcr0_hex: str) -> str:
    """Admin calls for the parent role; the Recipient operations only with this PCR0."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": PARENT},
                    "Action": [
                        "kms:Encrypt",
                        "kms:DescribeKey",
                        "kms:GetPublicKey",
                        "kms:CreateAlias",
                        "kms:PutKeyPolicy",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "EnclaveOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": PARENT},
                    "Action": [
                        "kms:Decrypt",
                        "kms:GenerateDataKey",
                        "kms:GenerateDataKeyPair",
                        "kms:DeriveSharedSecret",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": pcr0_hex}
                    },
                },
            ],
        }
    )


__all__ = [
    "ACCESS_KEY",
    "OTHER_PCR0",
    "PCR0",
    "REGION",
    "SECRET",
    "SESSION_TOKEN",
    "Answer",
    "ApiClient",
    "emulator_config",
    "key_policy",
]
