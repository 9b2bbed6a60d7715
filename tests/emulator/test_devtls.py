"""make_dev_tls: a throwaway CA whose server certificate a real TLS client accepts."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from attested.emulator import DevTls, make_dev_tls

NAMES = ("kms.us-east-1.amazonaws.com", "127.0.0.1")


def _fetch(tls: DevTls, server_name: str, context: ssl.SSLContext) -> bytes:
    """One TLS connection over loopback to a server using ``tls``'s certificate."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls.certificate, tls.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=server_name) as client,
            ):
                return client.recv(2)
        finally:
            thread.join(10)


@pytest.mark.parametrize("name", NAMES)
def test_a_client_trusting_the_ca_accepts_every_listed_name(tmp_path: Path, name: str) -> None:
    tls = make_dev_tls(tmp_path, NAMES)
    assert tls.hosts == NAMES
    assert tls.key.stat().st_mode & 0o777 == 0o600
    assert _fetch(tls, name, tls.client_context()) == b"ok"


def test_other_names_and_other_cas_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tls = make_dev_tls(tmp_path / "a", NAMES)
    other = make_dev_tls(tmp_path / "b", NAMES)
    with pytest.raises(ssl.SSLCertVerificationError):
        _fetch(tls, "kms.eu-west-1.amazonaws.com", tls.client_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        _fetch(tls, NAMES[0], other.client_context())


def test_at_least_one_name_is_needed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        make_dev_tls(tmp_path, ())
