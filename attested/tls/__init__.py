"""Attested TLS: relying parties talk to the enclave, and know it is the enclave.

Its job: bind an enclave's TLS key to its attestation document, serve an unmodified app
behind that TLS, and let a client check the binding in the handshake. Two sides:

* **Enclave** (:class:`AttestedTlsIngress`): a TLS-terminating ingress. It makes its
  own key in memory, asks the NSM for a document whose ``user_data`` binds the key
  (:func:`key_binding`), and serves a self-signed certificate that carries the document
  in an X.509 extension (:data:`EVIDENCE_OID`), renewed before the NSM's signing
  certificate expires. Behind it, the app speaks plain HTTP (or any client-first TCP
  protocol) on loopback. ``GET /.well-known/attested-tls/attestation?nonce=HEX``
  answers a fresh document with the client's nonce. ``attested exec`` runs it for an
  ``[[ingress]]`` with ``tls = "attested"``.
* **Relying party** (:class:`PeerCheck`, :func:`attested_context`, :func:`fetch_fresh`):
  an :class:`ssl.SSLContext` whose handshakes refuse any peer that is not an attested
  enclave matching the :class:`attested.Policy` (raising
  :class:`attested.errors.PeerNotAttested`), before any application byte is sent.
  ``attested connect`` is the command line for it.

Boundaries: the verification itself is :class:`attested.Verifier`'s (chain, signature,
policy); this package adds the binding, the certificate extension and the transport.
It does not make browsers trust the enclave (they see a self-signed certificate), and
the binding proves which image holds the key, not which host name it serves
(``docs/attested-tls.md`` has the threat model; ``docs/adr/0110-attested-tls-binding.md``
the decision). Production code: it imports no development-only package.

Example (relying party)::

    check = PeerCheck(Verifier.aws_nitro(), Policy(pcrs={0: pcr0}))
    conn = http.client.HTTPSConnection(host, 8443, context=attested_context(check))
    conn.request("GET", "/")   # raises PeerNotAttested before sending, if not the enclave
"""

from __future__ import annotations

from attested.errors import PeerNotAttested
from attested.tls._binding import BINDING_LABEL, EVIDENCE_OID, WELL_KNOWN_PATH, key_binding
from attested.tls._client import AttestedPeer, PeerCheck, attested_context, fetch_fresh
from attested.tls._server import AttestedTlsIngress, TlsCredentials, issue_credentials

__all__ = [
    "BINDING_LABEL",
    "EVIDENCE_OID",
    "WELL_KNOWN_PATH",
    "AttestedPeer",
    "AttestedTlsIngress",
    "PeerCheck",
    "PeerNotAttested",
    "TlsCredentials",
    "attested_context",
    "fetch_fresh",
    "issue_credentials",
    "key_binding",
]
