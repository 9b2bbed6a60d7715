"""egress.listen: the service runs the enclave-egress relay itself, and KMS calls use it.

Real parts end to end: the service's own CONNECT relay -> a parent-egress relay with an
allowlist -> the KMS emulator over HTTPS (a throwaway CA), loopback TCP standing in for
vsock.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from attested import emulator
from attested.errors import ConfigError
from attested.kms.credentials import StaticCredentials
from attested.net import parse_address
from attested.relay import Allowlist, ParentEgress, Relay
from attested.service import Service, ServiceConfig
from attested.simulator import SimulatedNsm
from tests.service.helpers import (
    ACCESS_KEY,
    PCR0,
    REGION,
    SECRET,
    ApiClient,
    emulator_config,
    key_policy,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def https_emu(sim_nsm: SimulatedNsm, tmp_path: Path) -> Iterator[tuple[emulator.KmsEmulator, Path]]:
    tls = emulator.make_dev_tls(tmp_path, ("127.0.0.1",))
    config = dataclasses.replace(emulator_config(sim_nsm), tls=(tls.certificate, tls.key))
    with emulator.KmsEmulator(config) as server:
        yield server, tls.ca


def test_kms_calls_go_through_the_in_process_egress_relay(
    https_emu: tuple[emulator.KmsEmulator, Path], sim_state: Path, short_dir: Path
) -> None:
    server, ca = https_emu
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    admin = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=server.endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        verify=str(ca),
        config=Config(retries={"total_max_attempts": 1}),
    )
    key = admin.create_key(Policy=key_policy(PCR0.hex()))["KeyMetadata"]["Arn"]
    blob = admin.encrypt(KeyId=key, Plaintext=b"through the relays")["CiphertextBlob"]
    admin.close()
    parent = Relay(
        [
            ParentEgress(
                listen=parse_address("tcp:127.0.0.1:0"),
                allowlist=Allowlist.of(("127.0.0.1", port)),
            )
        ]
    )
    (parent_address,) = parent.start()
    try:
        config = ServiceConfig(
            region=REGION,
            api_unix=str(short_dir / "api.sock"),
            nsm_backend="simulated",
            nsm_simulated_state=str(sim_state),
            nsm_simulated_pcrs={0: PCR0},
            kms_endpoint_url=server.endpoint_url,
            kms_ca_bundle=str(ca),
            egress_listen="tcp:127.0.0.1:0",
            egress_parent=str(parent_address),
            allowed_keys=(key,),
        )
        creds = StaticCredentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET)
        with Service(config, credentials=creds) as service:
            assert service.listeners["egress"].port
            with ApiClient(str(service.listeners["unix"].path)) as api:
                answer = api.post(
                    "/v1/decrypt",
                    {"ciphertext_blob": base64.b64encode(blob).decode(), "key_id": key},
                )
                assert answer.status == 200, answer.json()
                assert base64.b64decode(answer.json()["plaintext"]) == b"through the relays"
                metrics = api.get("/metrics").body.decode()
        assert 'attested_relay_connections_total{listener="enclave-egress"} 1' in metrics
        assert parent.stats()["parent-egress"].connections_total == 1
    finally:
        parent.stop(5.0)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"egress_listen": "tcp:0.0.0.0:3128"}, "egress.listen: 'tcp:0.0.0.0:3128' must be"),
        ({"egress_listen": "unix:/tmp/x"}, "egress.listen:"),
        ({"egress_listen": "tcp:127.0.0.1:3128", "egress_parent": "nope"}, "egress.parent:"),
        (
            {"egress_listen": "tcp:127.0.0.1:3128", "egress_parent": "unix:/tmp/p"},
            "egress.parent: the parent-egress relay is reached over vsock or tcp",
        ),
    ],
)
def test_egress_settings_are_checked(changes: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServiceConfig(allowed_keys=("*",), **changes)  # type: ignore[arg-type]
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
