from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given, strategies as st

from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from gateway.ingest.client_ip import ClientIPResolver, parse_ip
from gateway.ingest.clients import MAX_KEY_CHARS, ClientMemo
from gateway.state.generation import Generation
from geo import GeoReader
from geo.testdb import nested_city_record, write_db
from shields.intervals import IntervalSet

TRUSTED = ClientIPResolver(IntervalSet.from_lines(["10.0.0.0/8", "fd00::/8"]))


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
    loc = geo.locate(ip, kind)
    ua = headers.get("user-agent", "")
    country = loc.country_code if loc is not None else None
    return (ip, ua, kind, country, loc.asn if loc is not None else None), COLUMNS.for_client(ua, loc)


def _answer(memo: ClientMemo, peer: str, headers: dict[str, str]) -> tuple[object, object]:
    client = memo(peer, headers)
    return (client.ip, client.user_agent, client.ip_type, client.country_code, client.asn), client.columns


def _memo(geo: GeoEnricher, size: int = 8192, generation: Generation | None = None) -> ClientMemo:
    return ClientMemo(TRUSTED, geo, COLUMNS, generation or Generation(), size=size)


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
    memo = _memo(geo)
    for peer, headers in CASES * 2:
        assert _answer(memo, peer, headers) == _direct(geo, peer, headers), (peer, headers)
    assert memo.cache_info().hits == len(CASES) and memo.cache_info().misses == len(CASES)
    # the same client's next request gets the very same context
    assert memo(*CASES[0]) is memo("10.0.0.1", dict(CASES[0][1]))


def test_the_memo_reads_headers_in_any_case_from_sanics_header_type(tmp_path: Path) -> None:
    from sanic.compat import Header

    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = _memo(geo)
    for peer, headers in CASES:
        titled = Header([(name.title(), value) for name, value in headers.items()])
        assert _answer(memo, peer, titled) == _direct(geo, peer, headers), (peer, headers)


def test_clients_with_long_headers_are_worked_out_but_not_remembered(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = _memo(geo)
    headers = {"x-forwarded-for": "81.2.69.7", "user-agent": "x" * MAX_KEY_CHARS}
    assert _answer(memo, "10.0.0.1", headers) == _direct(geo, "10.0.0.1", headers)
    assert memo.cache_info().currsize == 0
    # a one-off client keeps no answers; a remembered one has room for its own
    one_off = memo("10.0.0.1", headers)
    assert one_off.verdicts is None and one_off.visitor_ids is None
    kept = memo(*CASES[0])
    assert kept.verdicts == {} and kept.visitor_ids == {}


def test_a_new_generation_forgets_every_client_and_their_kept_answers(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    generation = Generation()
    memo = _memo(geo, generation=generation)
    before = memo(*CASES[0])
    assert before.verdicts is not None
    before.verdicts["kept"] = None
    generation.bump()
    after = memo(*CASES[0])
    assert after is not before and after.verdicts == {} and memo.cache_info().currsize == 1
    assert after.generation == generation.value != before.generation


def test_a_replaced_geo_database_reaches_the_memo_through_the_generation(tmp_path: Path) -> None:
    path = _geo(tmp_path / "city.mmdb", "GB")
    geo = GeoEnricher(GeoReader(path, reload_check_seconds=None))
    generation = Generation()
    memo = _memo(geo, 16, generation)
    peer, headers = CASES[0]
    assert memo(peer, headers).country_code == "GB"
    _geo(path, "FR")
    assert geo.reader.check_for_updates() is True
    assert memo(peer, headers).country_code == "GB"  # remembered until the generation moves
    generation.bump()  # what the worker does when geo.generation moved (gateway/runtime.py)
    client = memo(peer, headers)
    assert client.country_code == "FR" and client.columns[0] == "FR"
    assert memo(peer, headers) is client  # no change: the memo keeps what it has
    assert memo.cache_info().currsize == 1


def test_the_memo_is_bounded(tmp_path: Path) -> None:
    geo = GeoEnricher(GeoReader(_geo(tmp_path / "city.mmdb", "GB"), reload_check_seconds=None))
    memo = _memo(geo, 8)
    for i in range(40):
        memo("10.0.0.1", {"x-forwarded-for": f"81.2.69.{i}", "user-agent": UA})
    assert memo.cache_info().currsize == 8


def test_without_a_geo_database_the_memo_still_resolves() -> None:
    memo = _memo(GeoEnricher(None))
    client = memo("10.0.0.1", {"x-forwarded-for": "81.2.69.7", "user-agent": UA})
    assert str(client.ip) == "81.2.69.7" and client.country_code is None
    assert client.columns[:4] == ("", "", "", 0) and client.columns[7] == "Firefox"
    assert GeoEnricher(None).generation == 0
