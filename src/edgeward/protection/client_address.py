"""Which client a request comes from, and the key its per-IP limits count under.

The client address is the TCP peer, unless the peer is a configured trusted proxy
(``EDGEWARD_TRUSTED_PROXIES``): then ``X-Forwarded-For`` is read from the right, each trusted
hop is skipped, and the first untrusted hop is the client. Hops to the left of it were written
by the client itself and are never believed. When every hop is trusted the left-most stands;
a hop that is not an IP address ends the walk at the trusted proxy that reported it.

An IPv6 client is limited by its network prefix (``EDGEWARD_LIMIT_IPV6_PREFIX``, /64 by default):
one subscriber usually holds a whole /64, and keying by full address would give it 2**64 budgets.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

__all__ = ("TrustedProxies", "client_address", "ip_limit_key", "parse_ip")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_HOPS = 64  # a longer X-Forwarded-For is cut at its right-most 64 hops: no proxy chain is that long


class TrustedProxies:
    """A set of networks whose peers may report the client address in ``X-Forwarded-For``."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Comma-separated CIDRs or addresses (``10.0.0.0/8, 2001:db8::/32, 192.0.2.7``), or ``none``."""
        if text.strip().lower() == "none":
            return cls()
        networks = []
        for item in text.split(","):
            item = item.strip()
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network (expected CIDRs like 10.0.0.0/8)") from None
        return cls(networks)

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedProxies) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def __str__(self) -> str:
        return ",".join(map(str, self.networks)) or "none"


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or a hop (``[v6]:port`` and ``v4:port`` forms too); None when it is not one.

    An IPv4-mapped IPv6 address is its IPv4 address, so one client has one spelling.
    """
    text = text.strip()
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str:
    """The client's address (canonical text) for a request from ``peer`` with these X-Forwarded-For headers."""
    if not peer:
        return "unknown"
    address = parse_ip(peer)
    if address is None:
        return peer  # not an IP peer (a unix socket): nothing to resolve
    if not trusted or not trusted.trusts(address):
        return str(address)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops[-_MAX_HOPS:]):
        reported = parse_ip(hop)
        if reported is None:
            break
        address = reported
        if not trusted.trusts(address):
            break
    return str(address)


@functools.lru_cache(maxsize=4096)
def _v6_key(text: str, prefix: int) -> str:
    address = parse_ip(text)
    if not isinstance(address, ipaddress.IPv6Address):
        return str(address) if address is not None else text
    return str(ipaddress.IPv6Network((address, prefix), strict=False))


def ip_limit_key(ip: str, ipv6_prefix: int) -> str:
    """The key per-IP limits use: an IPv4 address as is, an IPv6 one as its /``ipv6_prefix`` network."""
    if ":" not in ip:  # IPv4 (the common case: no parsing)
        return ip
    return _v6_key(ip, ipv6_prefix)
