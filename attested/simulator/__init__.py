"""A simulated Nitro Secure Module and its test PKI, for development without Nitro hardware.

Documents made here chain to a generated root, never to the AWS Nitro root, so they
cannot be mistaken for real ones by a verifier that pins the AWS root.
"""

from __future__ import annotations

__all__: list[str] = []
