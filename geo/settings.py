"""The ``[geo]`` table of the gateway config, validated, and the reader it describes.

```toml
[geo]
database = "/var/lib/GeoLite2-City.mmdb"   # default: what `edge-gateway geo install` put in data_dir
database_v6 = "..."                          # IPv6 file when the data is split in two
asn_database = "/var/lib/GeoLite2-ASN.mmdb" # ASN/organisation, for datacenter detection
reload_check_seconds = 5                     # how often replaced files are looked for; 0 = never
cache_size = 50000                           # LRU entries per worker; 0 = no cache
enabled = true
```

Relative paths are relative to the config file's folder, like the gateway's other paths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .install import installed
from .reader import DEFAULT_CACHE_SIZE, DEFAULT_RELOAD_CHECK_SECONDS, GeoReader

__all__ = ["GeoConfigError", "GeoSettings", "open_reader"]

_KEYS = ("database", "database_v6", "asn_database", "reload_check_seconds", "cache_size", "enabled")


class GeoConfigError(ValueError):
    """A bad ``[geo]`` value. ``key`` is the full key (``geo.cache_size``), ``reason`` what is wrong."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """Validated ``[geo]`` settings; paths are absolute."""

    database: Path | None = None
    database_v6: Path | None = None
    asn_database: Path | None = None
    reload_check_seconds: float | None = DEFAULT_RELOAD_CHECK_SECONDS
    cache_size: int = DEFAULT_CACHE_SIZE
    enabled: bool = True

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, *, base_dir: Path) -> GeoSettings:
        """Validate the raw ``[geo]`` table (``None`` when absent). Raises ``GeoConfigError``."""
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise GeoConfigError("geo", "must be a table")
        for key in table:
            if key not in _KEYS:
                raise GeoConfigError(f"geo.{key}", f"unknown key (expected one of {', '.join(_KEYS)})")

        def path(key: str) -> Path | None:
            value = table.get(key)
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                raise GeoConfigError(f"geo.{key}", f"must be a file path, got {value!r}")
            return (base_dir / value).resolve()

        database, database_v6 = path("database"), path("database_v6")
        if database_v6 is not None and database is None:
            raise GeoConfigError("geo.database_v6", "needs geo.database (the IPv4 file) too")

        interval = table.get("reload_check_seconds", DEFAULT_RELOAD_CHECK_SECONDS)
        if (isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0
                or not math.isfinite(interval)):
            raise GeoConfigError("geo.reload_check_seconds", f"must be a number of seconds >= 0, got {interval!r}")
        cache_size = table.get("cache_size", DEFAULT_CACHE_SIZE)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise GeoConfigError("geo.cache_size", f"must be a whole number >= 0, got {cache_size!r}")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise GeoConfigError("geo.enabled", f"must be true or false, got {enabled!r}")
        return cls(database, database_v6, path("asn_database"),
                   float(interval) if interval > 0 else None, cache_size, enabled)


def open_reader(settings: GeoSettings, data_dir: Path) -> GeoReader | None:
    """The reader the settings describe, or ``None`` when geo is off or nothing is installed.

    Without ``database``, the files ``edge-gateway geo install`` put under ``data_dir/geo`` are
    used. Raises ``GeoDatabaseError`` when a configured file cannot be opened: the caller
    decides whether to go on without geo.
    """
    if not settings.enabled:
        return None
    database, database_v6 = settings.database, settings.database_v6
    if database is None:
        found = installed(data_dir)
        if found is None:
            if settings.asn_database is None:
                return None
            # An ASN file alone is still worth serving: datacenter detection needs only that.
            return GeoReader(settings.asn_database, cache_size=settings.cache_size,
                             reload_check_seconds=settings.reload_check_seconds)
        database, database_v6 = found.database, found.database_v6
    return GeoReader(database, database_v6, settings.asn_database, cache_size=settings.cache_size,
                     reload_check_seconds=settings.reload_check_seconds)
