"""The ClickHouse sink: batched RowBinary inserts over ClickHouse's HTTP interface.

Works with the ClickHouse that Debian packages (18.16) and with current releases, so it speaks
plain HTTP (no client library: the common Python client does not talk to 18.16) and uses only
SQL both understand (no LowCardinality, DateTime64, Map, Bool, TTL or window functions).

Exactly-once results. A batch whose outcome is unknown (timeout, crash, lost answer) is sent
again by the caller, so the same `event_id` can arrive twice. The table is a
`ReplacingMergeTree` whose ORDER BY key ends in `event_id`: two copies of an event have the same
key (same site, time, name, visitor and id) and land in the same monthly partition, so the
server keeps one of them when it merges parts. Until it has merged, both copies are on disk;
every query that counts must therefore read `events FINAL` (or count distinct `event_id`), and
the `sessions` view does. On current releases, which can deduplicate whole blocks on
non-replicated tables (`non_replicated_deduplication_window`), the table is also created with
that setting so an identical replayed batch is usually dropped at insert time; 18.16 has no
such thing (block deduplication there exists only for Replicated tables), so FINAL is the
guarantee everywhere and block deduplication is only a saving.

Events retried by their sender. An event sent to the server API with its own `eventId` has an
`event_id` derived from it (marked with `SENDER_ID_MARK`), but a retry is a new request: when
the event has no `timestamp` its row carries the retry's arrival time, and its visitor may be
another (a per-request id, or the next UTC day's). The sort key then differs and FINAL would
keep both. So before writing rows with such ids, the sink asks which of them the table already
holds, for the same site and name, from `retry_window` (the server API's `max_age`) before the
rows' times to 5 minutes after (nodes' clocks may disagree), and writes only the others, each
once. Rows of the gateway's own ids are never looked up: a batch without marked ids costs one
character test per row. Two nodes writing copies of one event in the same instant (each
between the other's look-up and insert) can both succeed; FINAL collapses them when they were
sent within one second by one visitor.

The `sessions` view derives visits without window functions (18.16 has none): per site,
visitor and UTC day it sorts the visitor's events by (time, event_id), starts a new visit
after more than 30 minutes without an event, and aggregates each visit. See `_SESSIONS_SQL`.
"""

from __future__ import annotations

import datetime as dt
import http.client
import re
import struct
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.config import IDENTIFIER, SinkConfig
from gateway.schema import COLUMN_TYPES, COLUMNS, INDEX, SENDER_ID_MARK, TABLES, TableSchema

__all__ = ["ClickHouseError", "ClickHouseSink", "column_types", "encode_rowbinary", "open_clickhouse_sink"]

VISIT_GAP_SECONDS = 1800  # same inactivity gap as the SQLite sessions view



