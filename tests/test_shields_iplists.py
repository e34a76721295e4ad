"""The interval set (against ipaddress as the oracle) and the datacenter and threat shields."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shields.intervals import IntervalSet, parse_network
from shields.iplists import DatacenterShield, ThreatShield, load_hosting_asns
from shields.lists import LiveLists
from shields.model import ClientContext, DropReason, Event, SiteConfig

EVENT = Event(name="pageview", domain="a.com", url="https://a.com/", hostname="a.com", pathname="/")
SITE = SiteConfig(domain="a.com")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


v4_nets = st.builds(
    lambda addr, bits: ipaddress.ip_network((addr, bits), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_nets = st.builds(
    lambda addr, bits: ipaddress.ip_network((addr, bits), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
v4_addrs = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6_addrs = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))


@settings(max_examples=300)
@given(st.lists(st.one_of(v4_nets, v6_nets), max_size=12), st.lists(st.one_of(v4_addrs, v6_addrs), max_size=20))
def test_membership_agrees_with_ipaddress(nets: list, probes: list) -> None:
    s = IntervalSet.from_lines(str(n) for n in nets)
    # Probe the edges of every network too, where off-by-one errors live.
    edges = [a for n in nets for a in (n.network_address, n.broadcast_address)]
    for addr in probes + edges:
        expected = any(addr.version == n.version and addr in n for n in nets)
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None:  # an IPv4-mapped client also counts as its IPv4 address
            expected = expected or any(n.version == 4 and mapped in n for n in nets)
        assert s.contains(addr) is expected, (addr, nets)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**16)), max_size=10), v4_addrs)
def test_ranges_merge_without_changing_membership(pairs: list, probe: ipaddress.IPv4Address) -> None:
    lines = [f"{ipaddress.IPv4Address(lo)}-{ipaddress.IPv4Address(min(lo + span, 2**32 - 1))}" for lo, span in pairs]
    s = IntervalSet.from_lines(lines)
    expected = any(lo <= int(probe) <= min(lo + span, 2**32 - 1) for lo, span in pairs)
    assert s.contains(probe) is expected


def test_large_sets_answer_the_same_on_every_repeat() -> None:
    """Sets of hundreds of intervals give the oracle's answer, and the same answer again."""
    import random

    rnd = random.Random(5)
    nets = [ipaddress.ip_network((rnd.getrandbits(32), rnd.randint(8, 28)), strict=False) for _ in range(300)]
    nets += [ipaddress.ip_network((rnd.getrandbits(128), rnd.randint(16, 64)), strict=False) for _ in range(100)]
    s = IntervalSet.from_lines(str(n) for n in nets)
    assert len(s) > 64  # large enough to be a real list, not a handful of rules
    probes = [a for n in nets for a in (n.network_address, n.broadcast_address, n.broadcast_address + 1)]
    probes += [ipaddress.IPv4Address(rnd.getrandbits(32)) for _ in range(300)]
    probes += [ipaddress.IPv6Address((0xFFFF << 32) | int(n.network_address)) for n in nets if n.version == 4]
    for _ in range(2):
        for addr in probes:
            target = getattr(addr, "ipv4_mapped", None) or addr
            expected = any(target.version == n.version and target in n for n in nets)
            assert s.contains(addr) is expected, addr


def test_parses_cidrs_addresses_ranges_comments_and_extra_fields() -> None:
    s = IntervalSet.from_lines(
        ["# comment", "", "10.0.0.0/8", "192.0.2.7\t5", "198.51.100.1-198.51.100.9", "2001:db8::/32 ; note", "junk"]
    )
    assert s.invalid == 1
    assert "10.255.0.1" in s and "192.0.2.7" in s and "198.51.100.9" in s and "2001:db8:1::5" in s
    assert "198.51.100.10" not in s and "11.0.0.0" not in s and "2001:db9::" not in s
    assert "not an ip" not in s and None not in s


def test_ipv4_mapped_ipv6_client_matches_ipv4_ranges() -> None:
    s = IntervalSet.from_lines(["203.0.113.0/24"])
    assert s.contains(ip("::ffff:203.0.113.9"))


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "1.2.3", "2001:db8::/129", "1.2.3.9-1.2.3.1", "x"])
def test_bad_entries_raise_with_a_readable_message(bad: str) -> None:
    with pytest.raises(ValueError, match="is not|ends before"):
        parse_network(bad)


def test_hosting_asns_are_loaded_from_the_data_file() -> None:
    asns = load_hosting_asns()
    assert {16509, 15169, 8075, 14061, 24940} <= asns
    assert 13335 not in asns  # Cloudflare WARP carries people


def client(addr: str | None = None, ip_type: str | None = None, asn: int | None = None) -> ClientContext:
    return ClientContext(ip=ip(addr) if addr else None, user_agent="x", ip_type=ip_type, asn=asn)


def test_datacenter_shield_uses_header_ranges_and_asn() -> None:
    lists = LiveLists(datacenter_ips=IntervalSet.from_lines(["203.0.113.0/24"]), hosting_asns=frozenset({64500}))
    shield = DatacenterShield(lists)
    for c in (client(ip_type="dc_ip"), client("203.0.113.5"), client("192.0.2.1", asn=64500)):
        verdict = shield.check(EVENT, c, SITE)
        assert verdict is not None and verdict.reason is DropReason.DC_IP
    assert shield.check(EVENT, client("192.0.2.1", asn=64501), SITE) is None
    assert shield.check(EVENT, client("192.0.2.1", ip_type="anonymous_vpn_ip"), SITE) is None


def test_threat_shield_uses_header_and_list() -> None:
    lists = LiveLists(threat_ips=IntervalSet.from_lines(["198.51.100.66"]))
    shield = ThreatShield(lists)
    assert shield.check(EVENT, client("198.51.100.66"), SITE) is not None
    assert shield.check(EVENT, client(ip_type="threat_ip"), SITE) is not None
    assert shield.check(EVENT, client("198.51.100.67"), SITE) is None


def test_shields_without_lists_pass_everything() -> None:
    lists = LiveLists()
    assert DatacenterShield(lists).check(EVENT, client("203.0.113.5"), SITE) is None
    assert ThreatShield(lists).check(EVENT, client("203.0.113.5"), SITE) is None
