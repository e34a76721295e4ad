"""Small MaxMind-format databases written with ``mmdb-writer``, for tests, benchmarks and load tests.

Nothing here is downloaded: the records are made up in the two shapes the reader understands
(nested GeoIP2 City and flat ip-location-db) plus an ASN file, so tests exercise the real
``maxminddb`` C reader on files the repository builds itself. ``mmdb-writer`` (and ``netaddr``)
are test dependencies, imported only when a database is written.

IPv4 networks in an IPv6 file are stored under ``::/96`` (``ipv4_compatible=True``), which is
where libmaxminddb looks IPv4 addresses up in an IPv6 tree.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ASN_SAMPLES",
    "SAMPLES",
    "SampleNetwork",
    "asn_record",
    "flat_city_record",
    "nested_city_record",
    "write_asn",
    "write_db",
    "write_flat_city",
    "write_flat_city_pair",
    "write_nested_city",
    "write_random_db",
]

# The languages GeoLite2 City carries names in; the nested records use all of them so that the
# decode cost measured on test files is close to that of the real files.
_LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def _names(name: str) -> dict[str, str]:
    return {lang: name for lang in _LANGUAGES}


def nested_city_record(country: str, subdivisions: Sequence[str] = (), *, city_geoname_id: int | None = None,
                       city_name: str | None = None, asn: int | None = None,
                       as_org: str | None = None) -> dict[str, Any]:
    """A record shaped like GeoIP2/GeoLite2 City (``country.iso_code``, ``subdivisions``, ``city``)."""
    record: dict[str, Any] = {
        "continent": {"code": "EU", "geoname_id": 6255148, "names": _names("Europe")},
        "country": {"geoname_id": 2635167, "iso_code": country, "names": _names(f"Country {country}")},
        "registered_country": {"geoname_id": 2635167, "iso_code": country,
                               "names": _names(f"Country {country}")},
        "location": {"accuracy_radius": 20, "latitude": 51.5, "longitude": -0.1,
                     "time_zone": "Europe/London"},
        "postal": {"code": "EC4R"},
    }
    if subdivisions:
        record["subdivisions"] = [
            {"geoname_id": 6269131 + i, "iso_code": iso, "names": _names(f"Region {iso}")}
            for i, iso in enumerate(subdivisions)
        ]
    if city_geoname_id is not None or city_name is not None:
        city: dict[str, Any] = {}
        if city_geoname_id is not None:
            city["geoname_id"] = city_geoname_id
        if city_name is not None:
            city["names"] = _names(city_name)
        record["city"] = city
    if asn is not None:
        record["traits"] = {"autonomous_system_number": asn,
                            "autonomous_system_organization": as_org or ""}
    return record


def flat_city_record(country_code: str, state1: str = "", state2: str = "", city: str = "") -> dict[str, Any]:
    """A record shaped like the ip-location-db city files (empty strings where they have no value)."""
    return {"city": city, "country_code": country_code, "latitude": 51.5, "longitude": -0.1,
            "postcode": "", "state1": state1, "state2": state2, "timezone": ""}


def asn_record(asn: int, org: str) -> dict[str, Any]:
    """A record shaped like GeoLite2-ASN / DB-IP ASN Lite."""
    return {"autonomous_system_number": asn, "autonomous_system_organization": org}


def write_db(path: str | os.PathLike[str], networks: Iterable[tuple[str, Mapping[str, Any]]], *,
             ip_version: int = 6, database_type: str = "GeoIP2-City") -> Path:
    """Write ``(cidr, record)`` pairs to ``path`` atomically (temp file, fsync, rename); return the path.

    The rename makes it safe to overwrite a file a ``GeoReader`` is serving, exactly as an
    operator's monthly update should.
    """
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet  # type: ignore[import-untyped]

    target = Path(path)
    writer = MMDBWriter(ip_version=ip_version, database_type=database_type,
                        languages=["en"], description="edge-gateway test database",
                        ipv4_compatible=ip_version == 6)
    for cidr, record in networks:
        writer.insert_network(IPSet([cidr]), dict(record))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer.to_db_file(str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


@dataclass(frozen=True, slots=True)
class SampleNetwork:
    """One network written by the ``write_*`` helpers, with an address inside it."""

    cidr: str
    address: str
    country: str
    subdivisions: tuple[str, ...] = ()
    city_geoname_id: int | None = None
    city_name: str | None = None
    state_names: tuple[str, ...] = ()


SAMPLES: tuple[SampleNetwork, ...] = (
    SampleNetwork("81.2.69.0/24", "81.2.69.142", "GB", ("ENG",), 2643743, "London", ("England",)),
    SampleNetwork("89.160.20.0/24", "89.160.20.112", "SE", ("E",), 2694762, "Linköping",
                  ("Östergötland County",)),
    SampleNetwork("2.125.160.0/20", "2.125.160.216", "GB", ("ENG", "WBK"), 2655045, "Boxford",
                  ("England", "West Berkshire")),
    SampleNetwork("2a02:8108::/32", "2a02:8108:1::1", "DE", ("BE",), 2950159, "Berlin",
                  ("State of Berlin",)),
    SampleNetwork("2001:480::/32", "2001:480::52", "US", ("CA",), 5391959, "San Francisco",
                  ("California",)),
    # Unknown-country placeholders: the reader must report no country (and so no city).
    SampleNetwork("10.0.0.0/24", "10.0.0.7", "ZZ", ("X",), 1, "Nowhere", ("Nowhere",)),
    SampleNetwork("10.0.1.0/24", "10.0.1.7", "XX", (), None, None),
    SampleNetwork("10.0.2.0/24", "10.0.2.7", "T1", (), None, None),
    SampleNetwork("2001:db8:ffff::/48", "2001:db8:ffff::1", "ZZ", (), None, None),
)

ASN_SAMPLES: tuple[tuple[str, int, str], ...] = (
    ("81.2.69.0/24", 20712, "Andrews & Arnold Ltd"),
    ("2a02:8108::/32", 3209, "Vodafone GmbH"),
    ("203.0.113.0/24", 64500, "Example Hosting"),
)


def _split(samples: Iterable[SampleNetwork], version: int | None) -> list[SampleNetwork]:
    return [s for s in samples if version is None or (":" in s.cidr) == (version == 6)]


def write_nested_city(path: str | os.PathLike[str], samples: Iterable[SampleNetwork] = SAMPLES) -> Path:
    """One IPv6 file with IPv4 and IPv6 networks, GeoIP2 City shape (like GeoLite2-City.mmdb)."""
    return write_db(path, ((s.cidr, nested_city_record(s.country, s.subdivisions,
                                                       city_geoname_id=s.city_geoname_id,
                                                       city_name=s.city_name))
                           for s in samples))


def _flat(s: SampleNetwork) -> dict[str, Any]:
    states = s.state_names + ("", "")
    return flat_city_record(s.country, states[0], states[1], s.city_name or "")


def write_flat_city(path: str | os.PathLike[str], samples: Iterable[SampleNetwork] = SAMPLES, *,
                    ip_version: int = 6) -> Path:
    """One file in the ip-location-db flat shape (IPv6 with IPv4 inside, or IPv4 only)."""
    chosen = _split(samples, 4 if ip_version == 4 else None)
    return write_db(path, ((s.cidr, _flat(s)) for s in chosen), ip_version=ip_version,
                    database_type="city")


def write_flat_city_pair(path_v4: str | os.PathLike[str], path_v6: str | os.PathLike[str],
                         samples: Iterable[SampleNetwork] = SAMPLES) -> tuple[Path, Path]:
    """The split pair ip-location-db ships: an IPv4-only file and an IPv6 file without IPv4."""
    chosen = list(samples)
    v4 = write_db(path_v4, ((s.cidr, _flat(s)) for s in _split(chosen, 4)), ip_version=4,
                  database_type="city")
    v6 = write_db(path_v6, ((s.cidr, _flat(s)) for s in _split(chosen, 6)), ip_version=6,
                  database_type="city")
    return v4, v6


def write_asn(path: str | os.PathLike[str],
              entries: Iterable[tuple[str, int, str]] = ASN_SAMPLES) -> Path:
    """An ASN file (GeoLite2-ASN shape), IPv6 with IPv4 inside."""
    return write_db(path, ((cidr, asn_record(asn, org)) for cidr, asn, org in entries),
                    database_type="GeoLite2-ASN")


def write_random_db(path: str | os.PathLike[str], shape: str, *, networks: int = 5000,
                    seed: int = 1) -> tuple[Path, list[str]]:
    """A file of ``networks`` random IPv4 /24s and IPv6 /48s in ``shape`` ("nested" or "flat").

    Returns the path and one address inside each network, for benchmarks and load tests.
    """
    if shape not in ("nested", "flat"):
        raise ValueError(f"shape must be 'nested' or 'flat', not {shape!r}")
    rng = random.Random(seed)
    countries = ("US", "DE", "GB", "FR", "JP", "BR", "IN", "SE", "NL", "CA")
    seen: set[str] = set()
    entries: list[tuple[str, dict[str, Any]]] = []
    addresses: list[str] = []
    while len(entries) < networks:
        if rng.random() < 0.7:
            a, b, c = rng.randrange(1, 224), rng.randrange(256), rng.randrange(256)
            cidr, address = f"{a}.{b}.{c}.0/24", f"{a}.{b}.{c}.{rng.randrange(1, 255)}"
        else:
            g = [rng.randrange(0x2001, 0x2c00), rng.randrange(0x10000), rng.randrange(0x10000)]
            prefix = ":".join(f"{x:x}" for x in g)
            cidr, address = f"{prefix}::/48", f"{prefix}:{rng.randrange(0x10000):x}::{rng.randrange(1, 0xffff):x}"
        if cidr in seen:
            continue
        seen.add(cidr)
        cc = countries[len(entries) % len(countries)]
        n = len(entries)
        if shape == "nested":
            record = nested_city_record(cc, (f"R{n % 90}",), city_geoname_id=100000 + n,
                                        city_name=f"City {n}")
        else:
            record = flat_city_record(cc, f"Region {n % 90}", "", f"City {n}")
        entries.append((cidr, record))
        addresses.append(address)
    return write_db(path, entries, database_type="GeoIP2-City" if shape == "nested" else "city"), addresses
