"""Credential providers and the parent-to-enclave channel over real loopback sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from botocore.credentials import Credentials, RefreshableCredentials

from attested.errors import ConfigurationError, CredentialsUnavailable, MalformedError
from attested.kms import _credproto as proto
from attested.kms.credentials import (
    AwsCredentials,
    EnvironmentCredentials,
    ImdsCredentials,
    ParentCredentials,
    StaticCredentials,
)
from attested.net import parse_address
from attested.parent import CredentialServer, botocore_source, imds_source

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN+/="
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Source:
    """Hands out numbered credentials expiring ``lifetime`` after the clock's now."""

    def __init__(self, clock: Clock, lifetime: timedelta | None = timedelta(hours=1)) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0

    def __call__(self) -> AwsCredentials:
        self.calls += 1
        return AwsCredentials(
            access_key_id=f"ASIAEXAMPLE{self.calls:09d}",
            secret_access_key=SECRET,
            session_token=TOKEN,
            expiration=None if self.lifetime is None else self.clock.now + self.lifetime,
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> Source:
    return Source(clock)


@pytest.fixture
def server(source: Source) -> Iterator[CredentialServer]:
    with CredentialServer("tcp:127.0.0.1:0", source=source) as running:
        yield running


# --- the protocol --------------------------------------------------------------------------


def test_credentials_survive_the_protocol() -> None:
    original = AwsCredentials(
        access_key_id="ASIAEXAMPLEEXAMPLE01",
        secret_access_key=SECRET,
        session_token=TOKEN,
        expiration=T0,
    )
    frame = proto.encode_credentials(original)
    assert proto.frame_length(frame[:4]) == len(frame) - 4
    assert proto.decode_response(frame[4:]) == original


def test_requests_round_trip_and_other_types_are_refused() -> None:
    frame = proto.encode_request()
    proto.decode_request(frame[4:])
    with pytest.raises(MalformedError, match="request type"):
        proto.decode_request(b'{"version":1,"type":"put"}')


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"version":2,"type":"get"}', "version 2 is not supported"),
        (b'{"version":"1","type":"get"}', "must be an integer"),
        (b'{"version":true,"type":"get"}', "must be an integer"),
        (b'{"version":1,"type":"get","type":"get"}', "duplicate key"),
        (b'{"version":1,"type":"get","x":1}', "unexpected keys"),
        (b'{"version":NaN,"type":"get"}', "NaN is not allowed"),
        (b"[1]", "must be an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"version":1,', "not valid JSON"),
    ],
)
def test_requests_are_parsed_strictly(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedError, match=reason):
        proto.decode_request(payload)


def _response(**changes: Any) -> bytes:
    message: dict[str, Any] = {
        "version": 1,
        "type": "credentials",
        "access_key_id": "ASIAEXAMPLEEXAMPLE01",
        "secret_access_key": SECRET,
        "session_token": TOKEN,
        "expiration": "2026-03-01T13:00:00Z",
    }
    message.update(changes)
    return json.dumps({k: v for k, v in message.items() if v != "DROP"}).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"access_key_id": "short"}, "access_key_id"),
        ({"access_key_id": "AKIA EXAMPLE EXAMPLE"}, "access_key_id"),
        ({"secret_access_key": ""}, "secret_access_key"),
        ({"secret_access_key": "has space in it"}, "secret_access_key"),
        ({"session_token": "x" * 9000}, "session_token"),
        ({"expiration": "2026-03-01T13:00:00"}, "no time zone"),
        ({"expiration": "tomorrow"}, "not an RFC 3339"),
        ({"expiration": 1772370000}, "RFC 3339 string"),
        ({"session_token": "DROP"}, "missing"),
        ({"extra": 1}, "unexpected keys"),
        ({"type": "credential"}, "unknown response type"),
    ],
)
def test_responses_are_parsed_strictly(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedError, match=reason):
        proto.decode_response(_response(**changes))


def test_an_error_response_is_credentials_unavailable() -> None:
    frame = proto.encode_error("no role attached\x1b[31m")
    with pytest.raises(CredentialsUnavailable, match=r"no role attached\?\[31m"):
        proto.decode_response(frame[4:])


