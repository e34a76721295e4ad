"""Shared salts and rate limits against a real redis-server on loopback (Debian's package)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import servers
from servers import RedisServer, missing, redis_command

from gateway.config import parse_shared
from gateway.errors import ConfigError
from gateway.state.shared import RedisRateLimiter, RedisSaltStore, open_shared

redis_server = servers.redis_server  # the module-scoped server fixture from tests/servers.py

DAY = 86400
T0 = 20_000 * DAY + 3600.0  # 2024-10-04 01:00 UTC


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    c.flushdb()
    yield c
    c.close()


def node(redis_server: RedisServer) -> redis.Redis:
    """A separate client, as another gateway node would have."""
    return redis.Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)


def salt_keys(c: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in c.scan_iter(match="gw:{salt}:*"))


def test_two_nodes_get_the_same_salt(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisSaltStore(node(redis_server), clock=clock)
    b = RedisSaltStore(node(redis_server), clock=clock)
    cur_a, prev_a = a.salts()
    cur_b, prev_b = b.salts()
    assert len(cur_a) == 16 and cur_a == cur_b
    assert prev_a is None and prev_b is None
    assert salt_keys(client) == ["gw:{salt}:2024-10-04"]


def test_rotation_is_seen_by_both_nodes_and_old_salts_are_deleted(
        redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisSaltStore(node(redis_server), clock=clock)
    b = RedisSaltStore(node(redis_server), clock=clock)
    day1, _ = a.salts()
    assert b.salts() == (day1, None)

    clock.t += DAY  # next UTC day: both nodes notice without waiting for a refresh
    day2, prev = b.salts()
    assert prev == day1 and day2 != day1
    assert a.salts() == (day2, day1)

    clock.t += DAY
    day3, prev = a.salts()
    assert prev == day2 and day3 not in (day1, day2)
    assert b.salts() == (day3, day2)
    # The first day's salt is gone from Redis, not only from the nodes' memory.
    assert salt_keys(client) == ["gw:{salt}:2024-10-05", "gw:{salt}:2024-10-06"]


def test_salt_keys_expire_on_their_own_after_serving_as_previous(
        redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock(20_000 * DAY + 10.0)  # ten seconds into the day
    RedisSaltStore(node(redis_server), clock=clock).salts()
    ttl = cast(int, client.pttl("gw:{salt}:2024-10-04")) / 1000
    assert 2 * DAY - 10 + 60 - 5 < ttl <= 2 * DAY - 10 + 60  # end of the next day, plus a minute


def test_salts_are_cached_and_refreshed_after_the_interval(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisSaltStore(node(redis_server), clock=clock, refresh_seconds=60)
    first, _ = a.salts()
    # Redis lost its data and another node published a new salt for the day.
    client.flushdb()
    other = RedisSaltStore(node(redis_server), clock=clock)
    replaced, _ = other.salts()
    assert replaced != first
    clock.t += 30
    assert a.salts()[0] == first  # cached: no round trip yet
    clock.t += 31
    assert a.salts()[0] == replaced  # converged within the refresh interval


def test_a_stray_value_under_the_salt_key_is_replaced(redis_server: RedisServer, client: redis.Redis) -> None:
    client.set("gw:{salt}:2024-10-04", b"short")
    cur, _ = RedisSaltStore(node(redis_server), clock=FakeClock()).salts()
    assert len(cur) == 16 and client.get("gw:{salt}:2024-10-04") == cur


def test_key_prefix_separates_gateways_sharing_one_redis(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    one = RedisSaltStore(node(redis_server), "one:", clock=clock).salts()[0]
    two = RedisSaltStore(node(redis_server), "two:", clock=clock).salts()[0]
    assert one != two


def test_rate_limit_holds_across_two_nodes(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisRateLimiter(node(redis_server), clock=clock)
    b = RedisRateLimiter(node(redis_server), clock=clock)
    results = [(a if i % 2 else b).allow("site.test", 60, 10) for i in range(10)]
    assert all(ok for ok, _ in results)
    ok, retry_after = a.allow("site.test", 60, 10)
    assert not ok and 0.9 < retry_after <= 1.0  # one token per second at 60/min
    ok, _ = b.allow("site.test", 60, 10)
    assert not ok
    assert a.allow("other.test", 60, 10) == (True, 0.0)  # buckets are per key


def test_rate_limit_refills_over_time(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisRateLimiter(node(redis_server), clock=clock)
    b = RedisRateLimiter(node(redis_server), clock=clock)
    for _ in range(5):
        assert a.allow("site.test", 120, 5)[0]
    assert not b.allow("site.test", 120, 5)[0]
    clock.t += 1.0  # 120/min = 2 tokens per second
    assert b.allow("site.test", 120, 5)[0]
    assert a.allow("site.test", 120, 5)[0]
    assert not a.allow("site.test", 120, 5)[0]
    clock.t += 3600
    assert sum(a.allow("site.test", 120, 5)[0] for _ in range(8)) == 5  # never more than the burst


def test_rate_limit_uses_the_redis_clock_by_default(redis_server: RedisServer, client: redis.Redis) -> None:
    a = RedisRateLimiter(node(redis_server))
    b = RedisRateLimiter(node(redis_server))
    assert sum(a.allow("live.test", 600, 3)[0] for _ in range(3)) == 3
    ok, retry_after = b.allow("live.test", 600, 3)
    assert not ok and 0 < retry_after <= 0.1
    time.sleep(0.25)  # 10 tokens per second
    assert b.allow("live.test", 600, 3)[0]
    # The bucket's key expires once it would be full again, so idle sites cost no memory.
    assert 0 < cast(int, client.ttl("gw:rl:live.test")) <= 2


def test_redis_down_rate_limiter_allows_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    if redis_command() is None:
        missing("redis-server", "Redis server")
    base = Path(tempfile.mkdtemp(prefix="gw-redis-down-"))
    try:
        server = RedisServer(base).start()
        lim = RedisRateLimiter(node(server))
        assert lim.allow("site.test", 60, 1)[0]
        assert not lim.allow("site.test", 60, 1)[0]
        server.stop()
        caplog.set_level(logging.WARNING, logger="gateway.shared")
        t = time.perf_counter()
        assert all(lim.allow("site.test", 60, 1) == (True, 0.0) for _ in range(1000))
        assert time.perf_counter() - t < 1.0  # a dead Redis is not asked on every request
        warnings = [r for r in caplog.records if r.name == "gateway.shared"]
        assert len(warnings) == 1 and "letting events through" in warnings[0].getMessage()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_redis_down_salts_come_from_memory_and_a_new_day_converges_when_it_is_back() -> None:
    if redis_command() is None:
        missing("redis-server", "Redis server")
    base = Path(tempfile.mkdtemp(prefix="gw-redis-salt-"))
    try:
        server = RedisServer(base).start()
        clock = FakeClock()
        a = RedisSaltStore(node(server), clock=clock, refresh_seconds=60)
        b = RedisSaltStore(node(server), clock=clock, refresh_seconds=60)
        day1 = a.salts()[0]
        assert b.salts()[0] == day1
        server.stop()
        clock.t += 120
        assert a.salts() == (day1, None)  # Redis down: the cached salt goes on
        clock.t += DAY
        a_local, a_prev = a.salts()  # new day, Redis down: a local salt, yesterday's as previous
        assert a_prev == day1 and a_local != day1
        server.start()  # empty: no salt for the day yet
        clock.t += 10
        assert a.salts()[0] == a_local  # offered again and accepted: a keeps its ids
        assert b.salts() == (a_local, None)  # b adopts it (yesterday's salt died with Redis's data)
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_open_shared_validates_the_table(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    assert parse_shared({}, "gateway.toml") is None and open_shared(None) is None
    shared = open_shared(parse_shared({"type": "redis", "url": redis_server.url, "key_prefix": "t:",
                                       "salt_refresh_seconds": 30}, "gateway.toml"))
    assert shared is not None
    try:
        assert shared.ping()
        assert shared.salts.refresh_seconds == 30 and shared.salts.prefix == "t:"
        assert shared.limiter.allow("x", 60, 1)[0]
    finally:
        shared.close()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": redis_server.url}, "shared.type"),
        ({"type": "memcached"}, "shared.type"),
        ({"type": "redis", "url": "http://127.0.0.1:6379"}, "shared.url"),
        ({"type": "redis", "url": 6379}, "shared.url"),
        ({"type": "redis", "key_prefix": ""}, "shared.key_prefix"),
        ({"type": "redis", "salt_refresh_seconds": 0}, "shared.salt_refresh_seconds"),
        ({"type": "redis", "salt_refresh_seconds": True}, "shared.salt_refresh_seconds"),
        ({"type": "redis", "timeout": "1s"}, "shared.timeout"),
        ({"type": "redis", "password_env": "GW_TEST_UNSET_VARIABLE"}, "shared.password_env"),
        ({"type": "redis", "prefix": "x"}, "shared.prefix"),
    ]
    monkeypatch.delenv("GW_TEST_UNSET_VARIABLE", raising=False)
    for table, key in bad:
        with pytest.raises(ConfigError) as exc:
            parse_shared(table, "gateway.toml")
        assert exc.value.key == key, table
        assert str(exc.value).startswith(f"gateway.toml: {key}: ")


def test_tokens_given_back_are_shared_and_never_past_a_full_bucket(redis_server: RedisServer, client: redis.Redis) -> None:
    clock = FakeClock()
    a = RedisRateLimiter(node(redis_server), clock=clock)
    b = RedisRateLimiter(node(redis_server), clock=clock)
    assert a.take("ingest:k", 8, 60, 10)[0] and not b.take("ingest:k", 3, 60, 10)[0]
    b.give_back("ingest:k", 8, 60, 10)  # another node returns what this one took
    assert a.take("ingest:k", 10, 60, 10)[0]
    a.give_back("ingest:k", 10, 60, 10)
    a.give_back("ingest:k", 10, 60, 10)
    assert b.take("ingest:k", 10, 60, 10)[0] and not b.take("ingest:k", 1, 60, 10)[0]
