"""A local KMS that really enforces attestation: for development and tests, never production.

>>> from attested.emulator import EmulatorConfig, KmsEmulator       # doctest: +SKIP
>>> with KmsEmulator(EmulatorConfig(trust_root=root)) as emu:        # doctest: +SKIP
...     kms = boto3.client("kms", endpoint_url=emu.endpoint_url, region_name="us-east-1",
...                        aws_access_key_id=DEV_ACCESS_KEY_ID,
...                        aws_secret_access_key=DEV_SECRET_ACCESS_KEY)

It speaks KMS's wire protocol (AWS JSON 1.1, SigV4), verifies ``Recipient`` attestation
documents against a configured trust root, evaluates key policies with the
``kms:RecipientAttestation:*`` condition keys, and answers with the same CMS envelope KMS
sends. ``docs/emulator.md`` says what it enforces and what it does not emulate.

:func:`make_dev_tls` writes a throwaway CA and server certificate to serve it over HTTPS.

The key-policy evaluator is pure and usable on its own: :func:`parse_key_policy`,
:func:`evaluate_key_policy`, :class:`PolicyRequest`, :func:`recipient_condition_values`.
"""

from __future__ import annotations

from attested.emulator._config import (
    DEV_ACCESS_KEY_ID,
    DEV_ARN,
    DEV_SECRET_ACCESS_KEY,
    EmulatorConfig,
    FaultConfig,
    load_identities,
    parse_identities,
)
from attested.emulator._devtls import DevTls, make_dev_tls
from attested.emulator._server import EmulatorStats, KmsEmulator
from attested.emulator._sigv4 import Identity
from attested.keypolicy._evaluate import (
    Decision,
    KeyPolicy,
    PolicyDecision,
    PolicyRequest,
    default_key_policy,
    encryption_context_condition_values,
    parse_key_policy,
    recipient_condition_values,
)
from attested.keypolicy._evaluate import evaluate as evaluate_key_policy

__all__ = [
    "DEV_ACCESS_KEY_ID",
    "DEV_ARN",
    "DEV_SECRET_ACCESS_KEY",
    "Decision",
    "DevTls",
    "EmulatorConfig",
    "EmulatorStats",
    "FaultConfig",
    "Identity",
    "KeyPolicy",
    "KmsEmulator",
    "PolicyDecision",
    "PolicyRequest",
    "default_key_policy",
    "encryption_context_condition_values",
    "evaluate_key_policy",
    "load_identities",
    "make_dev_tls",
    "parse_identities",
    "parse_key_policy",
    "recipient_condition_values",
]
