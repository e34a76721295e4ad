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
The cache is a bounded dict per set of files, safe to use from several threads.
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
from typing import Any, Final, cast

import maxminddb
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


Getter = Callable[[Any], Any] | None
_NOT_KEPT: Final[Any] = object()  # what `_Finder` has not kept an answer for


class _Finder:
    """Everything one lookup reads, swapped as a single reference on reload, with its answers.

    Called with a key and the address to ask the files about: an IPv4 address object under its
    integer, an IPv6 one under the complement of its integer (`~n`, negative, so the two
    families never share a key), or validated address text under itself. The object is handed
    to the C extension as it is: rebuilding it from the key would cost more than the file's
    own lookup. Raises on a corrupt record, and keeps no answer then.

    The answers are a dict of at most `size`, started afresh when full: a hit is one dict probe
    (a `functools.lru_cache` hit from compiled code builds a key tuple and reorders a list), and
    no step can race another thread's (one C-level dict operation each). Not a bound method of
    the reader: no reference cycle, so an old file is unmapped as soon as the last lookup
    holding it is done.
    """

    __slots__ = ("_v4", "_v6", "_asn_v4", "_asn_v6", "_answers", "_size")

    def __init__(self, main: _Db, main_v6: _Db | None, asn: _Db | None, size: int) -> None:
        self._v4: Getter = main.reader.get
        # A single IPv4-only file cannot answer IPv6; asking would raise, so route to nothing.
        if main_v6 is not None:
            self._v6: Getter = main_v6.reader.get
        else:
            self._v6 = main.reader.get if main.info.ip_version == 6 else None
        self._asn_v4: Getter = asn.reader.get if asn is not None else None
        self._asn_v6: Getter = asn.reader.get if asn is not None and asn.info.ip_version == 6 else None
        self._answers: dict[int | str, Location | None] = {}
        self._size = size

    def __call__(self, key: int | str, ip: IPv4Address | IPv6Address | str, v6: bool) -> Location | None:
        answers = self._answers
        found = answers.get(key, _NOT_KEPT)  # one probe: another thread may clear the dict between two
        if found is not _NOT_KEPT:
            return cast("Location | None", found)
        location = _get(self._v6, self._asn_v6, ip) if v6 else _get(self._v4, self._asn_v4, ip)
        if self._size > 0:
            if len(answers) >= self._size:
                answers.clear()
            answers[key] = location
        return location

    def __len__(self) -> int:
        return len(self._answers)


def _get(get: Getter, asn_get: Getter, ip: Any) -> Location | None:
    location = location_from_record(get(ip)) if get is not None else None
    if asn_get is not None and (location is None or location.asn is None):
        location = merge_asn(location, asn_get(ip))
    return location


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
        self._find = self._build_finder()
        self.generation = 0  # counts switches to replaced files, for caches built on lookups
        # None or 0 turn the check off, as `[geo] reload_check_seconds = 0` does: checking on
        # every lookup would put a stat per request on the hot path.
        if reload_check_seconds is not None and reload_check_seconds <= 0:
            self._interval = None
        self._next_check = clock() + self._interval if self._interval is not None else float("inf")

    def _build_finder(self) -> _Finder:
        main, main_v6, asn = self._dbs
        assert main is not None
        return _Finder(main, main_v6, asn, self._cache_size)

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
        find = self._find
        kind = type(ip)
        try:
            if kind is IPv4Address:
                return find(int(ip), ip, False)
            if kind is IPv6Address:
                mapped = ip.ipv4_mapped  # type: ignore[union-attr]
                return find(int(mapped), mapped, False) if mapped is not None else find(~int(ip), ip, True)
            if kind is str:
                # Validated with inet_pton (strict, ~0.2 µs) rather than ipaddress (~3 µs), and
                # not left to the C extension, which accepts inet_aton forms such as "1.2.3" or
                # "010.0.0.1" (octal) that are not addresses. Only valid text reaches the cache,
                # so junk input cannot evict real entries.
                if ":" in ip:  # type: ignore[operator]
                    packed = _inet_pton(_AF_INET6, ip)  # type: ignore[arg-type]
                    if packed[:12] == _MAPPED_PREFIX:
                        text = _inet_ntop(_AF_INET, packed[12:])
                        return find(text, text, False)
                    return find(ip, ip, True)  # type: ignore[arg-type]
                _inet_pton(_AF_INET, ip)  # type: ignore[arg-type]
                return find(ip, ip, False)  # type: ignore[arg-type]
            return None
        except (OSError, ValueError, TypeError, InvalidDatabaseError):
            # Bad input, or a corrupt record: geo is enrichment and must not fail a request.
            return None

    def refresh_if_due(self) -> bool:
        """`check_for_updates` if the check interval has passed (as a lookup does); True if
        something changed. For owners whose own caches can spare the lookups for a while."""
        if self._next_check <= self._clock():
            return self.check_for_updates()
        return False

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
                self._find = self._build_finder()
                self.generation += 1
            return changed
        finally:
            self._reload_lock.release()
