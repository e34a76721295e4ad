from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given, strategies as st

from gateway.ingest.client_ip import ClientIPResolver, parse_ip
from gateway.ingest.clients import MAX_KEY_CHARS, ClientMemo
from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from geo import GeoReader
from geo.testdb import nested_city_record, write_db

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


# --- the per-client memo of the request path ----------------------------------------------

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"
COLUMNS = RowColumns(cache_size=64)


def _geo(path: Path, country: str) -> Path:
    return write_db(path, [("81.2.69.0/24", nested_city_record(country, ("X",), city_geoname_id=7)),
                           ("203.0.113.0/24", nested_city_record("DE", city_geoname_id=9))])


def _direct(geo: GeoEnricher, peer: str, headers: dict[str, str]) -> tuple[object, object]:
    ip, kind = TRUSTED.resolve(peer, headers)
    loc, asn = geo.locate(ip, kind)
    ua = headers.get("user-agent", "")
    return (ip, ua, kind, loc.country_code or None, asn), COLUMNS.for_client(ua, loc)


def _answer(memo: ClientMemo, peer: str, headers: dict[str, str]) -> tuple[object, object]:
    client, columns = memo(peer, headers)
    return (client.ip, client.user_agent, client.ip_type, client.country_code, client.asn), columns


CASES = [
    ("10.0.0.1", {"x-forwarded-for": "81.2.69.7", "user-agent": UA}),
    ("10.0.0.1", {"x-forwarded-for": "81.2.69.7", "user-agent": UA + " other"}),
    ("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.5, 10.1.1.1", "user-agent": UA}),
    ("10.0.0.1", {"x-forwarded-for": "81.2.69.7", "x-plausible-ip-type": "anonymous_vpn_ip"}),
    ("10.0.0.1", {"cf-connecting-ip": "203.0.113.8", "x-real-ip": "81.2.69.9"}),
    ("10.0.0.1", {"x-real-ip": "81.2.69.9"}),
    ("10.0.0.1", {}),
    ("198.51.100.1", {"x-forwarded-for": "81.2.69.7", "x-plausible-ip-type": "dc_ip", "user-agent": UA}),
    ("81.2.69.200", {"user-agent": UA}),
    ("", {"x-forwarded-for": "81.2.69.7"}),
]


def test_the_memo_answers_what_the_resolver_and_geo_answer(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS)
    for peer, headers in CASES * 2:
        assert _answer(memo, peer, headers) == _direct(geo, peer, headers), (peer, headers)
    assert memo.cache_info().hits == len(CASES) and memo.cache_info().misses == len(CASES)
    # the same client's next request gets the very same context
    assert memo(*CASES[0])[0] is memo("10.0.0.1", dict(CASES[0][1]))[0]


def test_the_memo_reads_headers_in_any_case_from_sanics_header_type(tmp_path: Path) -> None:
    from sanic.compat import Header

    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS)
    for peer, headers in CASES:
        titled = Header([(name.title(), value) for name, value in headers.items()])
        assert _answer(memo, peer, titled) == _direct(geo, peer, headers), (peer, headers)


def test_clients_with_long_headers_are_worked_out_but_not_remembered(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS)
    headers = {"x-forwarded-for": "81.2.69.7", "user-agent": "x" * MAX_KEY_CHARS}
    assert _answer(memo, "10.0.0.1", headers) == _direct(geo, "10.0.0.1", headers)
    assert memo.cache_info().currsize == 0
    # a one-off context keeps no answers; a remembered one has a memo of its own
    assert memo("10.0.0.1", headers)[0].memo is None
    assert memo(*CASES[0])[0].memo == {}


def test_clear_forgets_every_client_and_their_kept_answers(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS)
    before = memo(*CASES[0])[0]
    assert before.memo is not None
    before.memo["kept"] = 1
    memo.clear()
    after = memo(*CASES[0])[0]
    assert after is not before and after.memo == {} and memo.cache_info().currsize == 1


def test_a_replaced_geo_database_empties_the_memo(tmp_path: Path) -> None:
    path = _geo(tmp_path / "city.mmdb", "GB")
    geo = GeoEnricher(GeoReader(path, reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS, size=16)
    peer, headers = CASES[0]
    assert memo(peer, headers)[0].country_code == "GB"
    _geo(path, "FR")
    assert geo.reader.check_for_updates() is True
    assert memo(peer, headers)[0].country_code == "GB"  # remembered until told
    memo.follow(geo.generation)
    client, columns = memo(peer, headers)
    assert client.country_code == "FR" and columns[0] == "FR"
    memo.follow(geo.generation)  # no change: the memo keeps what it has
    assert memo.cache_info().currsize == 1


def test_the_memo_is_bounded(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = ClientMemo(TRUSTED, geo, COLUMNS, size=8)
    for i in range(40):
        memo("10.0.0.1", {"x-forwarded-for": f"81.2.69.{i}", "user-agent": UA})
    assert memo.cache_info().currsize == 8


def test_without_a_geo_database_the_memo_still_resolves() -> None:
    memo = ClientMemo(TRUSTED, GeoEnricher(None), COLUMNS)
    client, columns = memo("10.0.0.1", {"x-forwarded-for": "81.2.69.7", "user-agent": UA})
    assert str(client.ip) == "81.2.69.7" and client.country_code is None
    assert columns[:4] == ("", "", "", 0) and columns[7] == "Firefox"
    memo.follow(GeoEnricher(None).generation)
