"""Per-site API keys for the authenticated endpoints (the console API, server-side events).

A key reads `egk_<id>_<secret>`: `id` is 12 hex characters, public (it is what `keys list`
shows and `keys revoke` takes); `secret` is 32 random bytes in URL-safe base64. Only the
SHA-256 of the secret is stored (a 256-bit random secret needs no slow hash: there is nothing
to guess offline), next to the site, the scope, a label, when it was made, last used and
revoked. A presented key is looked up by its id and its hash compared with
`hmac.compare_digest`, so the time taken says nothing about how much of the secret was right.

Scopes: `read` (the site's console API), `manage` (`read` plus changing its shield rules),
`ingest` (server-side events). A key only ever names its own site.

Where keys live: a SQLite file in the data dir (`keys.sqlite`), shared by the workers of one
machine; with `[shared]` Redis, in Redis, shared by every node. Workers remember a looked-up key
for at most `CACHE_SECONDS` (2 s), so a revoked key stops working everywhere within that,
without a restart. Failed attempts are limited per client by the caller (gateway/auth.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from cachetools import TTLCache

from gateway.state.sqlitefile import open_wal

__all__ = ["CACHE_SECONDS", "SCOPES", "KeyCommandError", "KeyRecord", "KeyRing", "KeyStore", "RedisKeyStore",
           "SQLiteKeyStore", "create_key", "make_secret", "open_key_store", "parse_token"]

SCOPES = ("read", "manage", "ingest")
# What each scope may do besides its own name.
_GRANTS = {"read": {"read"}, "manage": {"read", "manage"}, "ingest": {"ingest"}}
CACHE_SECONDS = 2.0
_TOUCH_SECONDS = 60.0  # last_used is written at most once a minute per key
_TOKEN = re.compile(r"egk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class KeyCommandError(Exception):
    """A key command that cannot be done (unknown id, bad scope): the message says why."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    site: str
    scope: str
    label: str
    created: float
    digest: str  # SHA-256 of the secret, hex
    last_used: float | None = None
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return self.revoked is None and scope in _GRANTS.get(self.scope, ())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def make_secret() -> tuple[str, str]:
    """A new (id, token); the token is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return key_id, f"egk_{key_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


class KeyStore(Protocol):
    def add(self, record: KeyRecord) -> None: ...
    def get(self, key_id: str) -> KeyRecord | None: ...
    def all(self) -> list[KeyRecord]: ...
    def revoke(self, key_id: str, when: float) -> bool: ...
    def touch(self, key_id: str, when: float) -> None: ...
    def close(self) -> None: ...


def create_key(store: KeyStore, site: str, scope: str, label: str = "") -> tuple[KeyRecord, str]:
    """Make and store a key; the token is returned once."""
    if scope not in SCOPES:
        raise KeyCommandError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    key_id, token = make_secret()
    secret = token[len(f"egk_{key_id}_"):]
    record = KeyRecord(key_id, site, scope, label[:200], time.time(), _digest(secret))
    store.add(record)
    return record, token


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, site TEXT NOT NULL, scope TEXT NOT NULL, label TEXT NOT NULL,
  created REAL NOT NULL, digest TEXT NOT NULL, last_used REAL, revoked REAL
);
"""


class SQLiteKeyStore:
    """Keys in `<data_dir>/keys.sqlite` (WAL: every worker reads while the CLI writes)."""

    def __init__(self, path: Path) -> None:
        self._conn = open_wal(path, timeout=10, script=_SQLITE_SCHEMA)
        self._lock = threading.Lock()
        path.chmod(0o600)

    def _row(self, row: tuple[object, ...]) -> KeyRecord:
        i, site, scope, label, created, digest, last_used, revoked = row
        return KeyRecord(str(i), str(site), str(scope), str(label), float(created),  # type: ignore[arg-type]
                         str(digest), last_used, revoked)  # type: ignore[arg-type]

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (record.id, record.site, record.scope, record.label, record.created,
                                record.digest, record.last_used, record.revoked))

    def get(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self._row(row)

    def all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM keys ORDER BY site, created").fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, key_id: str, when: float) -> bool:
        with self._lock:
            cur = self._conn.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                     (when, key_id))
        return cur.rowcount > 0

    def touch(self, key_id: str, when: float) -> None:
        with self._lock:
            self._conn.execute("UPDATE keys SET last_used = ? WHERE id = ?", (when, key_id))

    def close(self) -> None:
        self._conn.close()