def test_frames_beyond_the_cap_are_refused() -> None:
    with pytest.raises(MalformedError, match="outside"):
        proto.frame_length((proto.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="exceeds"):
        proto.encode_error("x" * 10) and proto._frame({"x": "y" * proto.MAX_FRAME})


# --- redaction -----------------------------------------------------------------------------


def test_credentials_never_show_their_secrets() -> None:
    creds = AwsCredentials(
        access_key_id="ASIAEXAMPLEEXAMPLE01", secret_access_key=SECRET, session_token=TOKEN
    )
    static = StaticCredentials(
        access_key_id="ASIAEXAMPLEEXAMPLE01", secret_access_key=SECRET, session_token=TOKEN
    )
    for text in (repr(creds), str(creds), repr(static), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert TOKEN not in text
        assert "ASIAEXAMPLEEXAMPLE01" not in text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    with pytest.raises(TypeError):
        pickle.dumps(static)


def test_static_credentials_give_botocore_the_values() -> None:
    static = StaticCredentials(
        access_key_id="AKIAEXAMPLEEXAMPLE01", secret_access_key=SECRET, session_token=None
    )
    frozen = static.botocore_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIAEXAMPLEEXAMPLE01",
        SECRET,
        None,
    )


def test_environment_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CredentialsUnavailable, match="AWS_ACCESS_KEY_ID"):
        EnvironmentCredentials().botocore_credentials()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    frozen = EnvironmentCredentials().botocore_credentials().get_frozen_credentials()
    assert frozen.access_key == "AKIAEXAMPLEEXAMPLE01"
    assert frozen.secret_key == SECRET


# --- the channel over loopback ---------------------------------------------------------------


def test_the_enclave_gets_credentials_from_the_parent(
    server: CredentialServer, source: Source
) -> None:
    parent = ParentCredentials(server.address)
    got = parent.fetch()
    assert got.access_key_id == "ASIAEXAMPLE000000001"
    assert got.secret_access_key == SECRET
    assert got.session_token == TOKEN
    assert got.expiration == T0 + timedelta(hours=1)
    assert source.calls == 1
    assert server.served == 1


def test_refresh_follows_the_expiration_with_an_injected_clock(
    server: CredentialServer, source: Source, clock: Clock
) -> None:
    parent = ParentCredentials(server.address, clock=clock)
    creds = parent.botocore_credentials()
    assert isinstance(creds, RefreshableCredentials)
    assert parent.fetches == 0  # nothing is fetched before first use

    assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000001"
    assert parent.fetches == 1
    expiry = T0 + timedelta(hours=1)

    clock.now = expiry - timedelta(minutes=20)  # outside both refresh windows
    assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000001"
    assert parent.fetches == 1

    clock.now = expiry - timedelta(minutes=14)  # inside the advisory window
    assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000002"
    assert parent.fetches == 2
    expiry = clock.now + timedelta(hours=1)

    clock.now = expiry - timedelta(minutes=4)  # inside the mandatory window
    assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000003"
    assert parent.fetches == 3


