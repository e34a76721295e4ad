"""``GeoReader``: cached lookups over one MMDB file or an IPv4/IPv6 pair, plus an optional ASN file,
that follow the files when they are replaced.

Hot replacement. Every ``reload_check_seconds`` (a monotonic-clock comparison on the lookup
path, so no ``stat`` per lookup) the reader stats its files; when ``(st_ino, st_mtime_ns,
st_size)`` changed it opens the new file completely, probes it, and only then swaps one
reference, so a lookup sees either the old files or the new ones and never a half-open state.
The old reader is not closed by hand: a lookup that already holds it keeps a reference, and
CPython frees it (and unmaps the old file) when the last one drops. A file that fails to open
is logged once and the old data keeps serving. Writers must replace files with an atomic rename
(``install`` does): the C extension maps the file, so rewriting it in place would change bytes
under a live mapping.

Each worker process has its own reader and notices the new file on its own within one interval.
A reader is meant for one thread (Sanic workers run one event loop): the LRU is not locked.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import maxminddb
from cachetools import LRUCache
from maxminddb.errors import InvalidDatabaseError

from .location import Location, location_from_record, merge_asn

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_RELOAD_CHECK_SECONDS",
    "DatabaseInfo",
    "GeoDatabaseError",
    "GeoReader",
]

log = logging.getLogger("geo")

# Measured by bench/bench_geo.py (C extension, MODE_MMAP_EXT, half hits and half misses): a cold
# lookup costs ~3.4 µs on flat ip-location-db records (4.5 µs on the real DB-IP City Lite pair)
# and ~8.7 µs on full GeoIP2 City records, whose names in eight languages are all decoded; a
# cache hit costs ~0.5-0.9 µs. The cache wins 4-10x and repeat lookups are the common case
# (every page view of a visit comes from the same address), so it stays on by default.
DEFAULT_CACHE_SIZE = 50_000
DEFAULT_RELOAD_CHECK_SECONDS = 5.0

_MISS: Any = object()
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


class GeoDatabaseError(Exception):
    """A database file cannot be opened or is not a MaxMind-format database."""


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """What is being served from one file, for logs, health and metrics."""

    path: Path
    database_type: str
    ip_version: int
    build_epoch: int
    node_count: int


_Signature = tuple[int, int, int]


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        # Mid-replacement or removed: keep serving what is open.
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Db:
    """One open file and the stat signature it was opened from."""

    __slots__ = ("info", "path", "reader", "signature")

    def __init__(self, path: Path) -> None:
        # Stat before opening: if the file is swapped in between, the signature is the old one
        # and the next check simply opens the file again, which is harmless.
        signature = _signature(path)
        if signature is None:
            raise GeoDatabaseError(f"{path}: no such file or not readable")
        try:
            reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT)
            meta = reader.metadata()
            # Walk the tree once so a truncated or corrupt file fails here, not in a lookup.
            reader.get("1.1.1.1" if meta.ip_version == 4 else "2001:db8::1")
        except (OSError, ValueError, InvalidDatabaseError) as exc:
            raise GeoDatabaseError(f"{path}: not a usable MaxMind-format database: {exc}") from exc
        self.path = path
        self.reader: Any = reader
        self.signature = signature
        self.info = DatabaseInfo(path, str(meta.database_type), int(meta.ip_version),
                                 int(meta.build_epoch), int(meta.node_count))


class _Routes:
    """Everything one lookup reads, swapped as a single reference on reload."""

    __slots__ = ("asn_v4", "asn_v6", "cache", "v4", "v6")

    def __init__(self, main: _Db, main_v6: _Db | None, asn: _Db | None, cache_size: int) -> None:
        self.v4 = main.reader.get
        # A single IPv4-only file cannot answer IPv6; asking would raise, so route to nothing.
        if main_v6 is not None:
            self.v6: Callable[[Any], Any] | None = main_v6.reader.get
        else:
            self.v6 = main.reader.get if main.info.ip_version == 6 else None
        self.asn_v4 = asn.reader.get if asn is not None else None
        self.asn_v6 = asn.reader.get if asn is not None and asn.info.ip_version == 6 else None
        # A new cache per swap: entries from the old files must not outlive them.
        self.cache: LRUCache[Any, Location | None] | None = (
            LRUCache(maxsize=cache_size) if cache_size > 0 else None)


class GeoReader:
    """Look up addresses in one MMDB file, or an IPv4 file plus an IPv6 file, plus an optional ASN file.

    ``database`` answers IPv4 (and IPv6 too when it is an IPv6 database and no ``database_v6``
    is given). ``database_v6`` answers IPv6 when the data is split in two files, as the
    ip-location-db packages ship it. ``asn_database`` fills ``asn``/``as_org`` when the main
    file has none. Raises ``GeoDatabaseError`` if a file cannot be opened now; later failures
    (a bad replacement file) are logged and the previous data keeps serving.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        database_v6: str | os.PathLike[str] | None = None,
        asn_database: str | os.PathLike[str] | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        reload_check_seconds: float | None = DEFAULT_RELOAD_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths: list[Path | None] = [
            Path(database),
            Path(database_v6) if database_v6 is not None else None,
            Path(asn_database) if asn_database is not None else None,
        ]
        self._dbs: list[_Db | None] = [_Db(p) if p is not None else None for p in self._paths]
        self._failed: list[_Signature | None] = [None, None, None]
        self._cache_size = max(0, int(cache_size))
        self._interval = reload_check_seconds
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._routes = self._build_routes()
        # None or 0 turn the check off, as `[geo] reload_check_seconds = 0` does: checking on
        # every lookup would put a stat per request on the hot path.
        if reload_check_seconds is not None and reload_check_seconds <= 0:
            self._interval = None
        self._next_check = clock() + self._interval if self._interval is not None else float("inf")

    def _build_routes(self) -> _Routes:
        main, main_v6, asn = self._dbs
        assert main is not None
        return _Routes(main, main_v6, asn, self._cache_size)

    @property
    def databases(self) -> tuple[DatabaseInfo, ...]:
        """The files being served now (main, then IPv6, then ASN, those configured)."""
        return tuple(db.info for db in self._dbs if db is not None)

    def lookup(self, ip: IPv4Address | IPv6Address | str) -> Location | None:
        """Where ``ip`` is, or ``None`` when it is unknown, invalid or not in the database. Never raises.

        IPv4-mapped IPv6 (``::ffff:1.2.3.4``) is looked up as IPv4.
        """
        if self._next_check <= self._clock():
            self.check_for_updates()
        routes = self._routes
        cache = routes.cache
        if cache is None:
            return self._resolve(routes, ip)[0]
        # Address objects are keyed by their packed bytes (cheaper to hash than the object);
        # strings by themselves, so a hit skips parsing. bytes never equal str, so no clash.
        if type(ip) is str:
            key: Any = ip
        elif isinstance(ip, (IPv4Address, IPv6Address)):
            key = ip.packed
        else:
            return None
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        location, valid = self._resolve(routes, ip)
        if valid:
            # Only well-formed addresses are cached, so junk input cannot evict real entries.
            cache[key] = location
        return location

    def _resolve(self, routes: _Routes, ip: Any) -> tuple[Location | None, bool]:
        try:
            if type(ip) is str:
                # Validated with inet_pton (strict, ~0.2 µs) rather than ipaddress (~3 µs), and
                # not left to the C extension, which accepts inet_aton forms such as "1.2.3" or
                # "010.0.0.1" (octal) that are not addresses. The string itself is then passed on.
                if ":" in ip:
                    packed = _inet_pton(_AF_INET6, ip)
                    if packed[:12] == _MAPPED_PREFIX:
                        ip = _inet_ntop(_AF_INET, packed[12:])
                        get, asn_get = routes.v4, routes.asn_v4
                    else:
                        get, asn_get = routes.v6, routes.asn_v6
                else:
                    _inet_pton(_AF_INET, ip)
                    get, asn_get = routes.v4, routes.asn_v4
                return self._get(get, asn_get, ip), True
            if type(ip) is IPv6Address:
                mapped = ip.ipv4_mapped
                if mapped is not None:
                    ip = mapped
            if type(ip) is IPv4Address:
                get, asn_get = routes.v4, routes.asn_v4
            elif type(ip) is IPv6Address:
                get, asn_get = routes.v6, routes.asn_v6
            else:
                return None, False
            return self._get(get, asn_get, ip), True
        except (OSError, ValueError, TypeError, InvalidDatabaseError):
            # Bad input, or a corrupt record: geo is enrichment and must not fail a request.
            return None, False

    @staticmethod
    def _get(get: Callable[[Any], Any] | None, asn_get: Callable[[Any], Any] | None,
             ip: Any) -> Location | None:
        location = location_from_record(get(ip)) if get is not None else None
        if asn_get is not None and (location is None or location.asn is None):
            location = merge_asn(location, asn_get(ip))
        return location

    def check_for_updates(self) -> bool:
        """Stat the files now and switch to any that were replaced. True if something changed.

        Called from ``lookup`` once per interval; call it directly after installing new files.
        """
        if self._interval is not None:
            # Moved first so other callers in the same instant do not stat again.
            self._next_check = self._clock() + self._interval
        if not self._reload_lock.acquire(blocking=False):
            return False  # another thread is already switching
        try:
            changed = False
            for i, path in enumerate(self._paths):
                current = self._dbs[i]
                if path is None or current is None:
                    continue
                signature = _signature(path)
                if signature is None or signature == current.signature or signature == self._failed[i]:
                    continue
                try:
                    fresh = _Db(path)
                except GeoDatabaseError as exc:
                    self._failed[i] = signature
                    log.warning("geo: keeping the previous database: %s", exc)
                    continue
                self._dbs[i] = fresh
                self._failed[i] = None
                changed = True
                log.info("geo: now serving %s (%s, built %s)", path, fresh.info.database_type,
                         time.strftime("%Y-%m-%d", time.gmtime(fresh.info.build_epoch)))
            if changed:
                self._routes = self._build_routes()
            return changed
        finally:
            self._reload_lock.release()
