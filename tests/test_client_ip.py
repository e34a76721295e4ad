from __future__ import annotations

import ipaddress

from hypothesis import given, strategies as st

from gateway.client_ip import ClientIPResolver, parse_ip

TRUSTED = ClientIPResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


def test_untrusted_peer_is_the_client_whatever_the_headers_say() -> None:
    ip, ip_type = TRUSTED.resolve("198.51.100.1", {"x-forwarded-for": "1.2.3.4", "x-plausible-ip-type": "dc_ip"})
    assert str(ip) == "198.51.100.1" and ip_type is None


def test_trusted_proxy_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    ip, _ = TRUSTED.resolve("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.5, 10.1.1.1"})
    assert str(ip) == "203.0.113.5"


def test_forwarded_for_made_only_of_proxies_gives_the_leftmost_one() -> None:
    ip, _ = TRUSTED.resolve("10.0.0.1", {"x-forwarded-for": "10.2.2.2, 10.1.1.1"})
    assert str(ip) == "10.2.2.2"


def test_unreadable_hop_stops_the_walk() -> None:
    ip, _ = TRUSTED.resolve("10.0.0.1", {"x-forwarded-for": "203.0.113.5, garbage, 10.1.1.1"})
    assert str(ip) == "10.1.1.1"


def test_cf_connecting_ip_then_x_real_ip_when_no_forwarded_for() -> None:
    ip, _ = TRUSTED.resolve("10.0.0.1", {"cf-connecting-ip": "203.0.113.8", "x-real-ip": "203.0.113.9"})
    assert str(ip) == "203.0.113.8"
    ip, _ = TRUSTED.resolve("10.0.0.1", {"x-real-ip": "203.0.113.9"})
    assert str(ip) == "203.0.113.9"


def test_ip_type_header_is_honoured_only_from_a_trusted_proxy_and_only_known_values() -> None:
    assert TRUSTED.resolve("10.0.0.1", {"x-plausible-ip-type": "DC_IP"})[1] == "dc_ip"
    assert TRUSTED.resolve("10.0.0.1", {"x-plausible-ip-type": "nonsense"})[1] is None
    assert TRUSTED.resolve("192.0.2.1", {"x-plausible-ip-type": "threat_ip"})[1] is None


def test_ports_brackets_and_mapped_addresses_are_normalised() -> None:
    assert str(parse_ip("203.0.113.5:8080")) == "203.0.113.5"
    assert str(parse_ip("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_ip("::ffff:203.0.113.5")) == "203.0.113.5"
    assert str(parse_ip("2001:DB8::1")) == "2001:db8::1"
    assert parse_ip("unknown") is None and parse_ip("") is None and parse_ip("[::1") is None


def test_mapped_peer_is_matched_against_v4_proxies() -> None:
    ip, _ = TRUSTED.resolve("::ffff:10.0.0.1", {"x-forwarded-for": "203.0.113.5"})
    assert str(ip) == "203.0.113.5"


@given(st.text(max_size=200), st.text(max_size=200))
def test_malformed_headers_never_raise(xff: str, real: str) -> None:
    TRUSTED.resolve("10.0.0.1", {"x-forwarded-for": xff, "x-real-ip": real, "cf-connecting-ip": real,
                                 "x-plausible-ip-type": real})
