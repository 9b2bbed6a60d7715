"""The pure parts: allowlist file and matching, forbidden ranges, host names, tunnel
header, CONNECT parsing. Each parser gets a property test: arbitrary input raises only
our own error types."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.errors import ConfigurationError, MalformedError
from attested.relay import Allowlist, forbidden_range, load_allowlist
from attested.relay._allowlist import normalize_host
from attested.relay._http import (
    MAX_HEAD_SIZE,
    HttpRefusal,
    error_response,
    find_head_end,
    parse_connect,
)
from attested.relay._tunnel import (
    PREFIX_SIZE,
    TunnelReply,
    TunnelRequest,
    TunnelStatus,
    UnsupportedVersionError,
    encode_reply,
    encode_request,
    parse_reply,
    parse_request,
    reply_size,
    request_size,
)

# The file AWS ships as /etc/nitro_enclaves/vsock-proxy.yaml (first entries, verbatim form).
VSOCK_PROXY_YAML = """\
allowlist:
- {address: kms.us-east-2.amazonaws.com, port: 443}
- {address: kms-fips.us-east-2.amazonaws.com, port: 443}
- {address: kms.us-east-1.amazonaws.com, port: 443}
- {address: kms-fips.us-east-1.amazonaws.com, port: 443}
"""


# -- allowlist -----------------------------------------------------------------------------


def test_vsock_proxy_file_works_as_is(tmp_path: Path) -> None:
    path = tmp_path / "vsock-proxy.yaml"
    path.write_text(VSOCK_PROXY_YAML)
    allowlist = load_allowlist(path)
    assert len(allowlist) == 4
    assert allowlist.permits("kms.us-east-1.amazonaws.com", 443)
    assert not allowlist.permits("kms.us-east-1.amazonaws.com", 80)
    assert not allowlist.permits("kms.eu-west-1.amazonaws.com", 443)


def test_names_match_exactly_and_case_insensitively() -> None:
    allowlist = Allowlist.from_yaml("allowlist:\n- {address: KMS.Example.COM., port: 443}\n")
    assert allowlist.permits(normalize_host("kms.example.com"), 443)
    assert allowlist.permits(normalize_host("KMS.EXAMPLE.COM."), 443)
    for other in ("evil.kms.example.com", "kms.example.com.evil", "example.com"):
        assert not allowlist.permits(normalize_host(other), 443)


def test_ip_literals_are_listed_in_canonical_form() -> None:
    allowlist = Allowlist.of(("10.0.0.5", 443), ("0:0::1", 8443))
    assert allowlist.permits("10.0.0.5", 443)
    assert allowlist.permits(normalize_host("::1"), 8443)
    assert not allowlist.permits("10.0.0.6", 443)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whitelist:\n- {address: a.test, port: 1}\n", "rename the old 'whitelist'"),
        ("allowlist: [{address: '*.amazonaws.com', port: 443}]", "wildcards are not supported"),
        ("allowlist: [{address: a.test, port: '443'}]", "port"),
        ("allowlist: [{address: a.test, port: 0}]", "port"),
        ("allowlist: [{address: a.test, port: true}]", "port"),
        ("allowlist: [{address: a.test}]", "exactly the keys"),
        ("allowlist: [{address: a.test, port: 1, ports: 2}]", "exactly the keys"),
        ("allowlist: [{address: 1.2.3.04, port: 1}]", "IP address"),
        ("allowlist: [{address: 'bad host', port: 1}]", "letters"),
        ("allowlist: a.test", "must be a list"),
        ("allowlist: []\nextra: 1\n", "unknown keys"),
        ("- a\n- b\n", "must be a mapping"),
        ("allowlist: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_allowlists_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Allowlist.from_yaml(text)


def test_an_empty_allowlist_denies_everything() -> None:
    assert len(Allowlist.from_yaml("allowlist:\n")) == 0
    assert not Allowlist.from_yaml("allowlist: []").permits("a.test", 443)


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read allowlist") as info:
        load_allowlist(tmp_path / "missing.yaml")
    assert isinstance(info.value.__cause__, OSError)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigurationError, match="larger than 1 MiB"):
        load_allowlist(big)


@given(st.text(max_size=400))
def test_arbitrary_yaml_raises_only_configuration_error(text: str) -> None:
    with contextlib.suppress(ConfigurationError):
        Allowlist.from_yaml(text)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_configuration_error(data: bytes) -> None:
    with contextlib.suppress(ConfigurationError):
        Allowlist.from_yaml(data)


# -- forbidden ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.255.0.9",
        "0.0.0.0",  # noqa: S104
        "169.254.169.254",
        "169.254.170.2",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "ff02::1",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
    ],
)
def test_forbidden_ranges(ip: str) -> None:
    assert forbidden_range(ipaddress.ip_address(ip)) is not None


@pytest.mark.parametrize(
    "ip", ["10.0.3.7", "172.31.0.2", "192.168.1.1", "52.94.0.1", "2600:1f18::1", "fd12::1"]
)
def test_vpc_and_public_addresses_may_be_dialled(ip: str) -> None:
    assert forbidden_range(ipaddress.ip_address(ip)) is None


def test_a_listed_address_lifts_the_range_for_its_port_only() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    allowlist = Allowlist.of(("svc.test", 443), ("127.0.0.1", 443))
    assert allowlist.may_dial(loopback, 443) is None
    assert allowlist.may_dial(loopback, 444) == "loopback"
    assert Allowlist.of(("svc.test", 443)).may_dial(loopback, 443) == "loopback"


# -- host names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("KMS.us-east-1.AmazonAWS.com.", "kms.us-east-1.amazonaws.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("_service.example", "_service.example"),
        ("10.0.0.1", "10.0.0.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
    ],
)
def test_normalize_host(text: str, canonical: str) -> None:
    assert normalize_host(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bücher.example",
        "a..b",
        "-a.test",
        "a-.test",
        "a b.test",
        "127.1",
        "0x7f.1",
        "1.2.3.04",
        "fe80::1%eth0",
        "a" * 64 + ".test",
        ("a" * 60 + ".") * 5 + "test",
    ],
)
def test_invalid_hosts(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by cause
        normalize_host(text)


# -- tunnel header -------------------------------------------------------------------------


def test_tunnel_request_round_trip() -> None:
    data = encode_request("KMS.us-east-1.amazonaws.com", 443)
    assert data[:4] == b"ATRQ"
    assert request_size(data[:PREFIX_SIZE]) == len(data)
    assert parse_request(data) == TunnelRequest(host="kms.us-east-1.amazonaws.com", port=443)
    assert parse_request(encode_request("::1", 8443)) == TunnelRequest(host="::1", port=8443)


def test_tunnel_reply_round_trip_and_http_mapping() -> None:
    data = encode_reply(TunnelStatus.NOT_ALLOWED, "a.test:443 is not listed\n\x00é")
    assert data[:4] == b"ATRP"
    assert reply_size(data[:PREFIX_SIZE]) == len(data)
    reply = parse_reply(data)
    assert reply == TunnelReply(
        status=TunnelStatus.NOT_ALLOWED, reason="a.test:443 is not listed???"
    )
    assert reply.status.http_status == 403
    assert {status.http_status for status in TunnelStatus} == {200, 403, 502, 503, 504}
    assert len(encode_reply(TunnelStatus.OK, "x" * 1000)) == PREFIX_SIZE + 255


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"ATRP\x01\x00\x01a\x00\x01", MalformedError),  # a reply is not a request
        (b"ATRQ\x02\x00\x01a\x00\x01", UnsupportedVersionError),
        (b"ATRQ\x01\x01\x01a\x00\x01", MalformedError),  # flags
        (b"ATRQ\x01\x00\x00\x00\x01", MalformedError),  # empty host
        (b"ATRQ\x01\x00\x01a\x00\x00", MalformedError),  # port 0
        (b"ATRQ\x01\x00\x01A\x00\x01", MalformedError),  # not canonical
        (b"ATRQ\x01\x00\x03a\x00b\x00\x01", MalformedError),  # NUL in host
        (b"ATRQ\x01\x00\x01a\x00\x01\x00", MalformedError),  # trailing byte
    ],
)
def test_bad_tunnel_requests(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_request(data)


def test_a_request_is_never_taken_for_a_reply() -> None:
    with pytest.raises(MalformedError, match="ATRP"):
        parse_reply(encode_request("a.test", 443))


@given(st.binary(max_size=300))
def test_arbitrary_tunnel_bytes_raise_only_malformed(data: bytes) -> None:
    for parse in (parse_request, parse_reply):
        with contextlib.suppress(MalformedError):
            parse(data)


@given(st.data())
def test_mutated_requests_parse_or_raise_malformed(data: st.DataObject) -> None:
    raw = bytearray(encode_request("kms.eu-west-1.amazonaws.com", 443))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    try:
        request = parse_request(bytes(raw))
    except MalformedError:
        return
    assert encode_request(request.host, request.port) == bytes(raw)


# -- CONNECT ------------------------------------------------------------------------------


def test_connect_requests() -> None:
    head = b"CONNECT KMS.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHost: x\r\nUser-Agent: y\r\n\r\n"
    assert find_head_end(head + b"tls bytes") == len(head)
    request = parse_connect(head)
    assert (request.host, request.port) == ("kms.us-east-1.amazonaws.com", 443)
    request = parse_connect(b"CONNECT [2001:db8::1]:8443 HTTP/1.0\r\n\r\n")
    assert (request.host, request.port) == ("2001:db8::1", 8443)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET http://a.test/ HTTP/1.1\r\n\r\n", 405),
        (b"CONNECT a.test HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT a.test:0 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT a.test:65536 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT ::1:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT [a.test]:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT a.test:443 HTTP/2\r\n\r\n", 400),
        (b"CONNECT a.test:443 HTTP/1.1\r\n folded\r\n\r\n", 400),
        (b"CONNECT a.test:443 HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"CONNECT a.test:443  HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT \xff.test:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT a.test:443 HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_refused_requests(head: bytes, status: int) -> None:
    with pytest.raises(HttpRefusal) as info:
        parse_connect(head)
    assert info.value.status == status


def test_head_size_cap() -> None:
    assert find_head_end(b"CONNECT a.test:443 HTTP/1.1\r\n") is None
    with pytest.raises(HttpRefusal) as info:
        find_head_end(b"x" * MAX_HEAD_SIZE)
    assert info.value.status == 431


def test_error_responses_are_complete_and_single_line() -> None:
    response = error_response(405, "method_not_allowed", "only CONNECT\r\nInjected: yes")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"Allow: CONNECT" in head
    assert b"\r\nInjected" not in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)


@given(st.binary(max_size=600))
def test_arbitrary_heads_raise_only_http_refusal(data: bytes) -> None:
    status = 200
    try:
        end = find_head_end(data)
        parse_connect(data if end is None else data[:end])
    except HttpRefusal as refusal:
        status = refusal.status
    assert status in (200, 400, 405, 431)
