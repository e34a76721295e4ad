"""What the site console reads back from the sink: per-bucket counts, drop records, recent
events, top values, and the material of a dry run. One reader per sink (`SQLiteReader`,
`ClickHouseReader`), the same answers from both.

Every call is blocking (a file read or an HTTP round trip): the API handlers run them in a
thread. Every query names one site and is bounded (a `LIMIT`, a time window), so no request
can make the gateway read or hold an unbounded amount. Values reach SQL as parameters
(SQLite) or as quoted literals built by `_lit` (ClickHouse 18.16's HTTP interface has no
query parameters), never as raw text.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.config import GatewayConfig
from gateway.store.clickhouse import ClickHouseSink, _lit, _q, open_clickhouse_sink

__all__ = ["DRY_RUN_ROWS", "Bucket", "ConsoleReader", "EventItem", "PageKey", "SQLiteReader",
           "ClickHouseReader", "open_reader"]

INTERVALS = ("minute", "hour", "day")
DRY_RUN_ROWS = 50_000  # distinct (hostname, pathname, country) groups a dry run looks at
TOP_LIMIT = 10
_DROP_FIELDS = ("drop_id", "timestamp", "reason", "evidence", "detail", "name", "hostname", "pathname",
                "referrer_host", "country_code", "browser", "screen_size")
# Which drop-record column each top list counts.
TOP_FIELDS = {"pages": "pathname", "referrers": "referrer_host", "countries": "country_code",
              "evidence": "evidence", "hostnames": "hostname", "browsers": "browser"}


@dataclass(frozen=True, slots=True)
class Bucket:
    start: str  # "YYYY-MM-DD HH:MM:SS", UTC
    outcome: str  # accepted, dropped, would_drop
    reason: str
    events: int


@dataclass(frozen=True, slots=True)
class EventItem:
    event_id: str
    name: str
    timestamp: str
    hostname: str
    pathname: str
    referrer: str
    props: dict[str, str]
    revenue: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class PageKey:
    """One group of stored events for a dry run: what site rules can look at, and how many."""

    hostname: str
    pathname: str
    country_code: str
    events: int
    sample_name: str


class ConsoleReader(Protocol):
    def summary(self, domain: str, start: str, end: str, interval: str) -> list[Bucket]: ...
    def drops(self, domain: str, *, reason: str | None, evidence: str | None, limit: int,
              before: str | None, start: str | None = None) -> list[dict[str, Any]]: ...
    def events(self, domain: str, *, name: str | None, limit: int, before: tuple[str, str] | None,
               start: str | None = None) -> list[EventItem]: ...
    def top(self, domain: str, start: str, end: str, field: str, limit: int = TOP_LIMIT) -> list[tuple[str, int]]: ...
    def event_groups(self, domain: str, start: str) -> tuple[list[PageKey], bool]: ...
    def close(self) -> None: ...


def _props(keys: Any, values: Any) -> dict[str, str]:
    if isinstance(keys, str):
        keys, values = orjson.loads(keys or "[]"), orjson.loads(values or "[]")
    return {str(k): str(v) for k, v in zip(keys or (), values or ())}


def _event(r: Sequence[Any]) -> EventItem:
    event_id, name, ts, host, path, ref, mk, mv, amount, currency = r
    revenue = {"amount": str(amount), "currency": str(currency)} if amount not in (None, "") else None
    return EventItem(str(event_id), str(name), str(ts), str(host), str(path), str(ref), _props(mk, mv), revenue)


_EVENT_COLS = ("event_id", "name", "timestamp", "hostname", "pathname", "referrer", "meta.key", "meta.value",
               "revenue_source_amount", "revenue_source_currency")


class SQLiteReader:
    """Reads the SQLite sink's file on its own connection (WAL: readers never block the writer)."""

    _BUCKET = {"minute": "minute", "hour": "substr(minute, 1, 13) || ':00:00'",
               "day": "substr(minute, 1, 10) || ' 00:00:00'"}

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=10,
                                             check_same_thread=False)
            return self._conn.execute(sql, params).fetchall()

    def summary(self, domain: str, start: str, end: str, interval: str) -> list[Bucket]:
        bucket = self._BUCKET[interval]
        rows = self._rows(
            f"SELECT {bucket} AS b, outcome, reason, SUM(events) FROM counts "
            "WHERE domain = ? AND minute >= ? AND minute < ? GROUP BY b, outcome, reason ORDER BY b, outcome, reason",
            (domain, start, end))
        return [Bucket(str(b), str(o), str(r), int(n)) for b, o, r, n in rows]

    def drops(self, domain: str, *, reason: str | None, evidence: str | None, limit: int,
              before: str | None, start: str | None = None) -> list[dict[str, Any]]:
        where, params = ["domain = ?"], [domain]
        for column, value in (("reason", reason), ("evidence", evidence)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("drop_id < ?")
            params.append(before)
        if start is not None:
            where.append("timestamp >= ?")
            params.append(start)
        rows = self._rows(f"SELECT {', '.join(_DROP_FIELDS)} FROM drops WHERE {' AND '.join(where)} "
                          "ORDER BY drop_id DESC LIMIT ?", (*params, limit))
        return [dict(zip(_DROP_FIELDS, r)) for r in rows]

    def events(self, domain: str, *, name: str | None, limit: int, before: tuple[str, str] | None,
               start: str | None = None) -> list[EventItem]:
        where, params = ["domain = ?"], [domain]
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if before is not None:
            where.append("(timestamp < ? OR (timestamp = ? AND event_id < ?))")
            params.extend((before[0], before[0], before[1]))
        if start is not None:
            where.append("timestamp >= ?")
            params.append(start)
        cols = ", ".join(f'"{c}"' for c in _EVENT_COLS)
        rows = self._rows(f"SELECT {cols} FROM events WHERE {' AND '.join(where)} "
                          "ORDER BY timestamp DESC, event_id DESC LIMIT ?", (*params, limit))
        return [_event(r) for r in rows]

    def top(self, domain: str, start: str, end: str, field: str, limit: int = TOP_LIMIT) -> list[tuple[str, int]]:
        column = TOP_FIELDS[field]
        rows = self._rows(f"SELECT {column}, COUNT(*) AS n FROM drops WHERE domain = ? AND timestamp >= ? "
                          f"AND timestamp < ? GROUP BY {column} ORDER BY n DESC, {column} LIMIT ?",
                          (domain, start, end, limit))
        return [(str(v), int(n)) for v, n in rows]

    def event_groups(self, domain: str, start: str) -> tuple[list[PageKey], bool]:
        rows = self._rows("SELECT hostname, pathname, country_code, COUNT(*), MIN(name) FROM events "
                          "WHERE domain = ? AND timestamp >= ? GROUP BY hostname, pathname, country_code "
                          "ORDER BY COUNT(*) DESC, hostname, pathname, country_code LIMIT ?", (domain, start, DRY_RUN_ROWS + 1))
        groups = [PageKey(str(h), str(p), str(c), int(n), str(s)) for h, p, c, n, s in rows]
        return groups[:DRY_RUN_ROWS], len(groups) > DRY_RUN_ROWS

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class ClickHouseReader:
    """Reads the ClickHouse sink's tables (FINAL: rows re-sent after a failure count once)."""

    _BUCKET = {"minute": "toStartOfMinute(minute)", "hour": "toStartOfHour(minute)",
               "day": "toDateTime(toStartOfDay(minute))"}

    def __init__(self, sink: ClickHouseSink) -> None:
        self._sink = sink
        self._db = _q(sink.database)
        self._events = f"{self._db}.{_q(sink.table)}"

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        return self._sink.query_rows(sql)

    def summary(self, domain: str, start: str, end: str, interval: str) -> list[Bucket]:
        bucket = self._BUCKET[interval]
        rows = self._rows(
            f"SELECT toString({bucket}) AS b, outcome, reason, sum(events) AS n FROM {self._db}.counts FINAL "
            f"WHERE domain = {_lit(domain)} AND minute >= toDateTime({_lit(start)}, 'UTC') "
            f"AND minute < toDateTime({_lit(end)}, 'UTC') GROUP BY b, outcome, reason ORDER BY b, outcome, reason")
        return [Bucket(r["b"], r["outcome"], r["reason"], int(r["n"])) for r in rows]

    def drops(self, domain: str, *, reason: str | None, evidence: str | None, limit: int,
              before: str | None, start: str | None = None) -> list[dict[str, Any]]:
        where = [f"domain = {_lit(domain)}"]
        for column, value in (("reason", reason), ("evidence", evidence)):
            if value is not None:
                where.append(f"{column} = {_lit(value)}")
        if before is not None:
            where.append(f"drop_id < {_lit(before)}")
        if start is not None:
            where.append(f"timestamp >= toDateTime({_lit(start)}, 'UTC')")
        cols = ", ".join(f"toString(timestamp) AS timestamp" if c == "timestamp" else c for c in _DROP_FIELDS)
        rows = self._rows(f"SELECT {cols} FROM {self._db}.drops FINAL WHERE {' AND '.join(where)} "
                          f"ORDER BY drop_id DESC LIMIT {int(limit)}")
        return [{c: (r[c].rstrip("\x00") if c == "country_code" else r[c]) for c in _DROP_FIELDS} for r in rows]

    def events(self, domain: str, *, name: str | None, limit: int, before: tuple[str, str] | None,
               start: str | None = None) -> list[EventItem]:
        where = [f"domain = {_lit(domain)}"]
        if name is not None:
            where.append(f"name = {_lit(name)}")
        if before is not None:
            t = f"toDateTime({_lit(before[0])}, 'UTC')"
            where.append(f"(timestamp < {t} OR (timestamp = {t} AND event_id < {_lit(before[1])}))")
        if start is not None:
            where.append(f"timestamp >= toDateTime({_lit(start)}, 'UTC')")
        cols = ("event_id, name, toString(timestamp) AS ts, hostname, pathname, referrer, "
                "`meta.key` AS mk, `meta.value` AS mv, revenue_source_amount, revenue_source_currency")
        rows = self._rows(f"SELECT {cols} FROM {self._events} FINAL WHERE {' AND '.join(where)} "
                          f"ORDER BY timestamp DESC, event_id DESC LIMIT {int(limit)}")
        return [_event((r["event_id"], r["name"], r["ts"], r["hostname"], r["pathname"], r["referrer"], r["mk"],
                        r["mv"], r["revenue_source_amount"], r["revenue_source_currency"])) for r in rows]

    def top(self, domain: str, start: str, end: str, field: str, limit: int = TOP_LIMIT) -> list[tuple[str, int]]:
        column = TOP_FIELDS[field]
        rows = self._rows(
            f"SELECT toString({column}) AS v, count() AS n FROM {self._db}.drops FINAL WHERE domain = {_lit(domain)} "
            f"AND timestamp >= toDateTime({_lit(start)}, 'UTC') AND timestamp < toDateTime({_lit(end)}, 'UTC') "
            f"GROUP BY v ORDER BY n DESC, v LIMIT {int(limit)}")
        return [(r["v"].rstrip("\x00"), int(r["n"])) for r in rows]

    def event_groups(self, domain: str, start: str) -> tuple[list[PageKey], bool]:
        rows = self._rows(
            f"SELECT hostname, pathname, toString(country_code) AS cc, count() AS n, min(name) AS s "
            f"FROM {self._events} WHERE domain = {_lit(domain)} AND timestamp >= toDateTime({_lit(start)}, 'UTC') "
            f"GROUP BY hostname, pathname, cc ORDER BY n DESC, hostname, pathname, cc LIMIT {DRY_RUN_ROWS + 1}")
        groups = [PageKey(r["hostname"], r["pathname"], r["cc"].rstrip("\x00"), int(r["n"]), r["s"]) for r in rows]
        return groups[:DRY_RUN_ROWS], len(groups) > DRY_RUN_ROWS

    def close(self) -> None:
        self._sink.close()


def open_reader(config: GatewayConfig) -> ConsoleReader:
    """The reader for the configured sink, on its own connection (a slow console query never
    holds up the shipper's writes)."""
    if config.sink.type == "clickhouse":
        return ClickHouseReader(open_clickhouse_sink(config.sink))
    return SQLiteReader(config.sqlite_path)
