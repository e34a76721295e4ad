"""Opening a SQLite file that several processes open at once, in WAL mode.

Every worker opens the key store as it starts, and the CLI or the shipper may be opening the
events file at the same moment. Switching a new file to WAL, or creating its tables, takes a
write lock that two connections can race for in a way SQLite answers at once with "database is
locked" instead of waiting out its busy timeout (it will not wait where waiting could deadlock).
`open_wal` retries those two steps, which are idempotent, until the timeout has passed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def open_wal(path: Path, *, timeout: float, script: str = "") -> sqlite3.Connection:
    """A connection to `path` in WAL mode with `script` (idempotent DDL) run on it.

    Autocommit (`isolation_level=None`), usable from several threads under the caller's lock,
    with SQLite's busy timeout set to `timeout` for every later statement.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            if script:
                conn.executescript(script)
            return conn
        except sqlite3.OperationalError as exc:
            # The primary code: the extended ones (SQLITE_BUSY_RECOVERY, ...) are busy too.
            if exc.sqlite_errorcode & 0xFF not in _BUSY or time.monotonic() >= deadline:
                conn.close()
                raise
            if conn.in_transaction:
                conn.rollback()
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
