"""The address rules of the parent's egress relay: which resolved addresses it dials.

A listed name may resolve anywhere, so a DNS answer could point the relay at the parent's
own services (loopback, instance metadata) or at networks no public API lives in. Every
range with a special meaning is listed here, once, with where it is defined and why the
relay decides as it does (ADR 0044; ``docs/relay.md`` shows this table, and a test keeps
the two in sync):

* every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
  its updates), plus multicast, the deprecated IPv4-compatible and site-local blocks, and
  AWS's ``fd00:ec2::/32``;
* IPv6 outside global unicast ``2000::/3`` is refused as a whole, so blocks IANA adds
  later outside it are refused too;
* private-use ranges (RFC 1918, unique-local) stay dialled: VPC endpoints live there;
* IPv4-mapped, NAT64 ``64:ff9b::/96`` and 6to4 addresses are judged by the IPv4 address
  they embed; IPv4-compatible, local-use NAT64 and Teredo addresses are refused.

The longest matching prefix decides. Pure: no sockets, files or clock.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

__all__ = [
    "ADDRESS_RULES",
    "AddressRule",
    "IPAddress",
    "Verdict",
    "address_rule",
    "embedded_ipv4",
    "forbidden_range",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Verdict(enum.Enum):
    """What the egress relay does with a resolved address in a range."""

    ALLOW = "dialled"
    REFUSE = "refused"
    EMBEDDED = "judged by the IPv4 inside"


@dataclass(frozen=True, slots=True)
class AddressRule:
    """One row of :data:`ADDRESS_RULES`: a range, its source, and what the relay does.

    Attributes:
        network: the range.
        verdict: dial, refuse, or judge the embedded IPv4 address.
        name: the range's name in its registry (or a plain description).
        source: where the range is defined: the IANA registry entry and its RFC(s).
        why: a short label; for refused ranges it appears in refusals and logs.
        reason: why the relay decides as it does, one sentence (docs/relay.md shows it).
        embeds_at: for ``EMBEDDED``, how many bits the embedded IPv4 address sits from
            the low end of the IPv6 address.
    """

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    verdict: Verdict
    name: str
    source: str
    why: str
    reason: str
    embeds_at: int | None = None


_V4 = "IANA IPv4 Special-Purpose Address Registry"
_V6 = "IANA IPv6 Special-Purpose Address Registry"
_A, _R, _E = Verdict.ALLOW, Verdict.REFUSE, Verdict.EMBEDDED
_NO_API = "not an HTTPS API: no name the enclave needs resolves here"


def _rule(
    net: str, verdict: Verdict, name: str, source: str, why: str, reason: str, at: int | None = None
) -> AddressRule:
    return AddressRule(ipaddress.ip_network(net), verdict, name, source, why, reason, at)


ADDRESS_RULES: tuple[AddressRule, ...] = (
    # -- IPv4: every entry of the special-purpose registry, plus multicast -------------
    _rule(
        "0.0.0.0/0",
        _A,
        "IPv4 unicast",
        "IANA IPv4 Address Space Registry",
        "public",
        "public addresses, where KMS and other HTTPS APIs live",
    ),
    _rule(
        "0.0.0.0/8",
        _R,
        '"This network"',
        f"{_V4}; RFC 791 section 3.2",
        "this network (unspecified)",
        "never a valid destination; 0.0.0.0 itself reaches the parent",
    ),
    _rule(
        "0.0.0.0/32",
        _R,
        '"This host on this network"',
        f"{_V4}; RFC 1122 section 3.2.1.3",
        "unspecified",
        "dialling 0.0.0.0 reaches the parent's own listening services",
    ),
    _rule(
        "10.0.0.0/8",
        _A,
        "Private-Use",
        f"{_V4}; RFC 1918",
        "private-use",
        "VPC addresses: KMS VPC endpoints resolve here",
    ),
    _rule(
        "100.64.0.0/10",
        _R,
        "Shared Address Space",
        f"{_V4}; RFC 6598",
        "shared address space (carrier-grade NAT)",
        "not globally reachable: a provider's or an overlay network's own hosts (CGNAT, "
        "mesh VPNs); a VPC endpoint in such a CIDR must be listed by address",
    ),
    _rule(
        "127.0.0.0/8",
        _R,
        "Loopback",
        f"{_V4}; RFC 1122 section 3.2.1.3",
        "loopback",
        "the parent's own services",
    ),
    _rule(
        "169.254.0.0/16",
        _R,
        "Link Local",
        f"{_V4}; RFC 3927",
        "link-local (instance metadata, DNS, ECS credentials)",
        "instance metadata 169.254.169.254, DNS .253, ECS/EKS credentials 169.254.170.2/.23",
    ),
    _rule(
        "172.16.0.0/12",
        _A,
        "Private-Use",
        f"{_V4}; RFC 1918",
        "private-use",
        "VPC addresses: KMS VPC endpoints resolve here",
    ),
    _rule(
        "192.0.0.0/24",
        _R,
        "IETF Protocol Assignments",
        f"{_V4}; RFC 6890 section 2.1",
        "IETF protocol assignment",
        f"protocol-specific addresses, not globally reachable; {_NO_API}",
    ),
    _rule(
        "192.0.0.0/29",
        _R,
        "IPv4 Service Continuity Prefix",
        f"{_V4}; RFC 7335",
        "IPv4 service continuity (DS-Lite, 464XLAT)",
        "addresses of a local translator link",
    ),
    _rule(
        "192.0.0.8/32",
        _R,
        "IPv4 dummy address",
        f"{_V4}; RFC 7600",
        "IPv4 dummy address",
        "a placeholder source address, never a destination",
    ),
    _rule(
        "192.0.0.9/32",
        _R,
        "Port Control Protocol Anycast",
        f"{_V4}; RFC 7723",
        "PCP anycast",
        f"reaches the nearest PCP server, the local NAT; {_NO_API}",
    ),
    _rule(
        "192.0.0.10/32",
        _R,
        "Traversal Using Relays around NAT Anycast",
        f"{_V4}; RFC 8155",
        "TURN anycast",
        f"reaches the nearest TURN server; {_NO_API}",
    ),
    _rule(
        "192.0.0.170/32",
        _R,
        "NAT64/DNS64 Discovery",
        f"{_V4}; RFC 8880, RFC 7050",
        "NAT64 discovery",
        "a well-known name's answer for prefix discovery, never a host",
    ),
    _rule(
        "192.0.0.171/32",
        _R,
        "NAT64/DNS64 Discovery",
        f"{_V4}; RFC 8880, RFC 7050",
        "NAT64 discovery",
        "a well-known name's answer for prefix discovery, never a host",
    ),
    _rule(
        "192.0.2.0/24",
        _R,
        "Documentation (TEST-NET-1)",
        f"{_V4}; RFC 5737",
        "documentation",
        "no real host; an answer here is a misconfiguration or an attack",
    ),
    _rule(
        "192.31.196.0/24",
        _R,
        "AS112-v4",
        f"{_V4}; RFC 7535",
        "AS112 DNS sink",
        f"anycast DNS sinks run by the nearest operator; {_NO_API}",
    ),
    _rule(
        "192.52.193.0/24",
        _R,
        "AMT",
        f"{_V4}; RFC 7450",
        "AMT relay anycast",
        f"multicast tunnelling relays; {_NO_API}",
    ),
    _rule(
        "192.88.99.0/24",
        _R,
        "Deprecated (6to4 Relay Anycast)",
        f"{_V4}; RFC 7526",
        "6to4 relay anycast (deprecated)",
        f"tunnel relays; {_NO_API}",
    ),
    _rule(
        "192.88.99.2/32",
        _R,
        "6a44-relay anycast address",
        f"{_V4}; RFC 6751",
        "6a44 relay anycast",
        f"tunnel relays; {_NO_API}",
    ),
    _rule(
        "192.168.0.0/16",
        _A,
        "Private-Use",
        f"{_V4}; RFC 1918",
        "private-use",
        "VPC addresses: KMS VPC endpoints resolve here",
    ),
    _rule(
        "192.175.48.0/24",
        _R,
        "Direct Delegation AS112 Service",
        f"{_V4}; RFC 7534",
        "AS112 DNS sink",
        f"anycast DNS sinks run by the nearest operator; {_NO_API}",
    ),
    _rule(
        "198.18.0.0/15",
        _R,
        "Benchmarking",
        f"{_V4}; RFC 2544",
        "benchmarking",
        "not globally reachable; a VPC CIDR from 198.19.0.0/16 must be listed by address",
    ),
    _rule(
        "198.51.100.0/24",
        _R,
        "Documentation (TEST-NET-2)",
        f"{_V4}; RFC 5737",
        "documentation",
        "no real host; an answer here is a misconfiguration or an attack",
    ),
    _rule(
        "203.0.113.0/24",
        _R,
        "Documentation (TEST-NET-3)",
        f"{_V4}; RFC 5737",
        "documentation",
        "no real host; an answer here is a misconfiguration or an attack",
    ),
    _rule(
        "224.0.0.0/4",
        _R,
        "Multicast",
        "IANA IPv4 Address Space Registry; RFC 5771",
        "multicast",
        "not a TCP destination",
    ),
    _rule(
        "240.0.0.0/4",
        _R,
        "Reserved",
        f"{_V4}; RFC 1112 section 4",
        "reserved",
        "not assigned; never a destination",
    ),
    _rule(
        "255.255.255.255/32",
        _R,
        "Limited Broadcast",
        f"{_V4}; RFC 8190, RFC 919 section 7",
        "broadcast",
        "the local link's broadcast address",
    ),
    # -- IPv6: every entry of the special-purpose registry, plus the address space ------
    _rule(
        "::/0",
        _R,
        "Not global unicast",
        "IANA IPv6 Address Space Registry",
        "outside global unicast 2000::/3",
        "IANA allocates only 2000::/3 for global unicast; the rest is reserved, local or "
        "multicast, and new special blocks land there",
    ),
    _rule(
        "2000::/3",
        _A,
        "Global Unicast",
        "IANA IPv6 Address Space Registry; RFC 4291",
        "public",
        "public addresses, where KMS and other HTTPS APIs live",
    ),
    _rule(
        "::/128",
        _R,
        "Unspecified Address",
        f"{_V6}; RFC 4291",
        "unspecified",
        "dialling :: reaches the parent's own listening services",
    ),
    _rule(
        "::1/128",
        _R,
        "Loopback Address",
        f"{_V6}; RFC 4291",
        "loopback",
        "the parent's own services",
    ),
    _rule(
        "::/96",
        _R,
        "IPv4-compatible (deprecated)",
        "RFC 4291 section 2.5.5.1",
        "IPv4-compatible (deprecated)",
        "deprecated, so no resolver should answer one; stacks that still honour it dial "
        "the embedded IPv4 address, so it is refused whatever that address is",
    ),
    _rule(
        "::ffff:0:0/96",
        _E,
        "IPv4-mapped Address",
        f"{_V6}; RFC 4291",
        "IPv4-mapped",
        "the socket layer dials the embedded IPv4 address: the IPv4 rules decide",
        0,
    ),
    _rule(
        "64:ff9b::/96",
        _E,
        "IPv4-IPv6 Translat.",
        f"{_V6}; RFC 6052",
        "NAT64",
        "a NAT64 gateway (AWS NAT gateway with DNS64) dials the embedded IPv4 address: "
        "the IPv4 rules decide",
        0,
    ),
    _rule(
        "64:ff9b:1::/48",
        _R,
        "IPv4-IPv6 Translat. (local use)",
        f"{_V6}; RFC 8215",
        "local-use NAT64",
        "where the IPv4 address sits depends on the local prefix length, so it cannot be "
        "judged; list the address if you use one",
    ),
    _rule(
        "100::/64",
        _R,
        "Discard-Only Address Block",
        f"{_V6}; RFC 6666",
        "discard-only",
        "traffic to it is dropped by design",
    ),
    _rule(
        "100:0:0:1::/64",
        _R,
        "Dummy IPv6 Prefix",
        f"{_V6}; RFC 9780",
        "dummy prefix",
        "a placeholder, never a destination",
    ),
    _rule(
        "2001::/23",
        _R,
        "IETF Protocol Assignments",
        f"{_V6}; RFC 2928",
        "IETF protocol assignment",
        f"protocol-specific addresses (below); {_NO_API}",
    ),
    _rule(
        "2001::/32",
        _R,
        "TEREDO",
        f"{_V6}; RFC 4380, RFC 8190",
        "Teredo",
        "tunnels over UDP to the IPv4 addresses it embeds (server and obfuscated client); "
        "obsolete, so refused rather than judged",
    ),
    _rule(
        "2001:1::1/128",
        _R,
        "Port Control Protocol Anycast",
        f"{_V6}; RFC 7723",
        "PCP anycast",
        f"reaches the nearest PCP server; {_NO_API}",
    ),
    _rule(
        "2001:1::2/128",
        _R,
        "Traversal Using Relays around NAT Anycast",
        f"{_V6}; RFC 8155",
        "TURN anycast",
        f"reaches the nearest TURN server; {_NO_API}",
    ),
    _rule(
        "2001:1::3/128",
        _R,
        "DNS-SD Service Registration Protocol Anycast",
        f"{_V6}; RFC 9665",
        "DNS-SD SRP anycast",
        f"a local-network service; {_NO_API}",
    ),
    _rule(
        "2001:2::/48",
        _R,
        "Benchmarking",
        f"{_V6}; RFC 5180, RFC Errata 1752",
        "benchmarking",
        "not globally reachable",
    ),
    _rule(
        "2001:3::/32",
        _R,
        "AMT",
        f"{_V6}; RFC 7450",
        "AMT relay anycast",
        f"multicast tunnelling relays; {_NO_API}",
    ),
    _rule(
        "2001:4:112::/48",
        _R,
        "AS112-v6",
        f"{_V6}; RFC 7535",
        "AS112 DNS sink",
        f"anycast DNS sinks run by the nearest operator; {_NO_API}",
    ),
    _rule(
        "2001:10::/28",
        _R,
        "Deprecated (previously ORCHID)",
        f"{_V6}; RFC 4843",
        "ORCHID (deprecated)",
        "identifiers, not locators",
    ),
    _rule(
        "2001:20::/28", _R, "ORCHIDv2", f"{_V6}; RFC 7343", "ORCHIDv2", "identifiers, not locators"
    ),
    _rule(
        "2001:30::/28",
        _R,
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        f"{_V6}; RFC 9374",
        "drone entity tags",
        "identifiers, not locators",
    ),
    _rule(
        "2001:db8::/32",
        _R,
        "Documentation",
        f"{_V6}; RFC 3849",
        "documentation",
        "no real host; an answer here is a misconfiguration or an attack",
    ),
    _rule(
        "2002::/16",
        _E,
        "6to4",
        f"{_V6}; RFC 3056",
        "6to4",
        "a 6to4 relay tunnels to the IPv4 address in bits 16-47: the IPv4 rules decide",
        80,
    ),
    _rule(
        "2620:4f:8000::/48",
        _R,
        "Direct Delegation AS112 Service",
        f"{_V6}; RFC 7534",
        "AS112 DNS sink",
        f"anycast DNS sinks run by the nearest operator; {_NO_API}",
    ),
    _rule(
        "3fff::/20",
        _R,
        "Documentation",
        f"{_V6}; RFC 9637",
        "documentation",
        "no real host; an answer here is a misconfiguration or an attack",
    ),
    _rule(
        "5f00::/16",
        _R,
        "Segment Routing (SRv6) SIDs",
        f"{_V6}; RFC 9602",
        "SRv6 SID",
        "segment identifiers inside one operator's network, not hosts",
    ),
    _rule(
        "fc00::/7",
        _A,
        "Unique-Local",
        f"{_V6}; RFC 4193, RFC 8190",
        "unique-local",
        "like RFC 1918: private VPC addresses",
    ),
    _rule(
        "fd00:ec2::/32",
        _R,
        "AWS instance services",
        "Amazon EC2 User Guide (IMDS, DNS, NTP)",
        "AWS instance services (metadata, DNS, time)",
        "instance metadata fd00:ec2::254, the Route 53 resolver, time sync",
    ),
    _rule(
        "fe80::/10",
        _R,
        "Link-Local Unicast",
        f"{_V6}; RFC 4291",
        "link-local",
        "the parent's own link",
    ),
    _rule(
        "fec0::/10",
        _R,
        "Site-local (deprecated)",
        "RFC 3879",
        "site-local",
        "deprecated; reached the local site only",
    ),
    _rule(
        "ff00::/8",
        _R,
        "Multicast",
        "IANA IPv6 Address Space Registry; RFC 4291 section 2.7",
        "multicast",
        "not a TCP destination",
    ),
)
"""Every rule for resolved addresses, in one place. The longest matching prefix decides."""

_RULES_BY_VERSION: dict[int, tuple[AddressRule, ...]] = {
    version: tuple(
        sorted(
            (rule for rule in ADDRESS_RULES if rule.network.version == version),
            key=lambda rule: -rule.network.prefixlen,
        )
    )
    for version in (4, 6)
}


def address_rule(ip: IPAddress) -> AddressRule:
    """The rule that decides ``ip``: the one with the longest prefix containing it."""
    for rule in _RULES_BY_VERSION[ip.version]:
        if ip in rule.network:
            return rule
    raise AssertionError(f"no rule covers {ip}")  # pragma: no cover - ::/0 and 0/0 do


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address embeds, where the rules judge it by that address."""
    rule = address_rule(ip)
    if rule.embeds_at is None:
        return None
    return ipaddress.IPv4Address((int(ip) >> rule.embeds_at) & 0xFFFFFFFF)


def forbidden_range(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be dialled for a resolved name, or ``None`` if it may be.

    The rule with the longest prefix containing ``ip`` decides (:data:`ADDRESS_RULES`).
    IPv4-mapped, NAT64 (``64:ff9b::/96``) and 6to4 addresses are judged by the IPv4
    address they embed.

    Args:
        ip: an IPv4 or IPv6 address.

    Returns:
        A short reason (``"loopback"``, ``"link-local ..."``) or ``None``.
    """
    rule = address_rule(ip)
    if rule.verdict is Verdict.ALLOW:
        return None
    if rule.verdict is Verdict.REFUSE:
        return rule.why
    inner = embedded_ipv4(ip)
    assert inner is not None  # noqa: S101 - EMBEDDED rules have embeds_at
    why = forbidden_range(inner)
    return None if why is None else f"{rule.why} {inner}: {why}"
