"""Per-site rate limits, per-visitor velocity caps and per-minute quotas, shared by the workers
of one machine.

Both live in small fixed-size tables in memory-mapped files under `<data_dir>/state/`, guarded
by an fcntl lock: every worker sees the same buckets, a check costs a few microseconds, and
memory is bounded whatever the traffic. (Many machines share the rate limit through Redis
instead; see gateway/state/shared.py.)

- Rate limit: a token bucket per site (`events_per_minute`, `burst`). A refused event makes the
  request answer 429 with `Retry-After`.
- Velocity: events per visitor per visit, where a visit ends after `window_seconds` without an
  event (Matomo's "max actions per visit"). Past the cap, events are dropped as `velocity`.
  The table has a fixed number of slots; when a slot is needed and every candidate is in use,
  the least recently seen visitor is forgotten (that visitor starts counting again).
- Minute quota: how much of a per-minute allowance each key (a site) has used in the current
  UTC minute, so that what is capped "per site and minute" (drop records) is capped for the
  machine, not for each worker.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_BUCKET = struct.Struct("<Qdd")  # key, tokens, last refill time
_VISIT = struct.Struct("<QII")  # key, last seen (s), events in this visit
_QUOTA = struct.Struct("<QqI")  # key, minute (Unix seconds // 60), used in that minute
_PROBE = 8


def _key64(text: str) -> int:
    b = text.encode("utf-8", "surrogatepass")
    # 64-bit key from two CRCs: collisions between a handful of site domains are negligible.
    return ((zlib.crc32(b) << 32) | zlib.crc32(b, 0x9E3779B9)) or 1


class RateLimiter(Protocol):
    """A token bucket per key: this module's, or Redis's for many nodes (gateway/state/shared.py)."""

    def allow(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]: ...
    def peek(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]: ...
    def take(self, key: str, cost: int, rate_per_minute: int, burst: int) -> tuple[bool, float]: ...
    def give_back(self, key: str, cost: int, rate_per_minute: int, burst: int) -> None: ...


class _Table:
    def __init__(self, path: Path, record: struct.Struct, slots: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.record = record
        self.slots = slots
        size = record.size * slots
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self.fd).st_size != size:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self.fd).st_size != size:
                    os.ftruncate(self.fd, 0)
                    os.ftruncate(self.fd, size)
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
        self.mm = mmap.mmap(self.fd, size)

    def lock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


class LocalRateLimiter:
    """Token buckets per key, shared across processes through one mmap file."""

    def __init__(self, path: Path, slots: int = 4096, clock: Callable[[], float] = time.time) -> None:
        self._t = _Table(path, _BUCKET, slots)
        self._clock = clock

    def allow(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """Take one token. Returns (allowed, seconds until a token is available)."""
        return self._bucket(key, rate_per_minute, burst, take=True)

    def peek(self, key: str, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """What `allow` would answer now, taking nothing and writing nothing (for `explain`)."""
        return self._bucket(key, rate_per_minute, burst, take=False)

    def take(self, key: str, cost: int, rate_per_minute: int, burst: int) -> tuple[bool, float]:
        """Take `cost` tokens at once, or none: (allowed, seconds until that many are available)."""
        return self._bucket(key, rate_per_minute, burst, take=True, cost=float(cost))

    def give_back(self, key: str, cost: int, rate_per_minute: int, burst: int) -> None:
        """Return tokens taken for work that was then not done (never past a full bucket)."""
        self._bucket(key, rate_per_minute, burst, take=True, cost=-float(cost))

    def _bucket(self, key: str, rate_per_minute: int, burst: int, *, take: bool,
                cost: float = 1.0) -> tuple[bool, float]:
        k = _key64(key)
        rate = rate_per_minute / 60.0
        now = self._clock()
        t = self._t
        rec = t.record
        start = k % t.slots
        t.lock()
        try:
            slot = -1
            for i in range(_PROBE):
                s = (start + i) % t.slots
                key_, tokens, last = rec.unpack_from(t.mm, s * rec.size)
                if key_ == k:
                    slot = s
                    break
                if key_ == 0 and slot < 0:
                    slot = s
                    tokens, last = float(burst), now
                    break
            else:  # every probed slot belongs to another key: reuse the first (bounded table)
                slot = start
                tokens, last = float(burst), now
            tokens = min(float(burst), tokens + max(0.0, now - last) * rate)
            if tokens >= cost:
                if take:
                    rec.pack_into(t.mm, slot * rec.size, k, min(float(burst), tokens - cost), now)
                return True, 0.0
            if take:
                rec.pack_into(t.mm, slot * rec.size, k, tokens, now)
            return False, (cost - tokens) / rate if rate > 0 else 60.0
        finally:
            t.unlock()

    def close(self) -> None:
        self._t.close()


class VelocityTable:
    """Counts events per visitor per visit; `hit` says whether one more is within the cap."""

    def __init__(self, path: Path, slots: int = 65536, clock: Callable[[], float] = time.time) -> None:
        self._t = _Table(path, _VISIT, slots)
        self._clock = clock

    def hit(self, site: str, user_id: int, cap: int, window_seconds: int) -> bool:
        """Count one more event of this visitor; whether it is within the cap."""
        return self._count(site, user_id, cap, window_seconds, record=True)

    def peek(self, site: str, user_id: int, cap: int, window_seconds: int) -> bool:
        """What `hit` would answer now, counting nothing (for `explain`)."""
        return self._count(site, user_id, cap, window_seconds, record=False)

    def _count(self, site: str, user_id: int, cap: int, window_seconds: int, *, record: bool) -> bool:
        k = (_key64(site) ^ (user_id & 0xFFFFFFFFFFFFFFFF)) or 1
        now = int(self._clock())
        t = self._t
        rec = t.record
        start = k % t.slots
        t.lock()
        try:
            victim, victim_seen = start, 1 << 33
            for i in range(_PROBE):
                s = (start + i) % t.slots
                key_, seen, count = rec.unpack_from(t.mm, s * rec.size)
                if key_ == k:
                    count = 1 if now - seen > window_seconds else count + 1
                    if record:
                        rec.pack_into(t.mm, s * rec.size, k, now, min(count, 0xFFFFFFFF))
                    return count <= cap
                if key_ == 0 or now - seen > window_seconds:
                    victim, victim_seen = s, -1
                    break
                if seen < victim_seen:
                    victim, victim_seen = s, seen
            if record:
                rec.pack_into(t.mm, victim * rec.size, k, now, 1)
            return 1 <= cap
        finally:
            t.unlock()

    def close(self) -> None:
        self._t.close()


class MinuteQuota:
    """A per-minute allowance per key, shared across processes through one mmap file: `take`
    grants what is left of the key's `cap` for a minute. A key's count starts again at a new
    minute; a slot of a past minute is free for any key."""

    def __init__(self, path: Path, slots: int = 1024) -> None:
        self._t = _Table(path, _QUOTA, slots)

    def take(self, key: str, minute: int, wanted: int, cap: int) -> int:
        """Take up to `wanted` of what is left of `cap` for `key` in `minute`: how many were granted."""
        k = _key64(key)
        t = self._t
        rec = t.record
        start = k % t.slots
        t.lock()
        try:
            slot, used = -1, 0
            for i in range(_PROBE):
                s = (start + i) % t.slots
                key_, m, n = rec.unpack_from(t.mm, s * rec.size)
                if key_ == k:
                    slot, used = s, (n if m == minute else 0)
                    break
                if slot < 0 and (key_ == 0 or m != minute):
                    slot = s  # free, or another key's past minute: used unless the key is further on
            else:
                if slot < 0:  # every probed slot is another key's this minute: reuse the first (bounded)
                    slot = start
            granted = max(0, min(wanted, cap - used))
            rec.pack_into(t.mm, slot * rec.size, k, minute, used + granted)
            return granted
        finally:
            t.unlock()

    def close(self) -> None:
        self._t.close()
