"""The stored event row: one schema for every sink, built from three named parts.

Column names follow Plausible's ClickHouse `events` table where one exists. A row is the
event's own five columns (`RowHead`), then three parts that each depend on one thing only and
are worked out once for it (gateway/enrich/columns.py):

    SourceColumns   the event's page and where the visitor came from   (once per distinct body)
    ClientColumns   the client's location and browser                  (once per client)
    DetailColumns   the event's properties, engagement and revenue     (once per distinct body)

`join` puts them together, and the column order of every sink is `COLUMNS`, which is derived
from the same part types: the order is written once, here.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, NamedTuple

__all__ = ["COLUMNS", "COLUMN_TYPES", "COUNTS", "DROPS", "INDEX", "SENDER_ID_MARK", "TABLES", "ClientColumns",
           "DetailColumns", "DropRecord", "MinuteCount", "Row", "RowHead", "SourceColumns", "TableSchema", "join"]

# The first character of an `event_id` made from a sender's own id (the server API's `eventId`);
# the gateway's own ids are hex digits only. A retried copy of such an event may carry another
# time and visitor than the stored one, so a sink whose dedupe key holds those (ClickHouse's sort
# key) must look the id up before writing it; ids of the gateway's own are never looked up.
SENDER_ID_MARK = "s"


class RowHead(NamedTuple):
    event_id: str
    timestamp: str  # "YYYY-MM-DD HH:MM:SS", UTC
    name: str
    domain: str
    user_id: int


class SourceColumns(NamedTuple):
    hostname: str
    pathname: str
    referrer: str
    referrer_source: str
    click_id_param: str
    utm_medium: str
    utm_source: str
    utm_campaign: str
    utm_content: str
    utm_term: str


class ClientColumns(NamedTuple):
    country_code: str = ""
    subdivision1_code: str = ""
    subdivision2_code: str = ""
    city_geoname_id: int = 0
    screen_size: str = ""
    operating_system: str = ""
    operating_system_version: str = ""
    browser: str = ""
    browser_version: str = ""


class DetailColumns(NamedTuple):
    meta_key: str  # JSON array text of the prop keys (column "meta.key")
    meta_value: str  # JSON array text of the prop values (column "meta.value")
    scroll_depth: int
    engagement_time: int
    interactive: int
    revenue_source_amount: str | None
    revenue_source_currency: str
    tracker_version: int


def join(head: tuple[Any, ...], source: tuple[Any, ...], client: tuple[Any, ...],
         detail: tuple[Any, ...]) -> tuple[Any, ...]:
    """One stored row, in `COLUMNS` order: a plain tuple, which the spool and sinks take as is.

    Its parts are `RowHead`, `SourceColumns`, `ClientColumns` and `DetailColumns`, typed as
    tuples of any length on purpose: compiled (gateway/compiled.py), a sum of fixed-length tuple
    types is checked and unpacked item by item at each `+` (7 % of a server-side event's
    instructions); of plain tuples it is three concatenations, as in Python."""
    return head + source + client + detail


_FIELDS = RowHead._fields + SourceColumns._fields + ClientColumns._fields + DetailColumns._fields

#: A stored row with its columns by name (`Row._make(row)`), for reading rows back.
Row = namedtuple("Row", _FIELDS)  # type: ignore[misc]

# Column names that are not Python identifiers.
_NAMES = {"meta_key": "meta.key", "meta_value": "meta.value"}

COLUMNS: tuple[str, ...] = tuple(_NAMES.get(f, f) for f in _FIELDS)
INDEX = {name: i for i, name in enumerate(COLUMNS)}

# column name -> (SQLite type, ClickHouse type)
_TYPES: dict[str, tuple[str, str]] = {
    "event_id": ("TEXT NOT NULL PRIMARY KEY", "String"),
    "timestamp": ("TEXT NOT NULL", "DateTime"),
    "name": ("TEXT NOT NULL", "String"),
    "domain": ("TEXT NOT NULL", "String"),
    "user_id": ("INTEGER NOT NULL", "Int64"),
    "hostname": ("TEXT NOT NULL", "String"),
    "pathname": ("TEXT NOT NULL", "String"),
    "referrer": ("TEXT NOT NULL", "String"),
    "referrer_source": ("TEXT NOT NULL", "String"),
    "click_id_param": ("TEXT NOT NULL", "String"),
    "utm_medium": ("TEXT NOT NULL", "String"),
    "utm_source": ("TEXT NOT NULL", "String"),
    "utm_campaign": ("TEXT NOT NULL", "String"),
    "utm_content": ("TEXT NOT NULL", "String"),
    "utm_term": ("TEXT NOT NULL", "String"),
    "country_code": ("TEXT NOT NULL", "FixedString(2)"),
    "subdivision1_code": ("TEXT NOT NULL", "String"),
    "subdivision2_code": ("TEXT NOT NULL", "String"),
    "city_geoname_id": ("INTEGER NOT NULL", "UInt32"),
    "screen_size": ("TEXT NOT NULL", "String"),
    "operating_system": ("TEXT NOT NULL", "String"),
    "operating_system_version": ("TEXT NOT NULL", "String"),
    "browser": ("TEXT NOT NULL", "String"),
    "browser_version": ("TEXT NOT NULL", "String"),
    "meta.key": ("TEXT NOT NULL", "Array(String)"),  # JSON array text in SQLite
    "meta.value": ("TEXT NOT NULL", "Array(String)"),
    "scroll_depth": ("INTEGER NOT NULL", "UInt8"),
    "engagement_time": ("INTEGER NOT NULL", "UInt32"),
    "interactive": ("INTEGER NOT NULL", "UInt8"),
    "revenue_source_amount": ("TEXT", "Nullable(String)"),
    "revenue_source_currency": ("TEXT NOT NULL", "String"),
    "tracker_version": ("INTEGER NOT NULL", "UInt16"),
}

#: (name, SQLite type, ClickHouse type), in `COLUMNS` order.
COLUMN_TYPES: tuple[tuple[str, str, str], ...] = tuple((name, *_TYPES[name]) for name in COLUMNS)


# --- the site console's tables: drop records and per-minute counts ---------------------------

class DropRecord(NamedTuple):
    """One dropped event, as the site owner sees it: never the IP or the raw User-Agent."""

    drop_id: str
    timestamp: str  # "YYYY-MM-DD HH:MM:SS", UTC
    domain: str
    reason: str
    evidence: str  # the step's evidence label ("" when the step has one kind of objection)
    detail: str  # which rule, list or pattern, with any address in it blanked out
    name: str
    hostname: str
    pathname: str
    referrer_host: str
    country_code: str
    browser: str
    screen_size: str


class MinuteCount(NamedTuple):
    """Events of one site in one UTC minute with one outcome, as one worker counted them in one
    flush: the console sums these rows (several per minute: each worker, each flush)."""

    count_id: str
    minute: str  # "YYYY-MM-DD HH:MM:00", UTC
    domain: str
    outcome: str  # "accepted", "dropped" or "would_drop"
    reason: str  # the drop reason; "" for accepted
    events: int


class TableSchema(NamedTuple):
    """A table every sink keeps besides `events`: its columns in row order with their types,
    the unique key (re-sent rows collapse on it), the time column (retention, paging) and the
    ClickHouse sort key."""

    name: str
    columns: tuple[tuple[str, str, str], ...]  # (name, SQLite type, ClickHouse type)
    key: str
    time: str
    order_by: str


DROPS = TableSchema("drops", (
    ("drop_id", "TEXT NOT NULL PRIMARY KEY", "String"),
    ("timestamp", "TEXT NOT NULL", "DateTime"),
    ("domain", "TEXT NOT NULL", "String"),
    ("reason", "TEXT NOT NULL", "String"),
    ("evidence", "TEXT NOT NULL", "String"),
    ("detail", "TEXT NOT NULL", "String"),
    ("name", "TEXT NOT NULL", "String"),
    ("hostname", "TEXT NOT NULL", "String"),
    ("pathname", "TEXT NOT NULL", "String"),
    ("referrer_host", "TEXT NOT NULL", "String"),
    ("country_code", "TEXT NOT NULL", "FixedString(2)"),
    ("browser", "TEXT NOT NULL", "String"),
    ("screen_size", "TEXT NOT NULL", "String"),
), "drop_id", "timestamp", "(domain, timestamp, drop_id)")

COUNTS = TableSchema("counts", (
    ("count_id", "TEXT NOT NULL PRIMARY KEY", "String"),
    ("minute", "TEXT NOT NULL", "DateTime"),
    ("domain", "TEXT NOT NULL", "String"),
    ("outcome", "TEXT NOT NULL", "String"),
    ("reason", "TEXT NOT NULL", "String"),
    ("events", "INTEGER NOT NULL", "UInt32"),
), "count_id", "minute", "(domain, minute, outcome, reason, count_id)")

#: The tables besides `events`, by name: what a spool record may carry and every sink keeps.
TABLES: dict[str, TableSchema] = {t.name: t for t in (DROPS, COUNTS)}
assert tuple(c for c, _, _ in DROPS.columns) == DropRecord._fields
assert tuple(c for c, _, _ in COUNTS.columns) == MinuteCount._fields
