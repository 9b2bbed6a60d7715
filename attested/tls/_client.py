"""The relying party's side: check, during the handshake, that the peer is the enclave.

* :class:`PeerCheck` verifies the document a certificate carries (chain, signature,
  policy: :class:`attested.Verifier`) and that it binds the certificate's key; results
  are cached per certificate until the document's chain expires.
* :func:`attested_context` returns an :class:`ssl.SSLContext` whose sockets (and
  ``SSLObject`` instances, for asyncio and httpx) run the check right after the handshake and
  before returning to the caller: no application byte is sent to a peer that fails.
  It works with anything that takes a context: ``http.client``, ``urllib``,
  ``httpx.Client(verify=ctx)``, ``asyncio.open_connection(ssl=ctx)``.
* :func:`fetch_fresh` asks an attested ingress for a fresh document with a random nonce
  on the same connection, and checks it binds the same key.

The check uses the certificate this handshake presented (``getpeercert(True)``), whose
private key the peer proved it holds in the handshake; the document is never taken
from anywhere else. Certificate authorities, host names and validity dates of the TLS
certificate play no part: the attestation is the trust.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from attested.errors import MalformedError, PeerNotAttested
from attested.policy import Policy
from attested.tls._binding import (
    WELL_KNOWN_PATH,
    binding_matches,
    evidence_from_certificate,
    spki_of,
)
from attested.verify import VerifiedAttestation, Verifier

__all__ = ["AttestedPeer", "PeerCheck", "attested_context", "fetch_fresh"]

NO_ATTESTATION = (
    "binding: no attestation document is bound to the certificate (it has no "
    "attested-tls extension): the peer is not an attested enclave"
)
_MAX_FRESH_RESPONSE = 16 * 1024
_FRESH_NONCE_SIZE = 32


@dataclass(frozen=True, kw_only=True)
class AttestedPeer:
    """A peer whose certificate carried a verified document binding its key.

    Attributes:
        attestation: the verified document.
        certificate: the peer's certificate (DER) the handshake presented.
        spki_sha256: SHA-256 of the certificate's SubjectPublicKeyInfo (hex).
    """

    attestation: VerifiedAttestation
    certificate: bytes
    spki_sha256: str


class PeerCheck:
    """Verifies that a TLS certificate carries an acceptable attestation of its own key.

    Thread-safe; keep one per policy, so that results are cached per certificate.

    Args:
        verifier: checks chain and signature (its trust root: the AWS Nitro root, or a
            simulated NSM's for development).
        policy: the PCRs and other fields the enclave must attest. It must leave
            ``user_data`` and ``nonce`` unset: this check sets them.
        cache_size: certificates whose verification is remembered (0: none). A
            remembered result is used until the document's chain (or ``max_age``)
            expires.

    Raises:
        ValueError: the policy sets ``user_data`` or ``nonce``.
    """

    def __init__(self, verifier: Verifier, policy: Policy, *, cache_size: int = 128) -> None:
        if policy.user_data is not None or policy.nonce is not None:
            raise ValueError(
                "the policy must leave user_data and nonce unset: attested TLS sets "
                "user_data to the key binding, and nonce only for a fresh document"
            )
        self.verifier = verifier
        self.policy = policy
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[AttestedPeer, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def check_certificate(self, der: bytes | None) -> AttestedPeer:
        """Check the certificate a handshake presented.

        Raises:
            PeerNotAttested: with every failed check (no document, a document binding
                another key, chain, signature, policy).
        """
        if not der:
            raise PeerNotAttested(["binding: the peer presented no certificate"])
        key = hashlib.sha256(der).digest()
        now = datetime.now(UTC)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now < hit[1]:
                self._cache.move_to_end(key)
                return hit[0]
        peer = self._check(der, document=None, nonce=None, now=now)
        expires = min(c.not_valid_after_utc for c in peer.attestation.chain)
        if self.policy.max_age is not None:
            expires = min(expires, peer.attestation.timestamp + self.policy.max_age)
        if self._cache_size > 0:
            with self._lock:
                self._cache[key] = (peer, expires)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return peer

    def check_fresh(self, certificate: bytes, document: bytes, nonce: bytes) -> AttestedPeer:
        """Check a fresh document: made with ``nonce``, binding ``certificate``'s key.

        Raises:
            PeerNotAttested: with every failed check.
        """
        return self._check(certificate, document=document, nonce=nonce, now=datetime.now(UTC))

    def _check(
        self, der: bytes, *, document: bytes | None, nonce: bytes | None, now: datetime
    ) -> AttestedPeer:
        try:
            certificate, carried = evidence_from_certificate(der)
        except MalformedError as exc:
            raise PeerNotAttested([f"binding: {exc}"]) from None
        if document is None:
            if carried is None:
                raise PeerNotAttested([NO_ATTESTATION])
            document = carried
        spki = spki_of(certificate)
        try:
            report = self.verifier.check(document, policy=self.policy, at=now)
        except MalformedError as exc:
            raise PeerNotAttested([f"malformed: the attestation document: {exc}"]) from None
        failures = list(report.failures)
        if not binding_matches(report.document.user_data, spki):
            failures.insert(
                0,
                "binding: the attestation document binds another key than the one this "
                "handshake used (a copied document, or a man in the middle)",
            )
        if nonce is not None and report.document.nonce != nonce:
            failures.append("nonce: the fresh document does not carry the nonce sent")
        if failures:
            raise PeerNotAttested(failures)
        try:
            verified = self.verifier.verify(report.document, policy=self.policy, at=now)
        except Exception as exc:  # pragma: no cover - check() just passed
            raise PeerNotAttested([f"verification: {exc}"]) from None
        return AttestedPeer(
            attestation=verified,
            certificate=der,
            spki_sha256=hashlib.sha256(spki).hexdigest(),
        )


class _AttestedContext(ssl.SSLContext):
    """An SSLContext whose sockets and SSL objects check the peer after the handshake."""

    peer_check: PeerCheck


class _AttestedSocket(ssl.SSLSocket):
    """An SSLSocket that refuses a peer that is not an attested enclave, before any I/O."""

    attested_peer: AttestedPeer | None = None

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        context = self.context
        assert isinstance(context, _AttestedContext)  # noqa: S101 - set by attested_context
        try:
            self.attested_peer = context.peer_check.check_certificate(
                self.getpeercert(binary_form=True)
            )
        except PeerNotAttested:
            self.close()
            raise


class _AttestedObject(ssl.SSLObject):
    """The same check for ``SSLObject`` (asyncio streams, anyio, httpx's async client)."""

    attested_peer: AttestedPeer | None = None

    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        assert isinstance(context, _AttestedContext)  # noqa: S101 - set by attested_context
        self.attested_peer = context.peer_check.check_certificate(
            self.getpeercert(binary_form=True)
        )


_AttestedContext.sslsocket_class = _AttestedSocket
_AttestedContext.sslobject_class = _AttestedObject


def attested_context(check: PeerCheck) -> ssl.SSLContext:
    """An :class:`ssl.SSLContext` for clients that accepts only attested enclaves.

    Every handshake made with it ends with ``check.check_certificate`` on the
    certificate presented; a peer that fails raises
    :class:`~attested.errors.PeerNotAttested` from the handshake (the socket is
    closed), so the caller sends nothing. The verified peer is then
    ``sock.attested_peer``. The context does not check host names or certificate
    authorities (the attestation replaces them); keep ``check_hostname`` and
    ``verify_mode`` as they are.
    """
    context = _AttestedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.peer_check = check
    return context


def fetch_fresh(connection: http.client.HTTPSConnection, check: PeerCheck) -> AttestedPeer:
    """Ask for a fresh document with a random nonce on ``connection``'s TLS session.

    Connects if needed (running the handshake check), sends
    ``GET /.well-known/attested-tls/attestation?nonce=HEX``, and checks the answer is a
    document with that nonce binding the key of this very connection. The connection
    stays open for the next request.

    Raises:
        PeerNotAttested: the answer is not such a document.
        OSError, http.client.HTTPException: the connection failed.
    """
    nonce = secrets.token_bytes(_FRESH_NONCE_SIZE)
    if connection.sock is None:
        connection.connect()
    sock = connection.sock
    if not isinstance(sock, ssl.SSLSocket):
        raise PeerNotAttested(["binding: the connection does not use TLS"])
    certificate = sock.getpeercert(binary_form=True)
    connection.request("GET", f"{WELL_KNOWN_PATH}?nonce={nonce.hex()}")
    response = connection.getresponse()
    body = response.read(_MAX_FRESH_RESPONSE + 1)
    if response.status != 200 or len(body) > _MAX_FRESH_RESPONSE:
        raise PeerNotAttested(
            [f"fresh: the peer did not answer {WELL_KNOWN_PATH} (HTTP {response.status})"]
        )
    if not certificate:
        raise PeerNotAttested(["binding: the peer presented no certificate"])
    return check.check_fresh(certificate, body, nonce)
