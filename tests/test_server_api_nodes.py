"""POST /api/v1/events on two nodes sharing Redis and writing to one real ClickHouse server:
one key's bucket holds across both nodes, and a batch retried on the other node is stored once."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import servers
from gatewayproc import Gateway, write_config
from servers import ClickHouseServer, RedisServer

clickhouse_server = servers.clickhouse_server  # module-scoped server fixtures from tests/servers.py
redis_server = servers.redis_server

SITE = 'domain = "shop.test"\n[server_api]\nevents_per_minute = 60\nburst = 100\n'


def _config(base: Path, ch: ClickHouseServer, redis: RedisServer, database: str) -> Path:
    cfg = write_config(base, sites={"shop": SITE})
    text = re.sub(r"\[sink\][^\[]*", "", cfg.read_text())
    text += (f'[sink]\ntype = "clickhouse"\nurl = "{ch.url}"\ndatabase = "{database}"\n'
             'batch_size = 500\nflush_interval = 0.2\n'
             f'[shared]\ntype = "redis"\nurl = "{redis.url}"\nkey_prefix = "{database}:"\n')
    cfg.write_text(text)
    return cfg


@pytest.fixture
def nodes(tmp_path: Path, clickhouse_server: ClickHouseServer,
          redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway, str]]:
    database = f"server_api_{os.getpid()}"
    clickhouse_server.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    a = Gateway(_config(tmp_path / "a", clickhouse_server, redis_server, database)).start()
    try:
        b = Gateway(_config(tmp_path / "b", clickhouse_server, redis_server, database)).start()
    except BaseException:
        a.close()
        raise
    try:
        yield a, b, database
    finally:
        a.close()
        b.close()


def _q(ch: ClickHouseServer, sql: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in ch.query(f"{sql} FORMAT JSONEachRow").splitlines() if line.strip()]


def _send(gw: Gateway, key: str, events: list[dict[str, Any]]) -> Any:
    return gw.api("POST", "/api/v1/events", key, content=json.dumps({"events": events}))


def test_a_batch_retried_on_another_node_is_stored_once_and_the_bucket_is_shared(
        nodes: tuple[Gateway, Gateway, str], clickhouse_server: ClickHouseServer) -> None:
    a, b, database = nodes
    key = a.key("shop.test", "ingest")  # the key lives in Redis: node b knows it too
    batch = [{"eventName": "Purchase", "path": f"/order/{i}", "eventId": f"order-{i}",
              "anonymousId": f"customer-{i % 7}", "revenue": {"amount": "9.90", "currency": "EUR"}}
             for i in range(30)]
    assert _send(a, key, batch).json() == {"accepted": 30}
    assert _send(b, key, batch).json() == {"accepted": 30}  # the sender retried after a timeout

    # Both copies reach ClickHouse; its dedupe on event_id keeps one.
    deadline = time.monotonic() + 30
    while True:
        (raw,) = _q(clickhouse_server, f"SELECT count() AS n FROM {database}.events")
        if int(raw["n"]) >= 60 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert int(raw["n"]) == 60, "both nodes should have written their copy"
    (final,) = _q(clickhouse_server,
                  f"SELECT count() AS n, uniqExact(event_id) AS u, uniqExact(user_id) AS v FROM {database}.events FINAL")
    assert (int(final["n"]), int(final["u"]), int(final["v"])) == (30, 30, 7)

    # 60 of the key's 100 tokens are spent, whichever node took them: 50 more is over on either.
    for node in (a, b):
        r = _send(node, key, batch[:25] + batch[:25])
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert _send(b, key, batch + batch[:10]).status_code == 202  # the last 40
    r = _send(a, key, batch[:5])  # a refill of 5 tokens takes 5 s
    assert r.status_code == 429, "the bucket is shared: node a must see what node b took"