def test_an_unreachable_parent_is_tolerated_early_and_raised_late(
    source: Source, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = CredentialServer("tcp:127.0.0.1:0", source=source).start()
    address = server.address
    parent = ParentCredentials(address, clock=clock)
    creds = parent.botocore_credentials()
    assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000001"
    server.stop()  # the parent goes away

    clock.now = T0 + timedelta(minutes=50)  # advisory: keep the current ones, log it
    with caplog.at_level(logging.WARNING):
        assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000001"
    assert "advisory" in caplog.text
    assert SECRET not in caplog.text

    clock.now = T0 + timedelta(minutes=57)  # mandatory: the failure surfaces
    with pytest.raises(CredentialsUnavailable, match="could not reach the parent"):
        creds.get_frozen_credentials()


def test_credentials_without_expiration_are_asked_again_later(clock: Clock) -> None:
    source = Source(clock, lifetime=None)
    with CredentialServer("tcp:127.0.0.1:0", source=source) as server:
        parent = ParentCredentials(
            server.address, clock=clock, unknown_expiry_lifetime=timedelta(minutes=30)
        )
        creds = parent.botocore_credentials()
        creds.get_frozen_credentials()
        clock.now += timedelta(minutes=10)
        creds.get_frozen_credentials()
        assert parent.fetches == 1
        clock.now += timedelta(minutes=10)  # 10 minutes left of 30: advisory window
        assert creds.get_frozen_credentials().access_key == "ASIAEXAMPLE000000002"


def test_a_peer_that_is_not_allowed_gets_nothing(source: Source) -> None:
    with CredentialServer("tcp:127.0.0.1:0", source=source, allowed_peers=["127.0.0.2"]) as srv:
        with pytest.raises(CredentialsUnavailable, match="not among its allowed peers"):
            ParentCredentials(srv.address).fetch()
        assert source.calls == 0
        assert srv.refused == 1


def test_an_allowed_non_default_peer_is_served(source: Source) -> None:
    with CredentialServer("tcp:127.0.0.2:0", source=source, allowed_peers=["127.0.0.3"]) as srv:
        sock = socket.socket()
        sock.bind(("127.0.0.3", 0))
        sock.connect(srv.address.sockaddr())
        with sock:
            sock.sendall(proto.encode_request())
            header = sock.recv(4)
            payload = b""
            length = proto.frame_length(header)
            while len(payload) < length:
                payload += sock.recv(length - len(payload))
        assert proto.decode_response(payload).access_key_id == "ASIAEXAMPLE000000001"


def test_a_failing_source_is_reported_without_details(clock: Clock) -> None:
    def broken() -> AwsCredentials:
        raise RuntimeError(f"boom {SECRET}")

    with CredentialServer("tcp:127.0.0.1:0", source=broken) as server:
        with pytest.raises(CredentialsUnavailable, match="RuntimeError") as caught:
            ParentCredentials(server.address).fetch()
        assert SECRET not in str(caught.value)
        # and the server keeps serving
        with pytest.raises(CredentialsUnavailable):
            ParentCredentials(server.address).fetch()


def test_a_garbage_request_is_dropped_and_the_server_survives(
    server: CredentialServer,
) -> None:
    with socket.create_connection(server.address.sockaddr(), timeout=2) as sock:  # type: ignore[arg-type]
        sock.sendall(b"\x00\x00\x00\x05hello")
        assert sock.recv(10) == b""  # closed without an answer
    with socket.create_connection(server.address.sockaddr(), timeout=2) as sock:  # type: ignore[arg-type]
        sock.sendall(b"\xff\xff\xff\xff")  # a length far beyond the cap
        assert sock.recv(10) == b""
    assert ParentCredentials(server.address).fetch().access_key_id.startswith("ASIA")


class Drippers:
    """Peers that open a request frame of the largest size and send it a byte at a time."""

    def __init__(self, server: CredentialServer, count: int) -> None:
        self.socks = [
            socket.create_connection(server.address.sockaddr(), timeout=5)  # type: ignore[arg-type]
            for _ in range(count)
        ]
        self.connected_at = time.monotonic()
        self.frame = struct.pack(">I", proto.MAX_FRAME) + b" " * proto.MAX_FRAME
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, name="test-drippers")
        self._thread.start()

    def _drip(self) -> None:
        sent = 0
        live = list(self.socks)
        while live and not self._stop.wait(0.05):
            for sock in list(live):
                try:
                    sock.send(self.frame[sent : sent + 1])
                except OSError:
                    live.remove(sock)  # the server closed it
            sent += 1

    def all_open(self) -> bool:
        """Whether the server has closed none of them yet (nothing to read, no EOF)."""
        for sock in self.socks:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    return False
            except BlockingIOError:
                continue
            except OSError:
                return False
            finally:
                sock.setblocking(True)
        return True

    def wait_closed(self, within: float) -> list[float]:
        """Seconds from connecting until the server closed each one."""
        closed = []
        end = time.monotonic() + within
        for sock in self.socks:
            sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, BrokenPipeError):
                pass
            closed.append(time.monotonic() - self.connected_at)
        return closed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def test_slow_peers_do_not_delay_a_real_fetch(source: Source) -> None:
    """Regression: one allowed peer dripping a 16 KiB frame delayed a fetch by 23.5 s."""
    deadline, cap = 6.0, 8
    with CredentialServer(
        "tcp:127.0.0.1:0", source=source, timeout=deadline, max_connections=cap
    ) as server:
        drippers = Drippers(server, cap - 1)  # K = 7 drippers; the fetch takes the last slot
        try:
            time.sleep(0.3)  # let them start dripping
            start = time.monotonic()
            credentials = ParentCredentials(server.address, timeout=5.0).fetch()
            elapsed = time.monotonic() - start
            assert credentials.access_key_id == "ASIAEXAMPLE000000001"
            assert elapsed < 5.0
            assert drippers.all_open(), "the drippers were cut before the fetch was answered"
            # Each dripper is cut at the whole-request deadline, although it keeps sending.
            closed = drippers.wait_closed(within=deadline + 20)
            assert all(deadline - 0.5 <= seconds < deadline + 20 for seconds in closed), closed
        finally:
            drippers.stop()
        assert server.timed_out == cap - 1
        assert server.served == 1


