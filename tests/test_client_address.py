"""Client address classification: the peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies."""

from __future__ import annotations

import pytest

from edgeward.protection.client_address import TrustedProxies, client_address, ip_limit_key, parse_ip

PROXIES = TrustedProxies.parse("10.0.0.0/8, 2001:db8:ffff::/48, 192.0.2.7")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # An untrusted peer: its own address, whatever it claims.
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),
        ("203.0.113.5", [], "203.0.113.5"),
        # A trusted proxy: the right-most hop it did not add itself.
        ("10.1.1.1", ["198.51.100.9"], "198.51.100.9"),
        ("10.1.1.1", ["6.6.6.6, 198.51.100.9"], "198.51.100.9"),  # 6.6.6.6 was the client's own claim
        ("10.1.1.1", ["6.6.6.6, 198.51.100.9, 10.2.2.2"], "198.51.100.9"),  # through two trusted proxies
        ("10.1.1.1", ["6.6.6.6", "198.51.100.9, 192.0.2.7"], "198.51.100.9"),  # several header lines
        ("10.1.1.1", ["10.3.3.3, 10.2.2.2"], "10.3.3.3"),  # every hop trusted: the left-most
        ("10.1.1.1", [], "10.1.1.1"),  # no header: the proxy itself
        ("10.1.1.1", ["garbage, 198.51.100.9"], "198.51.100.9"),  # garbage left of the client is never read
        ("10.1.1.1", ["198.51.100.9, garbage"], "10.1.1.1"),  # garbage from a trusted hop: stop at that hop
        ("10.1.1.1", ["198.51.100.9, , "], "198.51.100.9"),  # empty list elements are skipped
        ("10.1.1.1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("10.1.1.1", ["198.51.100.9:5555"], "198.51.100.9"),
        ("10.1.1.1", ["::ffff:198.51.100.9"], "198.51.100.9"),  # IPv4-mapped: one spelling per client
        ("2001:db8:ffff::1", ["2001:db8:1::9"], "2001:db8:1::9"),
        ("::ffff:10.1.1.1", ["198.51.100.9"], "198.51.100.9"),
        ("/tmp/socket", ["1.2.3.4"], "/tmp/socket"),
        (None, ["1.2.3.4"], "unknown"),
    ],
)
def test_client_address(peer: str | None, headers: list[str], expected: str) -> None:
    assert client_address(peer, headers, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.1.1.1", ["198.51.100.9"], TrustedProxies()) == "10.1.1.1"


def test_trusted_proxies_parsing_and_display() -> None:
    assert str(TrustedProxies.parse("none")) == "none" and not TrustedProxies.parse("none")
    assert str(PROXIES) == "10.0.0.0/8,2001:db8:ffff::/48,192.0.2.7/32"
    assert TrustedProxies.parse("10.1.2.3/8") == TrustedProxies.parse("10.0.0.0/8")  # host bits are dropped
    with pytest.raises(ValueError, match="not an IP network"):
        TrustedProxies.parse("10.0.0.0/8, proxy.internal")


def test_a_long_forwarded_chain_is_read_from_the_right_only() -> None:
    hops = ", ".join(["10.9.9.9"] * 1000)
    assert client_address("10.1.1.1", [f"198.51.100.9, {hops}"], PROXIES) == "10.9.9.9"


@pytest.mark.parametrize(
    ("ip", "prefix", "key"),
    [
        ("198.51.100.9", 64, "198.51.100.9"),
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"),
        ("::ffff:198.51.100.9", 64, "198.51.100.9"),
        ("unix:/tmp/s", 64, "unix:/tmp/s"),
    ],
)
def test_ip_limit_key(ip: str, prefix: int, key: str) -> None:
    assert ip_limit_key(ip, prefix) == key


def test_parse_ip_rejects_non_addresses() -> None:
    for text in ("example.com", "", "[::1", "[::1]x", "[::1]:", "1.2.3.4.5", "999.1.1.1"):
        assert parse_ip(text) is None, text
    assert str(parse_ip(" [::1]:80 ")) == "::1"
