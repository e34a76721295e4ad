"""Geo enrichment for the request path: which `geo.GeoReader` to open, and what goes in a row.

The database comes from `[geo] database` (+ `database_v6`, `asn_database`) in the gateway file,
or else from what `edge-gateway geo install` put under `<data_dir>/geo/`. Without any database
the gateway runs without geo, after one clear warning. Lookups never fail a request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.ingest.pipeline import NO_LOCATION, Location
from shields.model import IPAddress

log = logging.getLogger("gateway.geo")

ANONYMOUS_VPN = Location(country_code="A1")


def load_settings(section: dict[str, Any] | None, base: Path, source: str) -> Any:
    """Validate `[geo]`; raises ConfigError naming the file and key."""
    from geo import GeoConfigError, GeoSettings

    try:
        return GeoSettings.from_table(section, base_dir=base)
    except GeoConfigError as exc:
        raise ConfigError(source, exc.key, exc.reason) from None


def open_reader(section: dict[str, Any] | None, base: Path, data_dir: Path, source: str) -> Any:
    """A GeoReader, or None (with one warning) when no database is configured or installed."""
    from geo import GeoDatabaseError
    from geo import open_reader as geo_open_reader

    settings = load_settings(section, base, source)
    try:
        reader = geo_open_reader(settings, data_dir)
    except GeoDatabaseError as exc:
        log.warning("geo database unusable, running without geo: %s", exc)
        return None
    if reader is None and settings.enabled:
        log.warning("no geo database configured or installed: events get no country, region or city "
                    "(run `edge-gateway geo install` or set [geo] database)")
    return reader


class GeoEnricher:
    """Client context → the four geo columns (and the ASN for the datacenter shield)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    @property
    def generation(self) -> int:
        """Moves when the reader switched to replaced database files."""
        return self.reader.generation if self.reader is not None else 0  # type: ignore[no-any-return]

    def refresh_if_due(self) -> None:
        """Look for replaced files if the reader's interval has passed, even without lookups."""
        if self.reader is not None:
            self.reader.refresh_if_due()

    def locate(self, ip: IPAddress | None, ip_type: str | None = None) -> tuple[Location, int | None]:
        """The geo columns for a client address (and its ASN); `ip_type` from a trusted proxy."""
        if ip_type == "anonymous_vpn_ip":
            return ANONYMOUS_VPN, None
        if self.reader is None or ip is None:
            return NO_LOCATION, None
        loc = self.reader.lookup(ip)
        if loc is None:
            return NO_LOCATION, None
        if loc.country_code is None:
            return NO_LOCATION, loc.asn
        return Location(
            country_code=loc.country_code,
            subdivision1_code=loc.subdivision1_code or "",
            subdivision2_code=loc.subdivision2_code or "",
            city_geoname_id=loc.city_geoname_id or 0,
        ), loc.asn