class ClickHouseError(Exception):
    """The server refused a request or could not be reached. `code` is ClickHouse's error code
    when the server answered with one (e.g. 60 = unknown table), else None."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def column_types() -> tuple[tuple[str, str], ...]:
    """(name, ClickHouse type) as this sink creates them. DateTime is pinned to UTC so that
    `toDate(timestamp)` (partitions, the sessions view's day) means the UTC day, the day
    visitor ids are salted for, whatever the server's own time zone."""
    return tuple((name, "DateTime('UTC')" if cht == "DateTime" else cht) for name, _, cht in COLUMN_TYPES)


# --- RowBinary encoding --------------------------------------------------------------------

_pack_u8 = struct.Struct("<B").pack
_pack_u16 = struct.Struct("<H").pack
_pack_u32 = struct.Struct("<I").pack
_pack_i64 = struct.Struct("<q").pack
_UTC = dt.UTC

Encoder = Callable[[bytearray, Any], None]


def _text(value: Any) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:  # a lone surrogate must not make the batch unwritable forever
            return value.encode("utf-8", "replace")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if value is None:
        return b""
    return str(value).encode()


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_bytes(out: bytearray, b: bytes) -> None:
    n = len(b)
    if n < 0x80:  # nearly every value: one length byte
        out.append(n)
    else:
        _put_varint(out, n)
    out += b


def _enc_string(out: bytearray, v: Any) -> None:
    _put_bytes(out, _text(v))


def _enc_nullable_string(out: bytearray, v: Any) -> None:
    if v is None:
        out.append(1)
    else:
        out.append(0)
        _put_bytes(out, _text(v))


def _fixed_string(size: int) -> Encoder:
    pad = b"\0" * size

    def enc(out: bytearray, v: Any) -> None:
        b = _text(v)
        # Longer input is cut (the server would reject the whole batch); shorter is NUL-padded,
        # so an unknown country is stored as two NULs exactly as Plausible stores it.
        out += (b + pad)[:size] if len(b) != size else b

    return enc


def _clamped(pack: Callable[[int], bytes], lo: int, hi: int) -> Encoder:
    def enc(out: bytearray, v: Any) -> None:
        try:
            n = int(v)
        except (TypeError, ValueError):
            n = 0
        # Out-of-range numbers are clamped, not raised: one bad row must not block every retry.
        out += pack(n if lo <= n <= hi else (lo if n < lo else hi))

    return enc


def _enc_string_array(out: bytearray, v: Any) -> None:
    if isinstance(v, str):  # the row carries props as JSON array text (what SQLite stores)
        if v == "[]" or not v:
            out.append(0)
            return
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            v = [v]
        if not isinstance(v, list):
            v = [v]
    elif v is None:
        v = ()
    _put_varint(out, len(v))
    for item in v:
        _put_bytes(out, _text(item) if isinstance(item, str) or item is None else orjson.dumps(item))


def _epoch(v: Any) -> int:
    if isinstance(v, str):
        # 'YYYY-MM-DD HH:MM:SS' (UTC, as the pipeline writes it); fromisoformat also takes 'T'/offsets.
        d = dt.datetime.fromisoformat(v)
        if d.tzinfo is None:
            d = d.replace(tzinfo=_UTC)
        return int(d.timestamp())
    if isinstance(v, dt.datetime):
        return int((v if v.tzinfo else v.replace(tzinfo=_UTC)).timestamp())
    return int(v)


def _datetime_encoder() -> Encoder:
    # Timestamps are formatted once per second by the pipeline, so consecutive rows share the
    # same text: remember the last one instead of parsing every row.
    last: list[Any] = [None, b""]

    def enc(out: bytearray, v: Any) -> None:
        if v != last[0]:
            n = _epoch(v)
            last[0], last[1] = v, _pack_u32(n if 0 <= n <= 0xFFFFFFFF else 0)
        out += last[1]

    return enc


def _encoder_for(cht: str) -> Encoder:
    if cht == "String":
        return _enc_string
    if cht == "Nullable(String)":
        return _enc_nullable_string
    if cht.startswith("DateTime"):
        return _datetime_encoder()
    m = re.fullmatch(r"FixedString\((\d+)\)", cht)
    if m:
        return _fixed_string(int(m.group(1)))
    if cht == "Array(String)":
        return _enc_string_array
    if cht == "UInt8":
        return _clamped(_pack_u8, 0, 0xFF)
    if cht == "UInt16":
        return _clamped(_pack_u16, 0, 0xFFFF)
    if cht == "UInt32":
        return _clamped(_pack_u32, 0, 0xFFFFFFFF)
    if cht == "Int64":
        return _clamped(_pack_i64, -(1 << 63), (1 << 63) - 1)
    raise ValueError(f"no RowBinary encoder for ClickHouse type {cht}")


def encode_rowbinary(rows: Sequence[Sequence[Any]], types: Sequence[str] | None = None) -> bytes:
    """Encode row tuples (in `COLUMNS` order unless `types` says otherwise) as RowBinary."""
    encoders = [_encoder_for(t) for t in (types or [t for _, t in column_types()])]
    # The string columns dominate; inline them instead of a function call per value.
    plan = [(i, None if e is _enc_string else e) for i, e in enumerate(encoders)]
    out = bytearray()
    put = _put_bytes
    for row in rows:
        for i, enc in plan:
            v = row[i]
            if enc is None:
                if v.__class__ is str and v.isascii():
                    n = len(v)
                    if n < 0x80:
                        out.append(n)
                        out += v.encode()
                        continue
                put(out, _text(v))
            else:
                enc(out, v)
    return bytes(out)


# --- SQL -----------------------------------------------------------------------------------

def _q(ident: str) -> str:
    return f"`{ident}`"


def _lit(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_DOMAIN, _TIMESTAMP, _NAME = INDEX["domain"], INDEX["timestamp"], INDEX["name"]
_CLOCK_SKEW = 300  # seconds: a retry's arrival time on another node may be before the first copy's


def _create_table_sql(db: str, table: str, block_dedup: bool) -> str:
    cols = ",\n  ".join(f"{_q(n)} {t}" for n, t in column_types())
    settings = "index_granularity = 8192"
    if block_dedup:
        settings += ", non_replicated_deduplication_window = 1000"
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(db)}.{_q(table)} (\n  {cols}\n)\n"
        "ENGINE = ReplacingMergeTree()\n"
        "PARTITION BY toYYYYMM(timestamp)\n"
        # Per-site time queries read a contiguous range; event_id last makes the key unique per
        # event, which is what ReplacingMergeTree collapses on.
        "ORDER BY (domain, toDate(timestamp), name, user_id, timestamp, event_id)\n"
        f"SETTINGS {settings}"
    )


