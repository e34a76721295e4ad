"""No accepted event lost: crashes, sink outages, and two nodes sharing Redis and ClickHouse.

Every test runs the real gateway as a subprocess on loopback. An event's identity on the client
side is its page path (`/seq/<n>`), because the event id is made by the gateway.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import servers
from browser_headers import browser_headers
from gatewayproc import Gateway, write_config
from prerequisites import unavailable
from servers import ClickHouseServer, RedisServer

clickhouse_server = servers.clickhouse_server  # module-scoped server fixtures from tests/servers.py
redis_server = servers.redis_server

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def _event(seq: int, domain: str = "site.test") -> bytes:
    return json.dumps({"n": "pageview", "u": f"https://{domain}/seq/{seq}", "d": domain}).encode()


class Load:
    """Sender threads posting numbered events until stopped; records what got a 202."""

    def __init__(self, url: str, start: int, threads: int = 4) -> None:
        self.url = url
        self.next = start
        self.acked: set[int] = set()
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _take(self) -> int:
        with self._lock:
            self.next += 1
            return self.next

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                seq = self._take()
                try:
                    r = client.post("/api/event", content=_event(seq),
                                    headers={**browser_headers(CHROME), "x-forwarded-for": f"192.0.2.{seq % 200}"})
                except httpx.HTTPError:
                    with self._lock:
                        self.errors += 1
                    time.sleep(0.01)
                    continue
                with self._lock:
                    self.statuses[r.status_code] += 1
                    if r.status_code == 202 and r.json().get("accepted") == 1:
                        self.acked.add(seq)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _seqs(rows: list[dict[str, object]]) -> Counter[int]:
    out: Counter[int] = Counter()
    for r in rows:
        m = re.fullmatch(r"/seq/(\d+)", str(r["pathname"]))
        if m:
            out[int(m.group(1))] += 1
    return out


def test_sigkill_under_load_loses_no_accepted_event_and_duplicates_none(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw", workers=2, flush_interval=0.2, batch_size=200)
    rng = random.Random(7)
    acked: set[int] = set()
    seq = 0
    for _ in range(4):
        gw = Gateway(cfg, workers=2).start()
        with Load(gw.url, seq) as load:
            time.sleep(rng.uniform(0.8, 2.0))
            gw.stop(signal.SIGKILL)  # the whole process group, mid-load
        seq = load.next + 1
        acked |= load.acked
        assert load.statuses[202] > 0
        assert not any(code >= 500 for code in load.statuses), load.statuses
        gw.client.close()
    assert len(acked) > 200
    # Leftover segments from every killed worker are replayed by the next start.
    spool = cfg.parent / "data" / "spool"
    assert any(spool.iterdir()), "the kills should have left unshipped segments behind"
    gw = Gateway(cfg, workers=2).start()
    assert gw.stop(signal.SIGTERM) == 0, gw.log()[-4000:]
    gw.client.close()
    counts = _seqs(gw.rows())
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    dupes = {s: n for s, n in counts.items() if n > 1}
    assert not dupes, f"events stored twice: {list(dupes.items())[:5]}"
    assert not [p for p in spool.iterdir() if p.suffix in (".ready", ".open")]


def test_sink_outage_loses_nothing_refuses_past_the_budget_and_drains(tmp_path: Path) -> None:
    budget = 200_000
    cfg = write_config(tmp_path / "gw", flush_interval=0.2, batch_size=500,
                       extra=f"[spool]\nmax_disk_bytes = {budget}\nsegment_bytes = 16384\n")
    gw = Gateway(cfg).start()
    try:
        assert gw.post(json.loads(_event(0))).status_code == 202
        assert gw.wait_rows(1)
        # The SQLite file locked by another writer: the sink cannot write.
        lock = sqlite3.connect(gw.sqlite_path, timeout=1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        acked: set[int] = set()
        first_503 = None
        for seq in range(1, 5000):
            r = gw.post(json.loads(_event(seq)), ua=CHROME)
            if r.status_code == 202:
                assert first_503 is None, "accepted again after refusing while the sink is still down"
                acked.add(seq)
            else:
                assert r.status_code == 503, r.text
                assert int(r.headers["retry-after"]) > 0
                assert r.headers["access-control-allow-origin"] == "*"
                first_503 = first_503 or seq
                if seq - first_503 > 20:
                    break
        assert first_503 is not None, "the disk budget was never enforced"
        spooled = sum(p.stat().st_size for p in (gw.data_dir / "spool").iterdir())
        # 503s start only once the backlog is close to the budget (within a segment or two).
        assert spooled >= budget - 2 * 16384, (spooled, budget)
        assert len(gw.rows()) == 1  # nothing got through while locked
        time.sleep(1.2)
        segments = gw.metric("gateway_spool_segments")
        assert segments is not None and segments >= 1, gw.client.get("/metrics").text
        ready = gw.client.get("/ready")
        assert ready.json()["spool_segments"] > 0
        lock.execute("ROLLBACK")
        lock.close()
        # The backlog drains, and new events are accepted again.
        rows = gw.wait_rows(len(acked) + 1, timeout=60)
        counts = _seqs(rows)
        assert set(counts) == acked | {0}
        assert max(counts.values()) == 1
        deadline = time.monotonic() + 30
        while gw.post(json.loads(_event(99_999))).status_code != 202:
            assert time.monotonic() < deadline, "still refusing after the backlog drained"
            time.sleep(0.5)
    finally:
        gw.close()


# --------------------------------------------------------------------------- two nodes

FAKETIME_LIB = next(iter(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)


def _node_config(base: Path, ch: ClickHouseServer, redis: RedisServer, database: str) -> Path:
    cfg = write_config(base, sites={"site": 'domain = "site.test"\n[rate_limit]\nevents_per_minute = 30\nburst = 30\n'})
    text = cfg.read_text()
    text = re.sub(r"\[sink\][^\[]*", "", text)
    text += (f'[sink]\ntype = "clickhouse"\nurl = "{ch.url}"\ndatabase = "{database}"\n'
             'batch_size = 500\nflush_interval = 0.2\n'
             f'[shared]\ntype = "redis"\nurl = "{redis.url}"\nkey_prefix = "{database}:"\nsalt_refresh_seconds = 1\n')
    cfg.write_text(text)
    return cfg


@pytest.fixture
def two_nodes(tmp_path: Path, clickhouse_server: ClickHouseServer,
              redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway, str]]:
    if FAKETIME_LIB is None:
        unavailable("libfaketime (Debian package faketime) is missing")
    database = f"two_nodes_{os.getpid()}"
    clickhouse_server.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    # Both nodes run on a clock that reaches UTC midnight 14 s from now, so the daily salt
    # rotation happens during the test. The offset applies to every process alike.
    now = time.time()
    offset = int(86400 - now % 86400) - 14
    env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": f"+{offset}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "FAKETIME_DONT_RESET": "1", "TZ": "UTC"}
    a = Gateway(_node_config(tmp_path / "a", clickhouse_server, redis_server, database), env=env)
    b = Gateway(_node_config(tmp_path / "b", clickhouse_server, redis_server, database), env=env)
    a.start()
    b.start()
    try:
        yield a, b, database
    finally:
        a.close()
        b.close()


def test_two_nodes_share_visitor_ids_salt_rotation_and_rate_limits(
        two_nodes: tuple[Gateway, Gateway, str], clickhouse_server: ClickHouseServer,
        redis_server: RedisServer) -> None:
    a, b, database = two_nodes
    body = json.loads(_event(1))
    midnight_real = time.time() + (86400 - (time.time() + int(a.env["FAKETIME"][1:-1])) % 86400)
    assert midnight_real - time.time() > 3, "the nodes took too long to start"
    for node in (a, b):
        assert node.post({**body, "u": "https://site.test/before"}, ip="198.51.100.20", ua=CHROME).status_code == 202
    time.sleep(max(0.0, midnight_real - time.time()) + 1.5)
    for node in (a, b):
        assert node.post({**body, "u": "https://site.test/after"}, ip="198.51.100.20", ua=CHROME).status_code == 202

    # The rate limit (30 a minute for the site) holds across both nodes together.
    statuses: Counter[int] = Counter()
    for i in range(25):
        for node in (a, b):
            statuses[node.post({**body, "u": f"https://site.test/burst/{i}"}, ip=f"198.51.100.{i}",
                               ua=CHROME).status_code] += 1
    accepted_burst = statuses[202]
    assert set(statuses) <= {202, 429}
    # One bucket for both nodes: at most its 30 tokens (plus a refill during the burst), where
    # two separate buckets would have let all 50 through.
    assert accepted_burst <= 31 and statuses[429] >= 19, statuses

    a.stop()
    b.stop()
    out = clickhouse_server.query(
        f"SELECT pathname, toString(user_id), toDate(timestamp) FROM {database}.events FINAL "
        "WHERE pathname IN ('/before', '/after') ORDER BY pathname FORMAT TabSeparated").decode()
    rows = [line.split("\t") for line in out.strip().splitlines()]
    ids = {p: {uid for path, uid, _ in rows if path == p} for p in ("/before", "/after")}
    assert all(len(v) == 1 for v in ids.values()), rows  # same visitor, same id on both nodes
    assert ids["/before"] != ids["/after"], "the salt did not rotate at midnight"
    days = {p: {d for path, _, d in rows if path == p} for p in ("/before", "/after")}
    assert len(days["/before"] | days["/after"]) == 2
    total = clickhouse_server.query(
        f"SELECT count() FROM {database}.events FINAL WHERE pathname LIKE '/burst/%'").decode().strip()
    assert int(total) == accepted_burst
    # Only today's and yesterday's salts exist in Redis.
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_server.url)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{database}:*salt*"))
    client.close()
    assert 1 <= len(keys) <= 2, keys