def test_past_the_connection_cap_a_fetch_is_told_the_server_is_busy(source: Source) -> None:
    with CredentialServer(
        "tcp:127.0.0.1:0", source=source, timeout=30.0, max_connections=2
    ) as server:
        drippers = Drippers(server, 2)
        try:
            time.sleep(0.3)
            with pytest.raises(CredentialsUnavailable, match="busy") as caught:
                ParentCredentials(server.address, timeout=5.0).fetch()
            assert "2 connections open" in str(caught.value)
            assert server.busy == 1
            assert drippers.all_open()
        finally:
            drippers.stop()
        # the drippers gone, the server answers again
        end = time.monotonic() + 10
        while True:
            try:
                assert ParentCredentials(server.address).fetch().access_key_id.startswith("ASIA")
                break
            except CredentialsUnavailable:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)


def test_a_malformed_answer_is_a_malformed_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"\x00\x00\x00\x02{}")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        address = parse_address(f"tcp:127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(MalformedError, match="version"):
            ParentCredentials(address).fetch()
    finally:
        thread.join()
        listener.close()


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="CID"):
        CredentialServer("vsock:ANY:8001", source=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="must be a CID"):
        CredentialServer("vsock:ANY:8001", source=Source(Clock()), allowed_peers=["16"])
    with pytest.raises(ConfigurationError, match="IP address"):
        CredentialServer("tcp:127.0.0.1:0", source=Source(Clock()), allowed_peers=["enclave"])
    with pytest.raises(ConfigurationError, match="empty"):
        CredentialServer("tcp:127.0.0.1:0", source=Source(Clock()), allowed_peers=[])
    with pytest.raises(ConfigurationError, match="vsock or tcp"):
        CredentialServer("unix:/tmp/x", source=Source(Clock()))
    with pytest.raises(ValueError, match="mandatory_refresh"):
        ParentCredentials("tcp:127.0.0.1:1", mandatory_refresh=timedelta(hours=1))
    assert ParentCredentials().address == parse_address("vsock:3:8001")


# --- sources on the parent -------------------------------------------------------------------


class _Imds(BaseHTTPRequestHandler):
    """IMDSv2: PUT a token, then GET with it; GET without a token is refused (401)."""

    protocol_version = "HTTP/1.1"
    expiration = "2026-03-01T18:00:00Z"
    role = b"parent-role"
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.requests.append(f"PUT {self.path}")
        if self.path == "/latest/api/token" and self.headers.get(
            "x-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._send(200, b"imds-token")
        else:
            self._send(400, b"")

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        if self.headers.get("x-aws-ec2-metadata-token") != "imds-token":
            self._send(401, b"")
        elif self.path == "/latest/meta-data/iam/security-credentials/":
            self._send(200 if self.role else 404, self.role)
        elif self.path == "/latest/meta-data/iam/security-credentials/parent-role":
            body = {
                "Code": "Success",
                "AccessKeyId": "ASIAIMDSEXAMPLE00001",
                "SecretAccessKey": SECRET,
                "Token": TOKEN,
                "Expiration": self.expiration,
            }
            self._send(200, json.dumps(body).encode())
        else:
            self._send(404, b"")


@contextlib.contextmanager
def serve_imds(handler: type[_Imds] = _Imds) -> Iterator[str]:
    """Run an IMDSv2 stand-in on loopback whose role credentials expire in 6 hours; its URL.

    (botocore extends credentials IMDS says are expired, so they expire in the real future.)
    """
    handler.expiration = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False  # server_close() joins the request threads
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def imds() -> Iterator[str]:
    with serve_imds() as url:
        yield url


def test_imds_source_uses_imdsv2_and_keeps_the_expiration(imds: str) -> None:
    got = imds_source(base_url=imds)()
    assert got.access_key_id == "ASIAIMDSEXAMPLE00001"
    assert got.secret_access_key == SECRET
    assert got.expiration == datetime.fromisoformat(_Imds.expiration)
    assert _Imds.requests[0] == "PUT /latest/api/token"


def test_imds_credentials_reach_the_enclave_with_their_expiration(imds: str) -> None:
    with CredentialServer("tcp:127.0.0.1:0", source=imds_source(base_url=imds)) as server:
        got = ParentCredentials(server.address).fetch()
    assert got.access_key_id == "ASIAIMDSEXAMPLE00001"
    assert got.expiration == datetime.fromisoformat(_Imds.expiration)


def test_unreachable_imds_is_credentials_unavailable() -> None:
    from tests.kms.servers import closed_port

    source = imds_source(base_url=f"http://127.0.0.1:{closed_port()}/", attempts=1)
    with pytest.raises(CredentialsUnavailable, match="IMDSv2"):
        source()


def test_botocore_source_sends_the_expiration_of_refreshable_credentials() -> None:
    expiry = datetime.now(UTC) + timedelta(hours=2)
    refreshable = RefreshableCredentials(
        "ASIABOTOEXAMPLE00001", SECRET, TOKEN, expiry, refresh_using=lambda: {}, method="test"
    )
    got = botocore_source(refreshable)()
    assert got.access_key_id == "ASIABOTOEXAMPLE00001"
    assert got.expiration == expiry
    plain = botocore_source(Credentials("AKIABOTOEXAMPLE00001", SECRET))()
    assert plain.expiration is None
    assert plain.session_token is None


def test_botocore_default_chain_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    assert botocore_source()().access_key_id == "AKIAENVEXAMPLE000001"


def test_expired_credentials_from_the_parent_are_refused(clock: Clock) -> None:
    source = Source(clock, lifetime=timedelta(hours=1))
    with CredentialServer("tcp:127.0.0.1:0", source=source) as server:
        parent = ParentCredentials(server.address, clock=Clock(T0 + timedelta(hours=2)))
        with pytest.raises(CredentialsUnavailable, match="expired at"):
            parent.botocore_credentials().get_frozen_credentials()


def test_imds_without_a_role_says_to_attach_one(imds: str) -> None:
    _Imds.role = b""
    try:
        with pytest.raises(CredentialsUnavailable, match="IAM role"):
            imds_source(base_url=imds, attempts=1)()
    finally:
        _Imds.role = b"parent-role"


def test_imds_credentials_on_the_instance_itself(imds: str) -> None:
    """An instance (not an enclave) reads its role's credentials from IMDSv2 directly."""
    provider = ImdsCredentials(base_url=imds)
    frozen = provider.botocore_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "ASIAIMDSEXAMPLE00001",
        SECRET,
        TOKEN,
    )
    assert _Imds.requests[0] == "PUT /latest/api/token"  # IMDSv2: a token first
    assert provider.botocore_credentials() is provider.botocore_credentials()  # one load
    assert SECRET not in repr(provider)
    assert TOKEN not in repr(provider)


