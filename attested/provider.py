"""Where attestation documents come from: the protocol every NSM backend satisfies.

``nsm.NsmDevice`` (libnsm or the /dev/nsm ioctl) and the simulated NSM in
:mod:`attested.simulator` all satisfy :class:`AttestationProvider` structurally, so code
that needs documents (the KMS client, the service) depends only on this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["AttestationProvider"]


@runtime_checkable
class AttestationProvider(Protocol):
    """Something that returns signed attestation documents on request."""

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Return a fresh COSE_Sign1 attestation document carrying the given fields.

        ``None`` means the field is absent (CBOR null); ``b""`` means present and empty.

        Raises:
            attested.errors.AttestationUnavailable: no document could be obtained.
        """
        ...
