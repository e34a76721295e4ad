"""State shared by many gateway nodes through Redis: daily salts and per-site rate limits.

Without a `[shared]` table every node keeps these in its data dir (gateway/state/salts.py,
gateway/state/limits.py). With `[shared] type = "redis"`, every node computes the same visitor id for
the same visitor on the same day, and a site's rate limit holds across the whole fleet.

Salts: one per UTC day, 16 random bytes at `<prefix>{salt}:<YYYY-MM-DD>`. Whichever node first
needs the day's salt creates it (one Lua script: read, or set if absent: no two nodes can
create different salts for the same day). Each key expires by itself one minute after the end
of the following day, the last moment it is of use as the "previous" salt, so an expired salt
disappears from Redis even if no node is running; nodes also delete any older salt key they
see when their day changes. Nodes cache both salts in memory and re-read them every
`salt_refresh_seconds` (60 s by default) and at UTC midnight: a Redis round trip costs hundreds
of microseconds, so it is never made per request.

Rate limits: a token bucket per key in a Redis hash, updated by one Lua script (EVALSHA) so
the check-and-take is atomic across nodes. Refill uses Redis's clock, not the nodes', so
nodes with skewed clocks cannot mint tokens. The hash expires once the bucket would be full
again, so idle sites cost no memory.

When Redis cannot be reached: salts come from the in-memory cache; a node that has no salt for
the new day makes one locally and offers it to Redis when Redis is back (if no other node has
published one by then, its salt becomes everyone's; otherwise it switches to the shared one).
The rate limiter lets every event through (rate limiting is protection, not accounting; an
outage of the shared store must not take the sites down) and does not try Redis again for a few
seconds, so a dead Redis costs nothing per request. Both log a warning at most once a minute.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from gateway.config import SharedConfig
from gateway.state.salts import SALT_BYTES, day_name, day_of

__all__ = ["RedisRateLimiter", "RedisSaltStore", "SharedRedis", "open_shared"]

log = logging.getLogger("gateway.shared")

_DAY = 86400
_EXPIRY_GRACE = 60  # seconds past the end of "previous" a salt may live, for clock skew between nodes
_WARN_EVERY = 60.0
_RETRY_AFTER_FAILURE = 5.0  # seconds the limiter stops asking a Redis that just failed

_REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

# KEYS[1] today's salt, KEYS[2] yesterday's; ARGV[1] a fresh candidate, ARGV[2] its ttl in ms.
# Returns {current, previous or false}.
_SALT_LUA = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  cur = ARGV[1]
end
return {cur, redis.call('GET', KEYS[2])}
"""

