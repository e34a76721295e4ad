"""The embedded sink: one SQLite file in WAL mode, shared safely by every worker process.

Writes are batched (thousands of rows per transaction) and idempotent on `event_id`
(INSERT OR IGNORE), so a batch replayed after a crash never duplicates a row. A `sessions`
view derives visits from `user_id` and `timestamp` with a 30-minute inactivity gap; events
within one second keep the order they were written in (rowid).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from gateway.schema import COLUMN_TYPES, COLUMNS, TABLES, TableSchema
from gateway.state.sqlitefile import open_wal

_WRITE_CACHE_KIB = 32 * 1024
_COLS_SQL = ", ".join(f'"{c}"' for c in COLUMNS)
_INSERT = f"INSERT OR IGNORE INTO events ({_COLS_SQL}) VALUES ({', '.join('?' * len(COLUMNS))})"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
  {", ".join(f'"{name}" {sqlt}' for name, sqlt, _ in COLUMN_TYPES)}
);
CREATE INDEX IF NOT EXISTS events_site_time ON events (domain, timestamp);
CREATE INDEX IF NOT EXISTS events_visitor ON events (domain, user_id, timestamp);
CREATE VIEW IF NOT EXISTS sessions AS
WITH ordered AS (
  SELECT domain, user_id, name, pathname, hostname, interactive, event_id, rowid AS seq,
         unixepoch(timestamp) AS ts,
         LAG(unixepoch(timestamp)) OVER w AS prev_ts
  FROM events
  WINDOW w AS (PARTITION BY domain, user_id ORDER BY timestamp, rowid)
),
numbered AS (
  SELECT *, SUM(CASE WHEN prev_ts IS NULL OR ts - prev_ts > 1800 THEN 1 ELSE 0 END)
            OVER (PARTITION BY domain, user_id ORDER BY ts, seq ROWS UNBOUNDED PRECEDING) AS visit
  FROM ordered
)
SELECT
  domain,
  user_id,
  visit,
  datetime(MIN(ts), 'unixepoch') AS start,
  datetime(MAX(ts), 'unixepoch') AS end,
  MAX(ts) - MIN(ts) AS duration,
  (SELECT n2.pathname FROM numbered n2 WHERE n2.domain = n.domain AND n2.user_id = n.user_id
     AND n2.visit = n.visit AND n2.name = 'pageview' ORDER BY n2.ts, n2.seq LIMIT 1) AS entry_page,
  (SELECT n2.pathname FROM numbered n2 WHERE n2.domain = n.domain AND n2.user_id = n.user_id
     AND n2.visit = n.visit AND n2.name = 'pageview' ORDER BY n2.ts DESC, n2.seq DESC LIMIT 1) AS exit_page,
  SUM(name = 'pageview') AS pageviews,
  SUM(name != 'engagement') AS events,
  CASE WHEN SUM(name = 'pageview') >= 2
         OR SUM(name NOT IN ('pageview', 'engagement') AND interactive = 1) > 0
       THEN 0 ELSE 1 END AS is_bounce
FROM numbered n
GROUP BY domain, user_id, visit;
"""


def _table_sql(t: TableSchema) -> str:
    cols = ", ".join(f'"{name}" {sqlt}' for name, sqlt, _ in t.columns)
    return (f'CREATE TABLE IF NOT EXISTS "{t.name}" ({cols});\n'
            f'CREATE INDEX IF NOT EXISTS "{t.name}_site_time" ON "{t.name}" (domain, "{t.time}");\n')


_TABLES_SQL = "".join(_table_sql(t) for t in TABLES.values())


def _insert_sql(t: TableSchema) -> str:
    names = ", ".join(f'"{c}"' for c, _, _ in t.columns)
    return f'INSERT OR IGNORE INTO "{t.name}" ({names}) VALUES ({", ".join("?" * len(t.columns))})'


_TABLE_INSERTS = {t.name: _insert_sql(t) for t in TABLES.values()}


def connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    conn = open_wal(path, timeout=timeout)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def ensure_schema(path: Path) -> None:
    open_wal(path, timeout=30.0, script=_SCHEMA + _TABLES_SQL).close()


class SQLiteSink:
    """Writes batches of row tuples. Thread-safe: writes are serialised by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_schema(path)
        self._conn = connect(path)
        # The indexes take inserts at scattered places (visitor ids are random); a page cache
        # of 32 MiB instead of SQLite's 2 MiB keeps their hot pages in memory as the file grows,
        # instead of reading them back from the OS for every batch. Allocated as used.
        self._conn.execute(f"PRAGMA cache_size=-{_WRITE_CACHE_KIB}")
        self._lock = threading.Lock()

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def write_table(self, table: str, rows: Sequence[tuple[object, ...]]) -> None:
        """Rows of one of gateway.schema.TABLES (drop records, counts), idempotent on its key."""
        if not rows:
            return
        insert = _TABLE_INSERTS[table]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(insert, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def expire(self, table: str, before: str) -> int:
        """Delete `table`'s rows older than `before` ("YYYY-MM-DD HH:MM:SS", UTC); how many."""
        t = TABLES[table]
        with self._lock:
            cur = self._conn.execute(f'DELETE FROM "{t.name}" WHERE "{t.time}" < ?', (before,))
            return cur.rowcount

    def ping(self) -> bool:
        """Can the file be opened and read? Its own short-lived connection, so a write stuck
        behind another process's lock does not hold up the readiness probe."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
            try:
                conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
            finally:
                conn.close()
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        with self._lock:
            self._conn.close()
