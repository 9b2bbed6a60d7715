"""Package data: the pinned AWS Nitro Enclaves Root-G1 certificate.

``aws_nitro_root_g1.pem`` was taken from the AWS Nitro Enclaves documentation's root
bundle (byte-identical copies in hf/nitrite, evervault/attestation-doc-validation and
MystenLabs/fastcrypto). Its SHA-256 fingerprint is pinned in :mod:`attested.trust`.

``example_attestation.cbor`` is a real document from Nitro hardware (2024-12-13,
ap-south-1), from marlinprotocol/oyster-monorepo ``sdks/rs/src/testcases/aws.bin`` at
commit 366b61f4; ``tests/vectors/attestation/real_attestation_marlin.json`` holds its
provenance and decoded values. The demo verifies it.
"""
