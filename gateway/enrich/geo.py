"""The geo adapter of the request path: which `geo.GeoReader` to open, and what a client's
address says about it.

The database comes from `[geo] database` (+ `database_v6`, `asn_database`) in the gateway file,
or else from what `edge-gateway geo install` put under `<data_dir>/geo/`. Without any database
the gateway runs without geo, after one clear warning. Lookups never fail a request.
"""

from __future__ import annotations

import logging
from pathlib import Path

from geo import GeoDatabaseError, GeoReader, GeoSettings, Location, open_reader
from shields.model import IPAddress

__all__ = ["ANONYMOUS_VPN", "GeoEnricher"]

log = logging.getLogger("gateway.geo")

# What a trusted proxy's `x-plausible-ip-type: anonymous_vpn_ip` stands for, as Plausible stores it.
ANONYMOUS_VPN = Location(country_code="A1")


class GeoEnricher:
    """Client address → `geo.Location` (country, subdivisions, city, ASN), or None."""

    __slots__ = ("reader",)

    def __init__(self, reader: GeoReader | None) -> None:
        self.reader = reader

    @classmethod
    def open(cls, settings: GeoSettings, data_dir: Path) -> GeoEnricher:
        """The enricher the settings describe; without a usable database, one that finds
        nothing (after one warning)."""
        try:
            reader = open_reader(settings, data_dir)
        except GeoDatabaseError as exc:
            log.warning("geo database unusable, running without geo: %s", exc)
            return cls(None)
        if reader is None and settings.enabled:
            log.warning("no geo database configured or installed: events get no country, region or city "
                        "(run `edge-gateway geo install` or set [geo] database)")
        return cls(reader)

    @property
    def generation(self) -> int:
        """Moves when the reader switched to replaced database files."""
        return self.reader.generation if self.reader is not None else 0

    def refresh_if_due(self) -> None:
        """Look for replaced files if the reader's interval has passed, even without lookups."""
        if self.reader is not None:
            self.reader.refresh_if_due()

    def locate(self, ip: IPAddress | None, ip_type: str | None = None) -> Location | None:
        """What the database says about a client address; `ip_type` from a trusted proxy."""
        if ip_type == "anonymous_vpn_ip":
            return ANONYMOUS_VPN
        if self.reader is None or ip is None:
            return None
        return self.reader.lookup(ip)
