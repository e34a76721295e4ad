"""The lookup result and how each record shape found in the wild becomes one.

Two shapes of MaxMind-format (MMDB) record are read:

* the nested GeoIP2 shape of GeoLite2, GeoIP2 and DB-IP's own files:
  ``country.iso_code``, ``subdivisions[i].iso_code``, ``city.geoname_id``, ``city.names.en``;
* the flat shape of the ip-location-db packages: ``country_code``, ``state1``, ``state2``,
  ``city`` (and for their country files, ``country_code`` alone).

In the flat shape ``state1``/``state2``/``city`` are *names* ("California", "Berlin"), not ISO
3166-2 codes or GeoNames ids, so they land in the ``*_name`` fields and the code/id fields stay
``None``: inventing a code from a name would store wrong data that looks right.

ASN fields are read from whichever record carries them: top-level
``autonomous_system_number``/``autonomous_system_organization`` (GeoLite2-ASN, DB-IP ASN,
ip-location-db), the same keys under ``traits`` (GeoIP2 Enterprise/ISP), or ``asn: "AS123"`` with
``as_name`` (ipinfo's free files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["UNKNOWN_COUNTRY_CODES", "Location", "location_from_record", "merge_asn"]

# Plausible treats these as "no country" (lib/plausible/ingestion/geolocation.ex): ZZ is
# ISO's user-assigned "unknown", XX DB-IP's and others' placeholder, T1 Cloudflare's Tor code.
UNKNOWN_COUNTRY_CODES: frozenset[str] = frozenset({"ZZ", "XX", "T1"})


@dataclass(frozen=True, slots=True)
class Location:
    """What one address resolves to. ``None`` means the database does not say.

    ``subdivision1_code``/``subdivision2_code`` are ``"<CC>-<iso>"`` (``"GB-ENG"``), the form
    Plausible stores. Subdivisions and city are only set when the country is known, as in
    Plausible; ASN fields are independent of the country.
    """

    country_code: str | None = None
    subdivision1_code: str | None = None
    subdivision2_code: str | None = None
    city_geoname_id: int | None = None
    city_name: str | None = None
    subdivision1_name: str | None = None
    subdivision2_name: str | None = None
    asn: int | None = None
    as_org: str | None = None


def _country(value: Any) -> str | None:
    if type(value) is not str or len(value) != 2:
        return None
    code = value.upper()
    return None if code in UNKNOWN_COUNTRY_CODES else code


def _text(value: Any) -> str | None:
    # Flat files write "" for a missing state or city.
    return value if type(value) is str and value else None


def _int(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


# Decoded records are plain dicts and lists; ``type(x) is dict`` is checked rather than
# ``isinstance(x, Mapping)`` because the ABC check costs ~0.2 µs each on the cold path.

def _name(node: Any) -> str | None:
    if type(node) is not dict:
        return None
    names = node.get("names")
    if type(names) is not dict or not names:
        return None
    name = names.get("en")
    if name is None:
        # Some files carry only the local language; a name is better than none.
        name = next(iter(names.values()))
    return _text(name)


def _asn(record: Mapping[str, Any]) -> tuple[int | None, str | None]:
    number = record.get("autonomous_system_number")
    if number is not None:
        return _int(number), _text(record.get("autonomous_system_organization"))
    traits = record.get("traits")
    if type(traits) is dict and "autonomous_system_number" in traits:
        return (_int(traits.get("autonomous_system_number")),
                _text(traits.get("autonomous_system_organization")))
    tagged = record.get("asn")
    if type(tagged) is str and tagged[:2].upper() == "AS" and tagged[2:].isdigit():
        return _int(int(tagged[2:])), _text(record.get("as_name"))
    if type(tagged) is int:
        return _int(tagged), _text(record.get("as_name"))
    return None, None


def _nested(record: Mapping[str, Any], country: Mapping[str, Any]) -> Location | None:
    cc = _country(country.get("iso_code"))
    asn, as_org = _asn(record)
    if cc is None:
        return Location(asn=asn, as_org=as_org) if asn is not None or as_org else None
    codes: list[str | None] = [None, None]
    names: list[str | None] = [None, None]
    subdivisions = record.get("subdivisions")
    if type(subdivisions) is list:
        for i, sub in enumerate(subdivisions[:2]):
            if type(sub) is dict:
                iso = _text(sub.get("iso_code"))
                codes[i] = f"{cc}-{iso}" if iso else None
                names[i] = _name(sub)
    city = record.get("city")
    geoname_id = city_name = None
    if type(city) is dict:
        geoname_id = _int(city.get("geoname_id"))
        city_name = _name(city)
    return Location(cc, codes[0], codes[1], geoname_id, city_name, names[0], names[1], asn, as_org)


def _flat(record: Mapping[str, Any]) -> Location | None:
    cc = _country(record.get("country_code"))
    asn, as_org = _asn(record)
    if cc is None:
        return Location(asn=asn, as_org=as_org) if asn is not None or as_org else None
    geoname_id = _int(record.get("city_geoname_id", record.get("geoname_id")))
    # Positional: building the frozen dataclass by keyword costs ~0.3 µs more.
    return Location(cc, None, None, geoname_id, _text(record.get("city")),
                    _text(record.get("state1")), _text(record.get("state2")), asn, as_org)


def location_from_record(record: Any) -> Location | None:
    """Turn one decoded MMDB record of either shape into a ``Location`` (``None`` if it says nothing)."""
    if type(record) is not dict:
        # None (an address the file does not hold) is the usual case here: no ABC check for it.
        if record is None or not isinstance(record, Mapping):
            return None
        record = dict(record)
    # The shape is decided per record, not per file: it costs one dict lookup and it reads
    # files that mix shapes (or have records with only an ASN) without configuration.
    country = record.get("country")
    if type(country) is dict:
        return _nested(record, country)
    return _flat(record)


def merge_asn(location: Location | None, record: Any) -> Location | None:
    """Add the ASN of an ASN-database record to ``location`` unless it already has one."""
    if type(record) is not dict:
        return location
    asn, as_org = _asn(record)
    if asn is None and as_org is None:
        return location
    if location is None:
        return Location(asn=asn, as_org=as_org)
    if location.asn is not None:
        return location
    return Location(
        location.country_code, location.subdivision1_code, location.subdivision2_code,
        location.city_geoname_id, location.city_name, location.subdivision1_name,
        location.subdivision2_name, asn, as_org,
    )