def test_imds_credentials_without_a_role_or_a_service_are_unavailable(imds: str) -> None:
    from tests.kms.servers import closed_port

    _Imds.role = b""
    try:
        with pytest.raises(CredentialsUnavailable, match="IAM role"):
            ImdsCredentials(base_url=imds, attempts=1).botocore_credentials()
    finally:
        _Imds.role = b"parent-role"
    gone = ImdsCredentials(base_url=f"http://127.0.0.1:{closed_port()}/", attempts=1)
    with pytest.raises(CredentialsUnavailable):
        gone.botocore_credentials()


def test_peer_rules_for_vsock_and_mapped_addresses(clock: Clock) -> None:
    """No vsock on CI machines: the rule itself, with the peer tuples the kernel gives."""
    vsock = CredentialServer("vsock:ANY:8001", source=Source(clock), allowed_peers=[16])
    assert vsock._peer_allowed((16, 1034))
    assert not vsock._peer_allowed((17, 1034))
    assert not vsock._peer_allowed((3, 1034))  # not even the parent itself
    tcp = CredentialServer("tcp:[::]:0", source=Source(clock), allowed_peers=["127.0.0.1"])
    assert tcp._peer_allowed(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not tcp._peer_allowed(("::1", 5000, 0, 0))
    assert not tcp._peer_allowed(("not-an-ip", 1))


# --- the move to attested.parent -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CredentialServer",
        "CredentialSource",
        "DEFAULT_MAX_CONNECTIONS",
        "botocore_source",
        "imds_source",
    ],
)
def test_the_server_side_moved_to_parent_and_the_old_import_warns(name: str) -> None:
    import attested.kms.credentials as old
    import attested.parent as new

    with pytest.warns(DeprecationWarning, match=f"attested.parent.{name}"):
        moved = getattr(old, name)
    assert moved is getattr(new, name)
    assert name in new.__all__
    assert name not in old.__all__
    with pytest.raises(AttributeError):
        old.NoSuchName  # noqa: B018 - the module's __getattr__ still refuses the unknown


def test_from_import_of_the_old_place_warns_and_serves() -> None:
    with pytest.warns(DeprecationWarning, match="moved to attested.parent.CredentialServer"):
        from attested.kms.credentials import CredentialServer as Old
    source = Source(Clock())
    with Old("tcp:127.0.0.1:0", source=source) as server:
        assert ParentCredentials(server.address).fetch().access_key_id == "ASIAEXAMPLE000000001"