def _ch_type(cht: str) -> str:
    return "DateTime('UTC')" if cht == "DateTime" else cht


def _other_table_sql(db: str, t: TableSchema, block_dedup: bool) -> str:
    """A console table (drop records, counts): a ReplacingMergeTree collapsing re-sent rows on
    the table's key, partitioned by UTC day so retention drops whole partitions (18.16 has no
    TTL)."""
    cols = ",\n  ".join(f"{_q(n)} {_ch_type(cht)}" for n, _, cht in t.columns)
    settings = "index_granularity = 8192" + (", non_replicated_deduplication_window = 1000" if block_dedup else "")
    return (f"CREATE TABLE IF NOT EXISTS {_q(db)}.{_q(t.name)} (\n  {cols}\n)\n"
            "ENGINE = ReplacingMergeTree()\n"
            f"PARTITION BY toYYYYMMDD({_q(t.time)})\n"
            f"ORDER BY {t.order_by}\n"
            f"SETTINGS {settings}")


def _sessions_sql(db: str, table: str, view: str) -> str:
    # Innermost: one array per (site, visitor, UTC day) of the visitor's events sorted by
    # (time, event_id); a visit starts at the first event and after every gap > 30 min, and
    # arrayCumSum numbers the visits. ARRAY JOIN turns it back into rows tagged with their
    # visit, which the outer query aggregates. Visitor ids change at UTC midnight (daily salt),
    # so grouping by day never splits a visitor id and lets filters on `day` be cheap.
    # `toDate(timestamp, 'UTC')`, not `toDate(timestamp)`: 18.16 rejects the latter next to
    # FINAL when the sort key has the same expression ("Column 'toDate(timestamp)' already exists").
    return f"""CREATE VIEW IF NOT EXISTS {_q(db)}.{_q(view)} AS
SELECT
  domain,
  user_id,
  day,
  visit,
  toDateTime(min(ts), 'UTC') AS start,
  toDateTime(max(ts), 'UTC') AS `end`,
  toUInt32(max(ts) - min(ts)) AS duration,
  argMinIf(pathname, (ts, event_id), name = 'pageview') AS entry_page,
  argMaxIf(pathname, (ts, event_id), name = 'pageview') AS exit_page,
  countIf(name = 'pageview') AS pageviews,
  countIf(name != 'engagement') AS events,
  toUInt8(NOT (pageviews >= 2
               OR countIf(name NOT IN ('pageview', 'engagement') AND interactive = 1) > 0)) AS is_bounce
FROM
(
  SELECT domain, user_id, day, visit,
         e.1 AS ts, e.2 AS event_id, e.3 AS name, e.4 AS pathname, e.5 AS interactive
  FROM
  (
    SELECT
      domain,
      user_id,
      toDate(timestamp, 'UTC') AS day,
      arraySort(x -> (x.1, x.2),
                groupArray((toUInt32(timestamp), event_id, name, pathname, interactive))) AS evs,
      arrayCumSum(arrayMap((d, i) -> if(i = 1 OR d > {VISIT_GAP_SECONDS}, 1, 0),
                           arrayDifference(arrayMap(x -> x.1, evs)),
                           arrayEnumerate(evs))) AS visits
    FROM {_q(db)}.{_q(table)} FINAL
    GROUP BY domain, user_id, day
  )
  ARRAY JOIN evs AS e, visits AS visit
)
GROUP BY domain, user_id, day, visit"""


def _wire_type(cht: str) -> str:
    """The part of a type that decides the RowBinary layout: a DateTime's zone and a
    LowCardinality wrapper (an operator's own table may use them) do not change it."""
    t = cht.replace(" ", "")
    t = re.sub(r"^DateTime\(.*\)$", "DateTime", t)
    m = re.fullmatch(r"LowCardinality\((.*)\)", t)
    return m.group(1) if m else t


# --- the sink --------------------------------------------------------------------------------

