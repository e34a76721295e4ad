"""geo/: lookups in both record shapes, the v4/v6 pair, ASN merge and hot replacement.

Every database here is written by geo.testdb with mmdb-writer and read by the real maxminddb
C extension; nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo import GeoDatabaseError, GeoReader, Location, location_from_record
from geo.testdb import (
    SAMPLES,
    SampleNetwork,
    asn_record,
    flat_city_record,
    nested_city_record,
    write_asn,
    write_db,
    write_flat_city,
    write_flat_city_pair,
    write_nested_city,
)

LONDON = Location(country_code="GB", subdivision1_code="GB-ENG", city_geoname_id=2643743,
                  city_name="London", subdivision1_name="Region ENG")
BERLIN = Location(country_code="DE", subdivision1_code="DE-BE", city_geoname_id=2950159,
                  city_name="Berlin", subdivision1_name="Region BE")


@pytest.fixture
def nested(tmp_path: Path) -> GeoReader:
    return GeoReader(write_nested_city(tmp_path / "city.mmdb"))


@pytest.fixture
def flat_pair(tmp_path: Path) -> GeoReader:
    v4, v6 = write_flat_city_pair(tmp_path / "city-ipv4.mmdb", tmp_path / "city-ipv6.mmdb")
    return GeoReader(v4, v6)


# --- nested GeoIP2 shape -------------------------------------------------------------------

def test_ipv4_in_nested_file_gives_country_subdivision_and_city(nested: GeoReader) -> None:
    assert nested.lookup("81.2.69.142") == LONDON


def test_ipv6_in_nested_file_gives_country_subdivision_and_city(nested: GeoReader) -> None:
    assert nested.lookup("2a02:8108:1::1") == BERLIN


def test_second_subdivision_is_prefixed_with_the_country(nested: GeoReader) -> None:
    loc = nested.lookup("2.125.160.216")
    assert loc is not None
    assert (loc.subdivision1_code, loc.subdivision2_code) == ("GB-ENG", "GB-WBK")
    assert loc.city_geoname_id == 2655045


def test_address_objects_and_strings_give_the_same_answer(nested: GeoReader) -> None:
    for sample in SAMPLES:
        assert nested.lookup(ip_address(sample.address)) == nested.lookup(sample.address)


@pytest.mark.parametrize("address", ["::ffff:81.2.69.142", "::FFFF:5102:458e", "0:0:0:0:0:ffff:81.2.69.142"])
def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(nested: GeoReader, address: str) -> None:
    assert nested.lookup(address) == LONDON
    assert nested.lookup(IPv6Address(address)) == LONDON


@pytest.mark.parametrize("address", ["127.0.0.1", "9.9.9.9", "::1", "2001:db8::1", "fe80::1%eth0"])
def test_address_not_in_the_database_is_none(nested: GeoReader, address: str) -> None:
    assert nested.lookup(address) is None


@pytest.mark.parametrize("bad", ["", "not an ip", "1.2.3", "010.0.0.1", "81.2.69.142/24", "1.2.3.4.5",
                                 "::ffff:zz", " 81.2.69.142", "81.2.69.142\x00", None, 81, b"\x51\x02\x45\x8e",
                                 3.5, ["81.2.69.142"]])
def test_invalid_input_is_none_not_an_exception(nested: GeoReader, bad: object) -> None:
    assert nested.lookup(bad) is None  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shared_reader(tmp_path_factory: pytest.TempPathFactory) -> GeoReader:
    return GeoReader(write_nested_city(tmp_path_factory.mktemp("geo") / "city.mmdb"), cache_size=32)


@given(value=st.one_of(st.text(max_size=60), st.binary(max_size=20), st.integers(), st.none()))
def test_lookup_never_raises(shared_reader: GeoReader, value: object) -> None:
    result = shared_reader.lookup(value)  # type: ignore[arg-type]
    assert result is None or isinstance(result, Location)


@pytest.mark.parametrize("address", ["10.0.0.7", "10.0.1.7", "10.0.2.7", "2001:db8:ffff::1"])
@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_zz_xx_t1_mean_unknown_country_and_no_city(tmp_path: Path, shape: str, address: str) -> None:
    path = tmp_path / "db.mmdb"
    reader = GeoReader(write_nested_city(path) if shape == "nested" else write_flat_city(path))
    assert reader.lookup(address) is None


# --- flat ip-location-db shape -------------------------------------------------------------

def test_flat_shape_gives_country_and_names_but_no_invented_codes(tmp_path: Path) -> None:
    reader = GeoReader(write_flat_city(tmp_path / "flat.mmdb"))
    assert reader.lookup("89.160.20.112") == Location(
        country_code="SE", city_name="Linköping", subdivision1_name="Östergötland County")
    assert reader.lookup("2.125.160.216") == Location(
        country_code="GB", city_name="Boxford", subdivision1_name="England",
        subdivision2_name="West Berkshire")


def test_split_pair_answers_ipv4_from_the_v4_file_and_ipv6_from_the_v6_file(flat_pair: GeoReader) -> None:
    assert flat_pair.lookup("81.2.69.142") == Location(country_code="GB", city_name="London",
                                                       subdivision1_name="England")
    assert flat_pair.lookup("2001:480::52") == Location(country_code="US", city_name="San Francisco",
                                                        subdivision1_name="California")
    assert [db.ip_version for db in flat_pair.databases] == [4, 6]


def test_split_pair_looks_up_mapped_ipv6_in_the_v4_file(flat_pair: GeoReader) -> None:
    # The v6 file of the pair has no IPv4 subtree, so a mapped address must not go there.
    loc = flat_pair.lookup("::ffff:81.2.69.142")
    assert loc is not None and loc.city_name == "London"


def test_ipv4_only_file_alone_answers_none_for_ipv6(tmp_path: Path) -> None:
    reader = GeoReader(write_flat_city(tmp_path / "v4.mmdb", ip_version=4))
    assert reader.lookup("81.2.69.142") is not None
    assert reader.lookup("2a02:8108:1::1") is None
    assert reader.lookup("::ffff:81.2.69.142") is not None


def test_flat_record_with_geoname_id_keeps_it() -> None:
    record = flat_city_record("DE", "Bavaria", "", "Munich") | {"city_geoname_id": 2867714}
    loc = location_from_record(record)
    assert loc is not None and (loc.city_geoname_id, loc.city_name) == (2867714, "Munich")


def test_country_only_flat_record_has_just_the_country() -> None:
    assert location_from_record({"country_code": "nl"}) == Location(country_code="NL")


def test_nested_record_without_english_name_uses_the_one_it_has() -> None:
    record = {"country": {"iso_code": "JP"}, "city": {"geoname_id": 1850147, "names": {"ja": "東京"}}}
    assert location_from_record(record) == Location(country_code="JP", city_geoname_id=1850147,
                                                    city_name="東京")


# --- ASN ------------------------------------------------------------------------------------

def test_asn_database_adds_asn_to_the_city_answer(tmp_path: Path) -> None:
    reader = GeoReader(write_nested_city(tmp_path / "city.mmdb"), asn_database=write_asn(tmp_path / "asn.mmdb"))
    loc = reader.lookup("81.2.69.142")
    assert loc is not None
    assert (loc.country_code, loc.asn, loc.as_org) == ("GB", 20712, "Andrews & Arnold Ltd")
    loc6 = reader.lookup("2a02:8108:1::1")
    assert loc6 is not None and (loc6.city_geoname_id, loc6.asn) == (2950159, 3209)


def test_asn_without_a_city_entry_still_gives_the_asn(tmp_path: Path) -> None:
    reader = GeoReader(write_nested_city(tmp_path / "city.mmdb"), asn_database=write_asn(tmp_path / "asn.mmdb"))
    assert reader.lookup("203.0.113.9") == Location(asn=64500, as_org="Example Hosting")


def test_asn_in_the_city_record_wins_over_the_asn_file(tmp_path: Path) -> None:
    city = write_db(tmp_path / "city.mmdb", [("81.2.69.0/24", nested_city_record(
        "GB", ("ENG",), city_geoname_id=2643743, asn=1, as_org="From city file"))])
    reader = GeoReader(city, asn_database=write_asn(tmp_path / "asn.mmdb"))
    loc = reader.lookup("81.2.69.1")
    assert loc is not None and (loc.asn, loc.as_org) == (1, "From city file")


@pytest.mark.parametrize("record, expected", [
    (asn_record(15169, "Google LLC"), (15169, "Google LLC")),
    ({"asn": "AS13335", "as_name": "Cloudflare, Inc.", "country_code": "US"}, (13335, "Cloudflare, Inc.")),
    ({"country": {"iso_code": "US"}, "traits": {"autonomous_system_number": 16509,
                                                "autonomous_system_organization": "AMAZON-02"}},
     (16509, "AMAZON-02")),
])
def test_asn_is_read_from_every_known_field_layout(record: dict[str, object], expected: tuple[int, str]) -> None:
    loc = location_from_record(record)
    assert loc is not None and (loc.asn, loc.as_org) == expected


# --- cache ----------------------------------------------------------------------------------

def test_cached_and_uncached_readers_agree(tmp_path: Path) -> None:
    path = write_nested_city(tmp_path / "city.mmdb")
    cached, plain = GeoReader(path, cache_size=16), GeoReader(path, cache_size=0)
    addresses = [s.address for s in SAMPLES] + ["::ffff:81.2.69.142", "9.9.9.9", "bad"]
    for _ in range(3):
        for a in addresses:
            assert cached.lookup(a) == plain.lookup(a)
            assert cached.lookup(ip_address(a) if a != "bad" else a) == plain.lookup(a)


def test_the_readers_answers_stay_bounded_and_a_kept_answer_is_the_files(tmp_path: Path) -> None:
    path = write_nested_city(tmp_path / "city.mmdb")
    reader, plain = GeoReader(path, cache_size=8), GeoReader(path, cache_size=0)
    for n in range(100):  # never-seen addresses, as in a flood
        address = f"81.2.69.{n}"
        assert reader.lookup(ip_address(address)) == plain.lookup(address)
        assert 1 <= len(reader._find) <= 8
    assert len(plain._find) == 0


def test_threads_sharing_a_reader_whose_answers_are_cleared_all_the_time_get_the_files_answers(
        tmp_path: Path) -> None:
    path = write_nested_city(tmp_path / "city.mmdb")
    reader, plain = GeoReader(path, cache_size=2), GeoReader(path, cache_size=0)
    addresses = [ip_address(f"81.2.69.{n}") for n in range(40)] + [ip_address(s.address) for s in SAMPLES]
    expected = {a: plain.lookup(a) for a in addresses}
    wrong: list[object] = []

    def ask() -> None:
        try:
            for _ in range(200):
                for a in addresses:
                    if reader.lookup(a) != expected[a]:
                        wrong.append(a)
        except Exception as exc:  # noqa: BLE001  # a thread's exception would not fail the test
            wrong.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and len(reader._find) <= 2


# --- opening and hot replacement ------------------------------------------------------------

def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError, match="nope.mmdb"):
        GeoReader(tmp_path / "nope.mmdb")


def test_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(GeoDatabaseError, match="not a usable MaxMind-format database"):
        GeoReader(junk)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _one_network(path: Path, country: str) -> Path:
    return write_db(path, [("81.2.69.0/24", nested_city_record(country, ("X",), city_geoname_id=7))])


def test_replaced_file_is_seen_after_the_check_interval_and_not_before(tmp_path: Path) -> None:
    path = _one_network(tmp_path / "city.mmdb", "GB")
    clock = FakeClock()
    reader = GeoReader(path, reload_check_seconds=5, clock=clock)
    assert reader.lookup("81.2.69.1").country_code == "GB"  # type: ignore[union-attr]
    _one_network(path, "FR")
    clock.now += 4.9
    assert reader.lookup("81.2.69.1").country_code == "GB"  # type: ignore[union-attr]  # cached and unchecked
    clock.now += 0.2
    assert reader.lookup("81.2.69.1").country_code == "FR"  # type: ignore[union-attr]


def test_broken_replacement_keeps_the_old_data_until_a_good_one_arrives(tmp_path: Path) -> None:
    path = _one_network(tmp_path / "city.mmdb", "GB")
    reader = GeoReader(path, reload_check_seconds=None)
    tmp = tmp_path / "partial"
    tmp.write_bytes(path.read_bytes()[:100])
    os.replace(tmp, path)
    assert reader.check_for_updates() is False
    assert reader.lookup("81.2.69.1").country_code == "GB"  # type: ignore[union-attr]
    path.unlink()  # removed between two updates: keep serving too
    assert reader.check_for_updates() is False
    assert reader.lookup("81.2.69.1").country_code == "GB"  # type: ignore[union-attr]
    _one_network(path, "FR")
    assert reader.check_for_updates() is True
    assert reader.lookup("81.2.69.1").country_code == "FR"  # type: ignore[union-attr]


@pytest.mark.parametrize("interval", [None, 0, -1])
def test_zero_or_no_interval_never_stats_on_lookup(tmp_path: Path, interval: float | None) -> None:
    path = _one_network(tmp_path / "city.mmdb", "GB")
    clock = FakeClock()
    reader = GeoReader(path, reload_check_seconds=interval, clock=clock)
    _one_network(path, "FR")
    clock.now += 10**6
    assert reader.lookup("81.2.69.1").country_code == "GB"  # type: ignore[union-attr]


def test_each_file_of_a_pair_and_the_asn_file_is_followed(tmp_path: Path) -> None:
    v4, v6 = write_flat_city_pair(tmp_path / "v4.mmdb", tmp_path / "v6.mmdb")
    asn = write_asn(tmp_path / "asn.mmdb")
    reader = GeoReader(v4, v6, asn, reload_check_seconds=None)
    changed = [SampleNetwork("2a02:8108::/32", "2a02:8108:1::1", "AT", (), None, "Wien", ("Wien",))]
    write_flat_city_pair(tmp_path / "v4b.mmdb", v6, changed)
    write_asn(asn, [("81.2.69.0/24", 1, "New AS")])
    assert reader.lookup("2a02:8108:1::1").country_code == "DE"  # type: ignore[union-attr]  # checks disabled
    assert reader.check_for_updates() is True
    assert reader.lookup("2a02:8108:1::1").country_code == "AT"  # type: ignore[union-attr]
    assert reader.lookup("81.2.69.142").asn == 1  # type: ignore[union-attr]
    assert reader.check_for_updates() is False


def test_hot_replacement_under_load_never_fails_a_lookup(tmp_path: Path) -> None:
    """A thread looks up in a loop while the file is replaced (atomic rename) several times."""
    path = _one_network(tmp_path / "city.mmdb", "C0")
    interval = 0.05
    reader = GeoReader(path, reload_check_seconds=interval, cache_size=64)
    stop = threading.Event()
    seen: list[str | None] = []
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                for addr in ("81.2.69.1", IPv4Address("81.2.69.2"), "::ffff:81.2.69.3"):
                    loc = reader.lookup(addr)
                    seen.append(loc.country_code if isinstance(loc, Location) else None)
        except BaseException as exc:  # noqa: BLE001 - any exception is the failure under test
            errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        for generation in range(1, 6):
            country = f"C{generation}"
            _one_network(path, country)
            deadline = time.monotonic() + interval * 40
            while time.monotonic() < deadline and (not seen or seen[-1] != country):
                time.sleep(interval / 5)
            assert seen[-1] == country, f"{country} not served within the check interval"
    finally:
        stop.set()
        worker.join(5)
    assert not errors
    assert len(seen) > 1000
    assert None not in seen
    assert set(seen) <= {f"C{g}" for g in range(6)}
    # Once a generation is seen, an older one never comes back.
    generations = [int(c[1:]) for c in seen if c]
    assert generations == sorted(generations)



_WORKER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from geo import GeoReader
reader = GeoReader(sys.argv[1], reload_check_seconds=0.05)
print(reader.lookup("81.2.69.1").country_code, flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    loc = reader.lookup("81.2.69.1")
    if loc is None:
        print("FAILED", flush=True)
        sys.exit(1)
    if loc.country_code == "FR":
        print("FR", flush=True)
        sys.exit(0)
    time.sleep(0.005)
sys.exit(2)
"""


def test_every_worker_process_switches_without_a_restart(tmp_path: Path) -> None:
    path = _one_network(tmp_path / "city.mmdb", "GB")
    root = str(Path(__file__).resolve().parents[1])
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), root], stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        assert [w.stdout.readline().strip() for w in workers] == ["GB", "GB"]  # type: ignore[union-attr]
        _one_network(path, "FR")
        for w in workers:
            assert w.wait(timeout=30) == 0
            assert w.stdout.read().split() == ["FR"]  # type: ignore[union-attr]
    finally:
        for w in workers:
            w.kill()
            w.wait()
