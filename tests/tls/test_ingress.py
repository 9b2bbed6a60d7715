"""Attested TLS end to end over loopback: the ingress, the client hook, men in the middle.

Real parts only: the standard library's ssl on both sides, the simulated NSM, an
unmodified ``python -m http.server`` behind the ingress, TLS servers of the attacker's
own in threads, ``openssl s_client``.
"""

from __future__ import annotations

import asyncio
import http.client
import shutil
import ssl
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from attested import Policy, SecurityWarning, Verifier
from attested.errors import PeerNotAttested
from attested.net import parse_address
from attested.simulator import SimulatedNsm
from attested.tls import (
    EVIDENCE_OID,
    AttestedTlsIngress,
    PeerCheck,
    attested_context,
    fetch_fresh,
    key_binding,
)
from attested.tls._binding import spki_of
from tests.tls.support import PAGE, PCR0, self_signed, tls_server


def _port(ingress: AttestedTlsIngress) -> int:
    port = ingress.listeners[ingress.name].port
    assert port is not None
    return port


def _get(port: int, check: PeerCheck, path: str = "/") -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=attested_context(check), timeout=30
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_unmodified_app_is_served_to_a_relying_party_that_verified_the_enclave(
    ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    status, body = _get(_port(ingress_a), check_a, "/index.html")
    assert (status, body) == (200, PAGE)


def test_the_certificate_carries_a_document_binding_its_own_key(
    ingress_a: AttestedTlsIngress, enclave_a: SimulatedNsm
) -> None:
    credentials = ingress_a.credentials
    certificate = x509.load_der_x509_certificate(credentials.certificate)
    extension = certificate.extensions.get_extension_for_oid(EVIDENCE_OID)
    assert not extension.critical  # browsers and openssl ignore it
    verified = Verifier(trust_root=enclave_a.trust_root).verify(
        credentials.document, policy=Policy(pcrs={0: PCR0}, user_data=credentials.binding)
    )
    assert verified.user_data == key_binding(spki_of(certificate))


def test_the_check_uses_the_handshake_certificate_and_caches_it(
    ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    context = attested_context(check_a)
    peers = []
    for _ in range(3):
        connection = http.client.HTTPSConnection("127.0.0.1", _port(ingress_a), context=context)
        connection.connect()
        peers.append(connection.sock.attested_peer)  # type: ignore[union-attr]
        assert connection.sock.getpeercert(True) == ingress_a.credentials.certificate
        connection.close()
    assert peers[0] is peers[1] is peers[2]  # verified once, cached per certificate


def test_a_fresh_document_with_our_nonce_binds_the_same_key(
    ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", _port(ingress_a), context=attested_context(check_a), timeout=30
    )
    try:
        peer = fetch_fresh(connection, check_a)
        assert peer.attestation.nonce is not None
        assert len(peer.attestation.nonce) == 32
        connection.request("GET", "/index.html")  # the same connection goes on to the app
        assert connection.getresponse().read() == PAGE
    finally:
        connection.close()


def test_the_well_known_path_refuses_a_request_without_a_nonce(
    ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    status, body = _get(_port(ingress_a), check_a, "/.well-known/attested-tls/attestation")
    assert status == 400
    assert b"nonce" in body


def test_another_enclave_image_is_refused_naming_pcr0(
    ingress_a: AttestedTlsIngress, enclave_a: SimulatedNsm
) -> None:
    other = PeerCheck(
        Verifier(trust_root=enclave_a.trust_root), Policy(pcrs={0: bytes.fromhex("e2" * 48)})
    )
    with pytest.raises(PeerNotAttested) as refused:
        _get(_port(ingress_a), other)
    assert any(f.startswith("policy: pcr0:") for f in refused.value.failures)


def test_a_man_in_the_middle_with_its_own_certificate_gets_no_byte(
    tmp_path: Path, check_a: PeerCheck
) -> None:
    cert, key = self_signed()
    with tls_server(tmp_path, cert, key) as mitm, pytest.raises(PeerNotAttested) as refused:
        _get(mitm.port, check_a)
    assert "no attestation document is bound to the certificate" in str(refused.value)
    assert mitm.received in ([], [b""])  # the handshake ended; nothing was sent


def test_a_man_in_the_middle_carrying_a_genuine_document_of_another_key_is_refused(
    tmp_path: Path, ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    """The attacker copies enclave A's genuine document (right PCRs) into its own certificate."""
    genuine = x509.load_der_x509_certificate(ingress_a.credentials.certificate)
    copied = genuine.extensions.get_extension_for_oid(EVIDENCE_OID)
    cert, key = self_signed(extensions=[copied])
    with tls_server(tmp_path, cert, key) as mitm, pytest.raises(PeerNotAttested) as refused:
        _get(mitm.port, check_a)
    assert refused.value.failures[0].startswith(
        "binding: the attestation document binds another key"
    )
    assert len(refused.value.failures) == 1  # the document itself is genuine
    assert mitm.received in ([], [b""])


def test_a_man_in_the_middle_that_is_another_genuine_enclave_is_refused(
    enclave_b: SimulatedNsm, app_port: int, check_a: PeerCheck
) -> None:
    """Enclave B (another image) with its own attested ingress: genuine, bound, wrong PCR0."""
    ingress_b = AttestedTlsIngress(
        listen=parse_address("tcp:127.0.0.1:0"),
        to=parse_address(f"tcp:127.0.0.1:{app_port}"),
        attestation=enclave_b,
        name="enclave-b",
    )
    with ingress_b, pytest.raises(PeerNotAttested) as refused:
        _get(_port(ingress_b), check_a)
    assert [f.split(":")[:2] for f in refused.value.failures] == [["policy", " pcr0"]]


def test_a_debug_mode_enclave_is_refused_unless_allowed(sim_state: Path, app_port: int) -> None:
    zero = bytes(48)
    with SimulatedNsm(state_dir=sim_state, pcrs={0: zero}) as debug:
        ingress = AttestedTlsIngress(
            listen=parse_address("tcp:127.0.0.1:0"),
            to=parse_address(f"tcp:127.0.0.1:{app_port}"),
            attestation=debug,
        )
        verifier = Verifier(trust_root=debug.trust_root)
        with ingress:
            strict = PeerCheck(verifier, Policy(pcrs={1: debug.describe_pcr(1).value}))
            with pytest.raises(PeerNotAttested) as refused:
                _get(_port(ingress), strict)
            assert any("debug_mode" in f for f in refused.value.failures)
            with pytest.warns(SecurityWarning):
                lenient = Policy(pcrs={0: zero}, allow_debug=True)
            assert _get(_port(ingress), PeerCheck(verifier, lenient)) == (200, PAGE)


def test_a_document_whose_signing_certificate_expired_is_refused(app_port: int) -> None:
    """An NSM whose clock is 4 hours behind: its 3-hour signing certificate has expired."""
    four_hours_ago = datetime.now(UTC) - timedelta(hours=4)
    with SimulatedNsm(pcrs={0: PCR0}, clock=lambda: four_hours_ago) as old:
        ingress = AttestedTlsIngress(
            listen=parse_address("tcp:127.0.0.1:0"),
            to=parse_address(f"tcp:127.0.0.1:{app_port}"),
            attestation=old,
        )
        check = PeerCheck(Verifier(trust_root=old.trust_root), Policy(pcrs={0: PCR0}))
        with ingress, pytest.raises(PeerNotAttested) as refused:
            _get(_port(ingress), check)
    assert any(f.startswith("chain:") for f in refused.value.failures)


def test_renewal_serves_a_new_key_to_new_handshakes(
    enclave_a: SimulatedNsm, app_port: int, check_a: PeerCheck
) -> None:
    ingress = AttestedTlsIngress(
        listen=parse_address("tcp:127.0.0.1:0"),
        to=parse_address(f"tcp:127.0.0.1:{app_port}"),
        attestation=enclave_a,
    )
    with ingress:
        context = attested_context(check_a)
        before = http.client.HTTPSConnection("127.0.0.1", _port(ingress), context=context)
        before.connect()
        first = ingress.credentials.certificate
        ingress.renew()
        assert ingress.credentials.certificate != first
        after = http.client.HTTPSConnection("127.0.0.1", _port(ingress), context=context)
        after.connect()
        assert after.sock.getpeercert(True) == ingress.credentials.certificate
        # The connection made before renewal keeps working, and its fresh document
        # binds its own (old) key.
        fresh = fetch_fresh(before, check_a)
        assert fresh.certificate == first
        after.request("GET", "/index.html")
        assert after.getresponse().read() == PAGE
        before.close()
        after.close()


def test_urllib_and_asyncio_use_the_same_context(
    ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    context = attested_context(check_a)
    url = f"https://127.0.0.1:{_port(ingress_a)}/index.html"
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        assert response.read() == PAGE

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(ingress_a), ssl=context)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.attested_peer is not None
        writer.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data

    assert asyncio.run(fetch()).endswith(PAGE)


def test_asyncio_refuses_a_man_in_the_middle(tmp_path: Path, check_a: PeerCheck) -> None:
    cert, key = self_signed()

    async def connect(port: int) -> None:
        await asyncio.open_connection("127.0.0.1", port, ssl=attested_context(check_a))

    with tls_server(tmp_path, cert, key) as mitm, pytest.raises(PeerNotAttested):
        asyncio.run(connect(mitm.port))


# urllib3 cannot see that the attested check ran in the handshake, and warns.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_requests_with_the_context(
    tmp_path: Path, ingress_a: AttestedTlsIngress, check_a: PeerCheck
) -> None:
    requests = pytest.importorskip("requests")
    from requests.adapters import HTTPAdapter

    class Attested(HTTPAdapter):
        def init_poolmanager(self, *args: object, **kwargs: object) -> None:
            kwargs["ssl_context"] = attested_context(check_a)
            super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]

    cert, key = self_signed()
    with requests.Session() as session, tls_server(tmp_path, cert, key) as mitm:
        session.mount("https://", Attested())
        url = f"https://127.0.0.1:{_port(ingress_a)}/index.html"
        assert session.get(url, verify=False, timeout=30).content == PAGE
        with pytest.raises(PeerNotAttested):
            session.get(f"https://127.0.0.1:{mitm.port}/", verify=False, timeout=30)
    assert mitm.received in ([], [b""])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_reads_the_certificate(ingress_a: AttestedTlsIngress) -> None:
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{_port(ingress_a)}", "-showcerts"],
        input=b"", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert b"-----BEGIN CERTIFICATE-----" in shown.stdout, shown.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text"], input=shown.stdout, capture_output=True,
        timeout=60, check=True,
    ).stdout.decode()  # fmt: skip
    assert EVIDENCE_OID.dotted_string in text
    der = subprocess.run(
        ["openssl", "x509", "-outform", "DER"], input=shown.stdout, capture_output=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    assert der == ingress_a.credentials.certificate


def test_the_context_refuses_plain_ssl_misuse(check_a: PeerCheck) -> None:
    context = attested_context(check_a)
    assert context.verify_mode == ssl.CERT_NONE  # the attestation replaces the CA check
    with pytest.raises(ValueError, match="user_data"):
        PeerCheck(check_a.verifier, Policy(pcrs={0: PCR0}, user_data=b"x"))
