"""POST /api/v1/events on two nodes sharing Redis and writing to one real ClickHouse server:
one key's bucket holds across both nodes, and a batch retried seconds later on the other node
is stored once."""

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


def _shipped(node: Gateway) -> int:
    """Rows the node's shipper has handed to the sink (its status file, published every second)."""
    try:
        return int(json.loads((node.data_dir / "state" / "shipper.json").read_text())["shipped_rows"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_batch_retried_seconds_later_on_another_node_is_stored_once_and_the_bucket_is_shared(
        nodes: tuple[Gateway, Gateway, str], clickhouse_server: ClickHouseServer) -> None:
    a, b, database = nodes
    key = a.key("shop.test", "ingest")  # the key lives in Redis: node b knows it too
    # No timestamps: each copy's row time is its arrival. Half the events name no visitor: each
    # copy's visitor is its own request's.
    batch = [{"eventName": "Purchase", "path": f"/order/{i}", "eventId": f"order-{i}",
              "revenue": {"amount": "9.90", "currency": "EUR"}, **({"anonymousId": f"customer-{i % 7}"} if i % 2 else {})}
             for i in range(30)]
    assert _send(a, key, batch).json() == {"accepted": 30}
    deadline = time.monotonic() + 30
    while int(_q(clickhouse_server, f"SELECT count() AS n FROM {database}.events")[0]["n"]) < 30:
        assert time.monotonic() < deadline, "node a's copy never reached ClickHouse"
        time.sleep(0.2)
    first = _q(clickhouse_server, f"SELECT event_id, toString(timestamp) AS t, toString(user_id) AS u "
                                  f"FROM {database}.events ORDER BY event_id")
    time.sleep(1.2)  # the sender retries after a timeout: a later second, and another request
    assert _send(b, key, batch).json() == {"accepted": 30}
    deadline = time.monotonic() + 30
    while _shipped(b) < 30:
        assert time.monotonic() < deadline, "node b's shipper never wrote its copy"
        time.sleep(0.2)

    # On disk, not only after FINAL: node b's shipper found every event already stored.
    stored = _q(clickhouse_server, f"SELECT event_id, toString(timestamp) AS t, toString(user_id) AS u "
                                   f"FROM {database}.events ORDER BY event_id")
    assert stored == first and len({r["u"] for r in stored}) == 8  # 7 customers and one request's visitor

    # 60 of the key's 100 tokens are spent, whichever node took them: 50 more is over on either.
    for node in (a, b):
        r = _send(node, key, batch[:25] + batch[:25])
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert _send(b, key, batch + batch[:10]).status_code == 202  # the last 40
    r = _send(a, key, batch[:5])  # a refill of 5 tokens takes 5 s
    assert r.status_code == 429, "the bucket is shared: node a must see what node b took"
