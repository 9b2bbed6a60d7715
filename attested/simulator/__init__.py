"""A simulated NSM and NitroTPM and their test PKI, for development without Nitro hardware.

Documents made here chain to a generated root, never to the AWS Nitro root, so they
cannot be mistaken for real ones by a verifier that pins the AWS root.

**Danger**: never configure a production verifier, relying party or KMS key policy to
trust a simulated root. Anyone who can read its key (``root-key.pem`` in the state
directory) can make documents with any PCRs.

>>> sim = SimulatedNsm(state_dir="/tmp/attested-sim", pcrs={0: pcr0})  # doctest: +SKIP
>>> document = sim.get_attestation_document(nonce=b"...")               # doctest: +SKIP
>>> Verifier(trust_root=sim.trust_root).verify(document, policy=...)    # doctest: +SKIP

State directory layout (shared by every process that uses the same ``DIR``):
``DIR/root.pem`` is the root certificate (the only file other tools read),
``DIR/root-key.pem`` its key (mode 0600).
"""

from __future__ import annotations

from attested.simulator._nitrotpm import DEFAULT_NITROTPM_PCRS, SimulatedNitroTpm
from attested.simulator._nsm import DEFAULT_IMAGE_PCRS, DEFAULT_INSTANCE_ID, SimulatedNsm
from attested.simulator._state import (
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    load_or_create_root,
    read_root_certificate,
)

__all__ = [
    "DEFAULT_IMAGE_PCRS",
    "DEFAULT_INSTANCE_ID",
    "DEFAULT_NITROTPM_PCRS",
    "ROOT_CERT_FILE",
    "ROOT_KEY_FILE",
    "SimulatedNitroTpm",
    "SimulatedNsm",
    "load_or_create_root",
    "read_root_certificate",
]