class RedisKeyStore:
    """Keys in Redis, one hash per key at `<prefix>key:<id>` and the ids in `<prefix>keys`."""

    _FIELDS = ("site", "scope", "label", "created", "digest", "last_used", "revoked")

    def __init__(self, client: redis.Redis, key_prefix: str = "gw:") -> None:
        self._client = client
        self._prefix = key_prefix

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}key:{key_id}"

    def add(self, record: KeyRecord) -> None:
        fields = {"site": record.site, "scope": record.scope, "label": record.label,
                  "created": repr(record.created), "digest": record.digest}
        pipe = self._client.pipeline()
        pipe.hset(self._key(record.id), mapping=fields)
        pipe.sadd(f"{self._prefix}keys", record.id)
        pipe.execute()

    def _record(self, key_id: str, raw: dict[bytes, bytes]) -> KeyRecord | None:
        if not raw:
            return None
        v = {k.decode(): b.decode() for k, b in raw.items()}
        return KeyRecord(key_id, v["site"], v["scope"], v.get("label", ""), float(v["created"]), v["digest"],
                         float(v["last_used"]) if v.get("last_used") else None,
                         float(v["revoked"]) if v.get("revoked") else None)

    def get(self, key_id: str) -> KeyRecord | None:
        return self._record(key_id, self._client.hgetall(self._key(key_id)))  # type: ignore[arg-type]

    def all(self) -> list[KeyRecord]:
        ids = sorted(i.decode() for i in self._client.smembers(f"{self._prefix}keys"))  # type: ignore[union-attr]
        out = [r for i in ids if (r := self.get(i)) is not None]
        return sorted(out, key=lambda r: (r.site, r.created))

    def revoke(self, key_id: str, when: float) -> bool:
        key = self._key(key_id)
        if not self._client.exists(key) or self._client.hget(key, "revoked"):
            return False
        self._client.hset(key, "revoked", repr(when))
        return True

    def touch(self, key_id: str, when: float) -> None:
        self._client.hset(self._key(key_id), "last_used", repr(when))

    def close(self) -> None:
        pass  # the client belongs to SharedRedis


class KeyRing:
    """A worker's view of the keys: verify a presented token, remembering each looked-up id for
    `CACHE_SECONDS` (bounded), so a revocation is seen within that on every worker."""

    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.time,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self.store = store
        self._clock = clock
        # id -> record or None (unknown ids are remembered too, so a flood of made-up ids costs
        # one lookup each per interval at most); at most 4096 ids, each for cache_seconds.
        self._cache: TTLCache[str, KeyRecord | None] = TTLCache(4096, cache_seconds, timer=clock)
        self._touched: TTLCache[str, bool] = TTLCache(4096, _TOUCH_SECONDS, timer=clock)
        self._lock = threading.Lock()

    def verify(self, token: str) -> KeyRecord | None:
        """The key's record if the token is a live key, else None. May raise the store's errors
        (the caller answers 503: an unreachable key store must not let a revoked key in)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._lock:
            try:
                record = self._cache[key_id]
                cached = True
            except KeyError:
                cached = False
        if not cached:
            record = self.store.get(key_id)
            with self._lock:
                self._cache[key_id] = record
        if record is None or not hmac.compare_digest(record.digest, _digest(secret)):
            return None
        if record.revoked is not None:
            return None
        return record

    def touch(self, record: KeyRecord) -> None:
        """Note the key as used (at most once a minute per key: it is for `keys list`)."""
        with self._lock:
            if record.id in self._touched:
                return
            self._touched[record.id] = True
        self.store.touch(record.id, self._clock())



def open_key_store(data_dir: Path, client: redis.Redis | None = None, key_prefix: str = "gw:") -> KeyStore:
    """Redis when the gateway shares state (`[shared]`), else the data dir's SQLite file."""
    if client is not None:
        return RedisKeyStore(client, key_prefix)
    return SQLiteKeyStore(data_dir / "keys.sqlite")