# KEYS[1] the bucket; ARGV[1] tokens per second, ARGV[2] burst, ARGV[3] now in seconds or -1
# to use Redis's clock, ARGV[4] "1" to only look (take nothing, write nothing), ARGV[5] the
# cost (negative: tokens given back, never past a full bucket). Returns
# {1|0, seconds to wait as text} (Lua numbers would be truncated to integers on the way out).
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
local last = tonumber(b[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = tokens + (now - last) * rate
  last = now
end
if tokens > burst then tokens = burst end
local cost = tonumber(ARGV[5] or '1')
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  if tokens > burst then tokens = burst end
  allowed = 1
elseif rate > 0 then
  wait = (cost - tokens) / rate
else
  wait = 60
end
if ARGV[4] ~= '1' then
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'ts', string.format('%.6f', last))
  local ttl = 3600
  if rate > 0 then ttl = math.ceil((burst - tokens) / rate) + 1 end
  redis.call('EXPIRE', KEYS[1], ttl)
end
return {allowed, string.format('%.6f', wait)}
"""


class _Warner:
    """Logs a problem at most once per interval, so an outage does not flood the log."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = float("-inf")
        self._lock = threading.Lock()

    def warn(self, msg: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last < _WARN_EVERY:
                return
            self._last = now
        log.warning(msg, *args)


class RedisSaltStore:
    """The SaltStore of gateway/state/salts.py, shared through Redis. Thread-safe."""

    def __init__(self, client: redis.Redis, key_prefix: str = "gw:", *, refresh_seconds: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self._r = client
        self.prefix = key_prefix
        self.refresh_seconds = refresh_seconds
        self._clock = clock or time.time
        self._script = client.register_script(_SALT_LUA)
        self._lock = threading.Lock()
        self._day = -1
        self._next_refresh = float("-inf")
        # One tuple, replaced whole, so a reader without the lock never pairs a new current
        # with an old previous.
        self._pair: tuple[bytes, bytes | None] = (b"", None)
        self._candidates: dict[int, bytes] = {}  # salts made here, offered to Redis until one is shared
        self._warner = _Warner()

    def key(self, day: int) -> str:
        # The {salt} hash tag keeps every salt in one cluster slot, so the script may touch two days.
        return f"{self.prefix}{{salt}}:{day_name(day)}"

    def salts(self) -> tuple[bytes, bytes | None]:
        """(current, previous) for the present UTC day; a Redis round trip at most once per
        refresh interval and at the day change."""
        now = self._clock()
        day = int(now // _DAY)
        if day == self._day and now < self._next_refresh:
            return self._pair
        with self._lock:
            if day != self._day or now >= self._next_refresh:
                self._refresh(day, now)
            return self._pair

    def _fetch(self, day: int, candidate: bytes, now: float) -> tuple[bytes, bytes | None]:
        ttl_ms = int(((day + 2) * _DAY + _EXPIRY_GRACE - now) * 1000)
        keys = [self.key(day), self.key(day - 1)]
        cur, prev = self._script(keys=keys, args=[candidate, ttl_ms])
        if len(cur) != SALT_BYTES:
            # Not a salt this code wrote (a stray value under our key): replace it once.
            self._r.delete(keys[0])
            cur, prev = self._script(keys=keys, args=[candidate, ttl_ms])
            if len(cur) != SALT_BYTES:
                raise redis.exceptions.DataError(f"{keys[0]} does not hold a {SALT_BYTES}-byte salt")
        return bytes(cur), (bytes(prev) if prev is not None and len(prev) == SALT_BYTES else None)

    def _refresh(self, day: int, now: float) -> None:
        candidate = self._candidates.get(day)
        if candidate is None:
            candidate = self._candidates[day] = secrets.token_bytes(SALT_BYTES)
        new_day = day != self._day
        try:
            pair = self._fetch(day, candidate, now)
        except _REDIS_ERRORS as exc:
            self._warner.warn("shared salts: Redis unreachable (%s); using salts held in memory", exc)
            if new_day:
                # Yesterday's current becomes previous; today's is made here until Redis is back.
                held = self._pair[0] if self._day == day - 1 and self._pair[0] else None
                self._day, self._pair = day, (candidate, held)
            self._next_refresh = now + min(self.refresh_seconds, _RETRY_AFTER_FAILURE)
            return
        self._candidates = {d: c for d, c in self._candidates.items() if d > day}
        if new_day:
            self.purge(day)
        self._day, self._pair = day, pair
        self._next_refresh = now + self.refresh_seconds

    def purge(self, today: int | None = None) -> list[str]:
        """Delete every salt key older than yesterday (their expiry does this too; this makes it
        prompt even if a key's expiry was lost). Returns the keys deleted."""
        if today is None:
            today = int(self._clock() // _DAY)
        pattern = _glob_escape(f"{self.prefix}{{salt}}:") + "*"
        old = []
        try:
            for k in self._r.scan_iter(match=pattern, count=100):
                name = k.decode() if isinstance(k, bytes) else str(k)
                d = day_of(name.rsplit(":", 1)[-1])
                if d is None or d < today - 1:
                    old.append(name)
            if old:
                self._r.delete(*old)
        except _REDIS_ERRORS as exc:
            self._warner.warn("shared salts: could not delete expired salts (%s)", exc)
            return []
        return old


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisRateLimiter:
    """Token buckets shared by every node; same `allow` as gateway.state.limits.LocalRateLimiter."""

    def __init__(self, client: redis.Redis, key_prefix: str = "gw:", *,
                 clock: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._r = client
        self.prefix = key_prefix
        self._clock = clock  # None: Redis's own clock (the right choice for several nodes)
        self._monotonic = monotonic
        self._script = client.register_script(_BUCKET_LUA)
        self._skip_until = float("-inf")
        self._warner = _Warner(monotonic)

    def allow(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """Take one token from `key`'s bucket. Returns (allowed, seconds until a token is
        available). When Redis fails, returns (True, 0.0): see the module docstring."""
        return self._bucket(key, rate_per_minute, burst, "0")

    def peek(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """What `allow` would answer now, taking nothing (for `explain`)."""
        return self._bucket(key, rate_per_minute, burst, "1")

    def take(self, key: str, cost: int, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """Take `cost` tokens at once, or none."""
        return self._bucket(key, rate_per_minute, burst, "0", cost)

    def give_back(self, key: str, cost: int, rate_per_minute: int, burst: int) -> None:
        """Return tokens taken for work that was then not done (never past a full bucket)."""
        self._bucket(key, rate_per_minute, burst, "0", -cost)

    def _bucket(self, key: str, rate_per_minute: int, burst: int, peek: str, cost: int = 1) -> tuple[bool, float]:
        if self._monotonic() < self._skip_until:
            return True, 0.0
        now = -1.0 if self._clock is None else self._clock()
        try:
            allowed, wait = self._script(keys=[f"{self.prefix}rl:{key}"],
                                         args=[repr(rate_per_minute / 60.0), max(1, burst), repr(now), peek, cost])
        except _REDIS_ERRORS as exc:
            self._skip_until = self._monotonic() + _RETRY_AFTER_FAILURE
            self._warner.warn("shared rate limit: Redis unreachable (%s); letting events through", exc)
            return True, 0.0
        return bool(int(allowed)), float(wait)

    def close(self) -> None:
        pass  # the client belongs to SharedRedis


@dataclass(slots=True)
class SharedRedis:
    """What `[shared] type = "redis"` gives a worker: the client, the salts, the rate limiter."""

    client: redis.Redis
    salts: RedisSaltStore
    limiter: RedisRateLimiter

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except _REDIS_ERRORS:
            return False

    def close(self) -> None:
        self.client.close()


def open_shared(config: SharedConfig | None, *, clock: Callable[[], float] | None = None) -> SharedRedis | None:
    """Connect to what `[shared]` names (lazily: no round trip happens here, so a gateway starts
    while Redis is down). None without a `[shared]` table: salts and limits stay in the data dir."""
    if config is None:
        return None
    kwargs: dict[str, Any] = {"socket_timeout": config.timeout, "socket_connect_timeout": config.timeout,
                              "health_check_interval": 30}
    if config.password is not None:
        kwargs["password"] = config.password
    client = redis.Redis.from_url(config.url, **kwargs)
    return SharedRedis(
        client=client,
        salts=RedisSaltStore(client, config.key_prefix, refresh_seconds=config.salt_refresh_seconds, clock=clock),
        limiter=RedisRateLimiter(client, config.key_prefix),
    )