class ClickHouseSink:
    """Writes batches of row tuples to ClickHouse. Thread-safe: requests are serialised on one
    keep-alive connection (a batch is one request, so there is nothing to gain from more)."""

    def __init__(self, url: str, database: str = "default", table: str = "events", *,
                 user: str | None = None, password: str | None = None, timeout: float = 30.0,
                 sessions_view: str = "sessions", create_schema: bool = True,
                 retry_window: float = 7 * 86400.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"ClickHouse URL must be http(s)://host:port/, got {url!r}")
        for what, name in (("database", database), ("table", table), ("sessions view", sessions_view)):
            if not IDENTIFIER.match(name):
                raise ValueError(f"ClickHouse {what} name {name!r} must be letters, digits and _")
        self.url = url
        self.database = database
        self.table = table
        self.sessions_view = sessions_view
        self.timeout = timeout
        self.retry_window = retry_window  # how long after its first copy a retried event is still found
        # False when the operator manages the tables (a cluster: `table` names a Distributed
        # table); whoever starts the sink calls ensure_schema() only when this is True.
        self.create_schema = create_schema
        self._schema_ready = not create_schema
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (8443 if self._https else 8123)
        self._path = parsed.path.rstrip("/") + "/"
        self._headers = {"Connection": "keep-alive"}
        user = user if user is not None else (urllib.parse.unquote(parsed.username) if parsed.username else None)
        password = password if password is not None else (
            urllib.parse.unquote(parsed.password) if parsed.password else None)
        if user is not None:
            # Headers rather than URL parameters: credentials stay out of server query logs.
            self._headers["X-ClickHouse-User"] = user
            self._headers["X-ClickHouse-Key"] = password or ""
        self._insert_query = urllib.parse.urlencode({
            "query": f"INSERT INTO {_q(database)}.{_q(table)} ({', '.join(_q(c) for c in COLUMNS)}) FORMAT RowBinary",
        })
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._types = [t for _, t in column_types()]

    # -- HTTP --

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _request(self, params: str, body: bytes, *, timeout: float | None = None) -> bytes:
        """POST with the lock held. A keep-alive connection the server has closed while idle
        fails on first use; that one case is retried once on a new connection (inserts are
        idempotent, so even a request that did reach the server may be sent again)."""
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect(timeout or self.timeout)
            conn = self._conn
            if timeout is not None and conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request("POST", f"{self._path}?{params}", body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                self._conn = None
                if reused and attempt == 0 and isinstance(
                        exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    continue
                raise ClickHouseError(f"ClickHouse at {self._host}:{self._port}: {exc}") from exc
            finally:
                if timeout is not None and conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
            if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
                conn.close()
                self._conn = None
            if resp.status != 200:
                text = data.decode("utf-8", "replace").strip()
                code_h = resp.getheader("X-ClickHouse-Exception-Code")
                m = re.match(r"Code: (\d+)", text)
                code = int(code_h) if code_h and code_h.isdigit() else (int(m.group(1)) if m else None)
                raise ClickHouseError(f"ClickHouse answered {resp.status}: {text[:500]}",
                                      status=resp.status, code=code)
            return data
        raise AssertionError("unreachable")

    def query(self, sql: str, *, timeout: float | None = None) -> bytes:
        """Run one statement; returns the raw answer (TabSeparated unless the SQL says FORMAT)."""
        with self._lock:
            return self._request("", sql.encode(), timeout=timeout)

    def query_rows(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts (JSONEachRow: 64-bit ints come back as text
        on 18.16 and as numbers on newer servers; callers compare accordingly)."""
        data = self.query(f"{sql}\nFORMAT JSONEachRow")
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    # -- schema --

    def ensure_schema(self) -> None:
        """Create the database, the events table and the sessions view if missing, and add
        columns that a newer gateway writes to a table an older one created (18.16 has no
        ADD COLUMN IF NOT EXISTS, so the columns are compared first). A column whose type would
        change the binary layout is an error for the operator to resolve, not guessed at."""
        db, table = self.database, self.table
        self.query(f"CREATE DATABASE IF NOT EXISTS {_q(db)}")
        block_dedup = bool(self.query(
            "SELECT count() FROM system.merge_tree_settings WHERE name = 'non_replicated_deduplication_window'"
        ).strip() not in (b"", b"0"))
        self.query(_create_table_sql(db, table, block_dedup))
        existing = {
            r["name"]: r["type"] for r in self.query_rows(
                f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}'")
        }
        for name, cht in column_types():
            have = existing.get(name)
            if have is None:
                self.query(f"ALTER TABLE {_q(db)}.{_q(table)} ADD COLUMN {_q(name)} {cht}")
            elif _wire_type(have) != _wire_type(cht):
                raise ClickHouseError(
                    f"{db}.{table}.{name} is {have} but the gateway writes {cht}; change the column type")
        self.query(_sessions_sql(db, table, self.sessions_view))
        for other in TABLES.values():
            self.query(_other_table_sql(db, other, block_dedup))
        self._schema_ready = True

    # -- the sink surface --

    def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert one batch as one request. Raises ClickHouseError on any failure; the caller
        keeps the batch and retries, which is safe (see the module docstring)."""
        if not rows:
            return
        if not self._schema_ready:
            # The server may have been down when the gateway started: create the schema on the
            # first write that reaches it.
            self.ensure_schema()
        if any(r[0][:1] == SENDER_ID_MARK for r in rows):
            with self._lock:  # look-up and insert in one hold: no other write of this sink in between
                fresh = self._not_yet_stored(rows)
                if fresh:
                    self._request(self._insert_query, encode_rowbinary(fresh, self._types))
            return
        body = encode_rowbinary(rows, self._types)
        with self._lock:
            self._request(self._insert_query, body)

    def _not_yet_stored(self, rows: Sequence[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """`rows` less the repeats of a sender's event id: in this batch, and in the table
        (see "Events retried by their sender" above). Called with the lock held."""
        seen: set[object] = set()
        out: list[tuple[object, ...]] = []
        marked: dict[str, list[tuple[object, ...]]] = {}
        for r in rows:
            event_id = r[0]
            if isinstance(event_id, str) and event_id[:1] == SENDER_ID_MARK:
                if event_id in seen:
                    continue
                seen.add(event_id)
                marked.setdefault(str(r[_DOMAIN]), []).append(r)
            out.append(r)
        stored: set[str] = set()
        for domain, group in marked.items():
            times = [_epoch(r[_TIMESTAMP]) for r in group]
            lo, hi = min(times) - int(self.retry_window), max(times) + _CLOCK_SKEW
            ids = ", ".join(_lit(str(r[0])) for r in group)
            names = ", ".join(sorted({_lit(str(r[_NAME])) for r in group}))
            found = self._request("", (
                f"SELECT DISTINCT event_id FROM {_q(self.database)}.{_q(self.table)} "
                f"WHERE domain = {_lit(domain)} AND timestamp >= toDateTime({max(lo, 0)}) "
                f"AND timestamp <= toDateTime({hi}) AND name IN ({names}) AND event_id IN ({ids})").encode())
            stored.update(line.decode() for line in found.splitlines() if line)
        return [r for r in out if r[0] not in stored] if stored else out

    def write_table(self, table: str, rows: Sequence[tuple[object, ...]]) -> None:
        """Rows of one of gateway.schema.TABLES, as `write` does for events."""
        if not rows:
            return
        if not self._schema_ready:
            self.ensure_schema()
        t = TABLES[table]
        params = urllib.parse.urlencode({"query": (
            f"INSERT INTO {_q(self.database)}.{_q(t.name)} ({', '.join(_q(c) for c, _, _ in t.columns)}) "
            "FORMAT RowBinary")})
        body = encode_rowbinary(rows, [cht for _, _, cht in t.columns])
        with self._lock:
            self._request(params, body)

    def expire(self, table: str, before: str) -> int:
        """Drop `table`'s daily partitions entirely older than `before` (UTC "YYYY-MM-DD ...");
        how many partitions were dropped."""
        t = TABLES[table]
        day = int(before[:10].replace("-", ""))
        parts = self.query_rows(
            f"SELECT DISTINCT partition FROM system.parts WHERE database = '{self.database}' "
            f"AND table = '{t.name}' AND active")
        dropped = 0
        for part in parts:
            name = str(part["partition"]).strip("'")
            if name.isdigit() and int(name) < day:
                self.query(f"ALTER TABLE {_q(self.database)}.{_q(t.name)} DROP PARTITION {name}")
                dropped += 1
        return dropped

    def ping(self) -> bool:
        """True when the server answers and the events table exists."""
        try:
            with self._lock:
                self._request("", f"SELECT 1 FROM {_q(self.database)}.{_q(self.table)} LIMIT 0".encode(),
                              timeout=min(self.timeout, 5.0))
            return True
        except ClickHouseError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_clickhouse_sink(cfg: SinkConfig, retry_window: float = 7 * 86400.0) -> ClickHouseSink:
    """The sink `[sink] type = "clickhouse"` describes (validated by gateway.config.parse_sink)."""
    return ClickHouseSink(cfg.url, cfg.database, cfg.table, user=cfg.user, password=cfg.password,
                          timeout=cfg.timeout, sessions_view=cfg.sessions_view, create_schema=cfg.create_schema,
                          retry_window=retry_window)
