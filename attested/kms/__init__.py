"""The attested KMS client: KMS answers that only this enclave can open.

Inside an enclave::

    from attested.kms import KmsClient, NetworkSettings
    from attested.kms.credentials import ParentCredentials

    kms = KmsClient(
        region="us-east-1",
        attestation=nsm_device,                     # any AttestationProvider
        credentials=ParentCredentials("vsock:3:8001"),
        network=NetworkSettings(proxy="http://127.0.0.1:3128"),
    )
    data_key = kms.generate_data_key("alias/app", key_spec="AES_256")
    data_key.plaintext.reveal()                     # bytes; repr() never shows them

Every call carries a fresh attestation document whose ``public_key`` is the process's
RSA recipient key, and the plaintext comes back only inside ``CiphertextForRecipient``,
opened here by :func:`open_envelope`. See ``docs/kms-client.md``.
"""

from __future__ import annotations

from attested.kms._egress import NetworkSettings
from attested.kms._recipient import RecipientKey, open_envelope
from attested.kms._results import DataKey, DataKeyPair, DecryptResult, Secret, SharedSecret
from attested.kms.client import KmsClient, RetryPolicy

__all__ = [
    "DataKey",
    "DataKeyPair",
    "DecryptResult",
    "KmsClient",
    "NetworkSettings",
    "RecipientKey",
    "RetryPolicy",
    "Secret",
    "SharedSecret",
    "open_envelope",
]
