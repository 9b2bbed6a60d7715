"""The egress relay's address rules: the IANA registries entry by entry, the addresses
that embed IPv4, the table in docs/relay.md, and refusals through the real relay path.

The relay tests resolve names with a StaticResolver, so a name can "resolve" to any
address without touching DNS; a refused address is never dialled.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from attested.relay import Allowlist, EnclaveEgress, ParentEgress, Refusal, StaticResolver
from attested.relay._ranges import (
    ADDRESS_RULES,
    AddressRule,
    Verdict,
    address_rule,
    embedded_ipv4,
    forbidden_range,
)
from tests.relay.support import connect_through, loopback

DOCS = Path(__file__).resolve().parents[2] / "docs" / "relay.md"
BEGIN = "<!-- address-rules: generated from attested/relay/_ranges.py; "
END = "<!-- address-rules: end -->"

# The IANA IPv4 and IPv6 Special-Purpose Address Registries, entry by entry, as of the
# 2025 revisions (RFC 6890 as updated by RFC 8190 and later assignments). Each must have
# its own row in ADDRESS_RULES, so a decision was made for it.
IANA_IPV4_SPECIAL = (
    "0.0.0.0/8",
    "0.0.0.0/32",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.0.0/29",
    "192.0.0.8/32",
    "192.0.0.9/32",
    "192.0.0.10/32",
    "192.0.0.170/32",
    "192.0.0.171/32",
    "192.0.2.0/24",
    "192.31.196.0/24",
    "192.52.193.0/24",
    "192.88.99.0/24",
    "192.88.99.2/32",
    "192.168.0.0/16",
    "192.175.48.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
)
IANA_IPV6_SPECIAL = (
    "::1/128",
    "::/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "100:0:0:1::/64",
    "2001::/23",
    "2001::/32",
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:1::3/128",
    "2001:2::/48",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:30::/28",
    "2001:db8::/32",
    "2002::/16",
    "2620:4f:8000::/48",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
)
PRIVATE_USE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def render_rules() -> str:
    """The docs table, as docs/relay.md must hold it."""
    lines = [
        "| range | registry entry | defined in | relay | why |",
        "|---|---|---|---|---|",
    ]
    for rule in sorted(ADDRESS_RULES, key=lambda r: (r.network.version, r.network)):
        lines.append(
            f"| `{rule.network}` | {rule.name} | {rule.source} | {rule.verdict.value} "
            f"| {rule.reason} |"
        )
    return "\n".join(lines)


# -- the table ------------------------------------------------------------------------------


def test_docs_table_is_generated_from_the_rules() -> None:
    text = DOCS.read_text()
    match = re.search(re.escape(BEGIN) + r".*?-->\n(.*?)\n" + re.escape(END), text, re.S)
    assert match is not None, f"docs/relay.md lacks the block starting {BEGIN!r}"
    expected = render_rules()
    assert match.group(1) == expected, f"regenerate the table in docs/relay.md:\n{expected}"


def test_every_registry_entry_has_its_own_rule() -> None:
    networks = [rule.network for rule in ADDRESS_RULES]
    assert len(networks) == len(set(networks)), "a range is listed twice"
    for entry in (*IANA_IPV4_SPECIAL, *IANA_IPV6_SPECIAL):
        assert ipaddress.ip_network(entry) in networks, entry


def test_only_private_use_and_unicast_space_are_dialled() -> None:
    allowed = {str(r.network) for r in ADDRESS_RULES if r.verdict is Verdict.ALLOW}
    assert allowed == {*PRIVATE_USE, "0.0.0.0/0", "2000::/3"}
    embedded = {str(r.network) for r in ADDRESS_RULES if r.verdict is Verdict.EMBEDDED}
    assert embedded == {"::ffff:0:0/96", "64:ff9b::/96", "2002::/16"}


@pytest.mark.parametrize("rule", ADDRESS_RULES, ids=lambda r: str(r.network))
def test_each_rule_decides_its_own_range(rule: AddressRule) -> None:
    for ip in (rule.network.network_address, rule.network.broadcast_address):
        if rule.verdict is Verdict.EMBEDDED:
            assert embedded_ipv4(ip) is not None
            continue
        # The rule decides its range, except where a longer prefix inside it does.
        deciding = address_rule(ip)
        assert deciding is rule or deciding.network.prefixlen > rule.network.prefixlen
        if deciding is rule:
            assert (forbidden_range(ip) is None) == (rule.verdict is Verdict.ALLOW)
    assert all((rule.source, rule.why, rule.reason))


# -- the newly refused ranges ----------------------------------------------------------------

NEWLY_REFUSED = [
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "100.127.255.254",
    "192.0.0.9",  # PCP anycast
    "192.0.0.170",  # NAT64 discovery
    "192.0.2.10",  # documentation
    "192.31.196.1",  # AS112
    "192.52.193.1",  # AMT
    "192.88.99.1",  # 6to4 relay anycast
    "192.175.48.1",  # AS112 direct delegation
    "198.18.0.1",  # benchmarking
    "198.19.255.1",
    "198.51.100.7",
    "203.0.113.9",
    "::7f00:1",  # IPv4-compatible, embedding 127.0.0.1
    "::3401:203",  # IPv4-compatible, embedding a public address: refused all the same
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "2001::5efe:7f00:1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo with a public server and client
    "2001:1::1",  # PCP anycast
    "2001:2::1",  # benchmarking
    "2001:3::1",  # AMT
    "2001:4:112::1",  # AS112
    "2001:20::1",  # ORCHIDv2
    "2001:30::1",  # drone entity tags
    "2001:db8::1",  # documentation
    "2620:4f:8000::1",  # AS112 direct delegation
    "3fff::1",  # documentation
    "5f00::1",  # SRv6 SIDs
    "4000::1",  # reserved by IETF, outside 2000::/3
    "64:ff9b::6440:1",  # NAT64 embedding 100.64.0.1
    "::ffff:100.64.0.1",  # IPv4-mapped, likewise
    "2002:c000:0201::1",  # 6to4 embedding 192.0.2.1
]


@pytest.mark.parametrize("ip", NEWLY_REFUSED)
def test_newly_refused_addresses(ip: str) -> None:
    assert forbidden_range(ipaddress.ip_address(ip)) is not None


def test_newly_refused_ranges_are_refused_through_the_relay(relays, make_target) -> None:
    """A listed name answering with any of them gets 403 forbidden_address; nothing is dialled."""
    target = make_target()
    names = {f"n{index}.rebind.relay.test": ip for index, ip in enumerate(NEWLY_REFUSED)}
    allowlist = Allowlist.of(*((name, target.port) for name in names))
    parent, (parent_addr,) = relays(
        ParentEgress(listen=loopback(), allowlist=allowlist),
        resolver=StaticResolver({name: [ip] for name, ip in names.items()}),
    )
    _, (proxy,) = relays(EnclaveEgress(listen=loopback(), parent=parent_addr))
    for name, ip in names.items():
        sock, status, head = connect_through(proxy, f"{name}:{target.port}")
        sock.close()
        assert status == 403, (ip, head)
        assert b"X-Attested-Relay-Error: forbidden_address" in head, (ip, head)
        assert b"list the address itself" in head, (ip, head)
    assert target.accepts == 0
    refusals = parent.stats()["parent-egress"].refusals[Refusal.FORBIDDEN_ADDRESS]
    assert refusals == len(NEWLY_REFUSED)


def test_a_listed_address_in_a_new_range_is_dialled_only_for_its_port() -> None:
    cgnat = ipaddress.ip_address("100.64.0.1")
    allowlist = Allowlist.of(("svc.test", 443), ("100.64.0.1", 443))
    assert allowlist.may_dial(cgnat, 443) is None
    assert allowlist.may_dial(cgnat, 8443) == "shared address space (carrier-grade NAT)"


# -- addresses that embed IPv4 ------------------------------------------------------------

IPV4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def _mapped(v4: ipaddress.IPv4Address, _: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFFFF << 32) | int(v4))


def _nat64(v4: ipaddress.IPv4Address, _: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x64FF9B << 96) | int(v4))


def _sixtofour(v4: ipaddress.IPv4Address, low: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | (low & (2**80 - 1)))


@given(v4=IPV4, low=st.integers(0, 2**80 - 1), form=st.sampled_from([_mapped, _nat64, _sixtofour]))
@example(v4=ipaddress.IPv4Address("127.0.0.1"), low=0, form=_sixtofour)
@example(v4=ipaddress.IPv4Address("169.254.169.254"), low=0, form=_nat64)
@example(v4=ipaddress.IPv4Address("10.0.0.1"), low=0, form=_mapped)
@example(v4=ipaddress.IPv4Address("100.64.0.1"), low=1, form=_sixtofour)
def test_embedded_ipv4_is_judged_like_the_ipv4_address(v4, low, form) -> None:
    v6 = form(v4, low)
    assert embedded_ipv4(v6) == v4
    assert (forbidden_range(v6) is None) == (forbidden_range(v4) is None)


@given(v4=IPV4, low=st.integers(0, 2**64 - 1))
def test_embeddings_that_cannot_be_judged_are_refused(v4, low) -> None:
    compatible = ipaddress.IPv6Address(int(v4))
    local_nat64 = ipaddress.IPv6Address((0x0064FF9B0001 << 80) | (low << 16) | (int(v4) >> 16))
    teredo = ipaddress.IPv6Address((0x20010000 << 96) | (int(v4) << 64) | low)
    for ip in (compatible, local_nat64, teredo):
        assert forbidden_range(ip) is not None, ip
        assert embedded_ipv4(ip) is None


@given(st.integers(0, 2**128 - 1))
def test_every_ipv6_address_gets_a_decision(value: int) -> None:
    ip = ipaddress.IPv6Address(value)
    why = forbidden_range(ip)
    if why is None:
        # dialled: global unicast, unique-local, or an embedding of a dialled IPv4
        inner = embedded_ipv4(ip)
        assert (
            ip in ipaddress.ip_network("2000::/3")
            or ip in ipaddress.ip_network("fc00::/7")
            or (inner is not None and forbidden_range(inner) is None)
        )
