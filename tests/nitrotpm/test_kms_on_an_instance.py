"""``KmsClient`` on an EC2 instance: the native NitroTPM path, KMS, the key policy.

The provider opens the stand-in TPM's device (a pty) exactly as it opens ``/dev/tpm0``;
the KMS emulator, a real HTTP server, holds a key whose policy ``generate_nitrotpm_policy``
wrote for the simulated AMI. The instance of that AMI decrypts; an instance of another
AMI is refused, and the error names the PCR4 it presented.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from attested import emulator, pcr
from attested.document import Profile
from attested.emulator._config import dev_identities
from attested.enclave import open_provider
from attested.errors import KmsAccessDenied
from attested.keypolicy import generate_nitrotpm_policy, render_policy
from attested.keypolicy._measurements import MeasurementSet
from attested.kms import KmsClient, NetworkSettings
from attested.kms.credentials import StaticCredentials
from attested.simulator import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm
from tests.exec.support import b64, run_exec
from tests.kit import kms_client, short_directory
from tests.kms.test_credentials import SECRET as IMDS_SECRET
from tests.kms.test_credentials import TOKEN as IMDS_TOKEN
from tests.kms.test_credentials import _Imds
from tests.nitrotpm.conftest import Source
from tests.nitrotpm.standin import PtyTpm, StandInTpm

pytestmark = pytest.mark.integration

ACCOUNT = "111122223333"
# The instance role's temporary credentials, as the IMDSv2 stand-in hands them out.
INSTANCE = emulator.Identity(
    secret_access_key=IMDS_SECRET,
    arn=f"arn:aws:iam::{ACCOUNT}:role/app-instance",
    session_token=IMDS_TOKEN,
)
INSTANCE_KEY = "ASIAIMDSEXAMPLE00001"
SECRET = b"the instance's database password"


@pytest.fixture(scope="module")
def kms(source: Source) -> Iterator[tuple[str, str, bytes]]:
    """The emulator with a key for the simulated AMI; (endpoint, key ARN, ciphertext)."""
    identities = {**dev_identities(), INSTANCE_KEY: INSTANCE}
    config = emulator.EmulatorConfig(trust_root=source.trust_root, identities=identities)
    with emulator.KmsEmulator(config) as server:
        ami = MeasurementSet(
            pcrs={i: DEFAULT_NITROTPM_PCRS[i] for i in (4, 7, 12)},
            source="tpm_pcr.json",
            profile=Profile.NITROTPM,
        )
        policy = generate_nitrotpm_policy(
            account=ACCOUNT,
            instance_role=INSTANCE.arn,
            admin_role=emulator.DEV_ARN,
            measurements=[ami],
            encryptors=[emulator.DEV_ARN],  # the administrator also encrypts, in this test
        )
        admin = _boto(server.endpoint_url)
        key = admin.create_key(Policy=render_policy(policy))["KeyMetadata"]["Arn"]
        blob = admin.encrypt(KeyId=key, Plaintext=SECRET)["CiphertextBlob"]
        yield server.endpoint_url, key, blob


def _boto(url: str) -> Any:
    return kms_client(url, emulator.DEV_ACCESS_KEY_ID, emulator.DEV_SECRET_ACCESS_KEY)


@contextlib.contextmanager
def _client(device: str, url: str) -> Iterator[KmsClient]:
    """A KmsClient whose documents come from the NitroTPM at ``device``, natively."""
    with (
        open_provider("nitrotpm-device", nitrotpm_device=device) as provider,
        KmsClient(
            region="us-east-1",
            attestation=provider,
            credentials=StaticCredentials(
                access_key_id=INSTANCE_KEY,
                secret_access_key=IMDS_SECRET,
                session_token=IMDS_TOKEN,
            ),
            network=NetworkSettings(endpoint_url=url),
        ) as client,
    ):
        yield client


def test_the_instance_of_the_measured_ami_decrypts(
    pty_tpm: PtyTpm, kms: tuple[str, str, bytes]
) -> None:
    url, key, blob = kms
    with _client(pty_tpm.path, url) as client:
        assert client.decrypt(blob, key_id=key).plaintext.reveal() == SECRET
    assert pty_tpm.errors == []


def test_an_instance_of_another_ami_is_refused_naming_its_pcr4(
    source: Source, kms: tuple[str, str, bytes]
) -> None:
    url, key, blob = kms
    other = pcr.measure(b"another AMI")
    with SimulatedNitroTpm(state_dir=source.state, pcrs={**DEFAULT_NITROTPM_PCRS, 4: other}) as sim:
        served = PtyTpm(StandInTpm(source=sim))
        try:
            with _client(served.path, url) as client, pytest.raises(KmsAccessDenied) as refused:
                client.decrypt(blob, key_id=key)
        finally:
            served.close()
    assert refused.value.pcrs[4] == other
    assert f"NitroTPMPCR4={other.hex()}" in str(refused.value)


def test_attested_exec_on_an_instance_hands_the_app_its_secret(
    pty_tpm: PtyTpm, kms: tuple[str, str, bytes], imds: str
) -> None:
    """``attested exec`` as a process on an instance: the NitroTPM device for documents,
    the instance role from IMDSv2 for credentials, KMS for the secret."""
    url, key, blob = kms
    with short_directory("att-tpm-exec-") as directory:
        config = directory / "enclave.toml"
        config.write_text(
            f'region = "us-east-1"\n'
            f'[api]\nunix = "{directory / "api.sock"}"\n'
            f'[nsm]\nbackend = "nitrotpm-device"\nnitrotpm_device = "{pty_tpm.path}"\n'
            f'[kms]\nendpoint_url = "{url}"\nallowed_keys = ["{key}"]\n'
            f'[credentials]\nsource = "imds"\nimds_url = "{imds}"\n'
            f'[exec]\nloopback = false\nhosts_file = "{directory / "hosts"}"\n'
            f'[[secrets]]\nname = "db"\nciphertext = "{b64(blob)}"\nkey_id = "{key}"\n'
            'env = "DB_PASSWORD"\n'
        )
        app = ["sh", "-c", 'printf %s "$DB_PASSWORD" | sha256sum']
        run = run_exec(config, app, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert run.status == 0, run.stderr
    assert run.stdout.decode().split()[0] == hashlib.sha256(SECRET).hexdigest()
    assert IMDS_SECRET not in run.stderr
    assert "PUT /latest/api/token" in _Imds.requests  # IMDSv2
