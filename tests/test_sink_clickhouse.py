"""The ClickHouse sink against a real server (Debian's clickhouse-server on loopback)."""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import servers
from gatewayproc import Gateway, write_config
from servers import ClickHouseServer, clickhouse_command, missing

from gateway.ingest.server_events import stored_event_id
from gateway.schema import COLUMNS
from gateway.store.clickhouse import (
    ClickHouseError,
    ClickHouseSink,
    _create_table_sql,
    _sessions_sql,
    column_types,
    encode_rowbinary,
)
from gateway.store.sqlite import SQLiteSink

clickhouse_server = servers.clickhouse_server  # the module-scoped server fixture from tests/servers.py

_n = 0


def row(**fields: Any) -> tuple[Any, ...]:
    """A stored row with sensible defaults; keyword names are column names (meta_key for meta.key)."""
    global _n
    _n += 1
    values: dict[str, Any] = {
        "event_id": f"{_n:032x}", "timestamp": "2026-11-23 10:00:00", "name": "pageview",
        "domain": "site.test", "user_id": 1, "hostname": "site.test", "pathname": "/",
        "referrer": "", "referrer_source": "", "click_id_param": "", "utm_medium": "",
        "utm_source": "", "utm_campaign": "", "utm_content": "", "utm_term": "",
        "country_code": "", "subdivision1_code": "", "subdivision2_code": "", "city_geoname_id": 0,
        "screen_size": "", "operating_system": "", "operating_system_version": "", "browser": "",
        "browser_version": "", "meta.key": "[]", "meta.value": "[]", "scroll_depth": 0,
        "engagement_time": 0, "interactive": 1, "revenue_source_amount": None,
        "revenue_source_currency": "", "tracker_version": 3,
    }
    for k, v in fields.items():
        values[k.replace("meta_", "meta.")] = v
    assert set(values) == set(COLUMNS)
    return tuple(values[c] for c in COLUMNS)


@pytest.fixture
def sink(clickhouse_server: ClickHouseServer, request: pytest.FixtureRequest) -> Iterator[ClickHouseSink]:
    """A sink on its own database (named after the test), schema created."""
    db = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]
    s = ClickHouseSink(clickhouse_server.url, database=db, user="gateway", password=clickhouse_server.password)
    s.ensure_schema()
    yield s
    s.close()


def q(server: ClickHouseServer, sql: str) -> list[dict[str, Any]]:
    data = server.query(f"{sql} FORMAT JSONEachRow")
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def test_schema_is_created_on_an_empty_server_and_creating_it_again_changes_nothing(
        clickhouse_server: ClickHouseServer) -> None:
    s = ClickHouseSink(clickhouse_server.url, database="fresh")
    assert not s.ping()  # no database, no table yet
    s.ensure_schema()
    s.ensure_schema()
    assert s.ping()
    tables = {r["name"]: r for r in q(clickhouse_server,
              "SELECT name, engine, create_table_query FROM system.tables WHERE database = 'fresh'")}
    assert tables["events"]["engine"] == "ReplacingMergeTree"
    assert tables["sessions"]["engine"] == "View"
    ddl = tables["events"]["create_table_query"]
    assert "PARTITION BY toYYYYMM(timestamp)" in ddl
    assert "ORDER BY (domain, toDate(timestamp), name, user_id, timestamp, event_id)" in ddl
    cols = [(r["name"], r["type"]) for r in q(clickhouse_server, "DESCRIBE TABLE fresh.events")]
    assert cols == list(column_types())
    s.close()


def test_every_column_type_round_trips(clickhouse_server: ClickHouseServer, sink: ClickHouseSink) -> None:
    long_path = "/" + "é" * 200 + "x" * 20000  # multi-byte varint lengths (> 127 and > 16383 bytes)
    rows = [
        row(event_id="e1", timestamp="2026-11-23 10:00:00", name="Signup ✓", user_id=-(1 << 63),
            pathname="/日本語/ページ", referrer="https://例え.jp/?q=ü", referrer_source="Google",
            click_id_param="gclid", utm_medium="cpc", utm_source="news", utm_campaign="w🎉",
            utm_content="c", utm_term="t", country_code="FR", subdivision1_code="FR-IDF",
            subdivision2_code="FR-75", city_geoname_id=4294967295, screen_size="Desktop",
            operating_system="Mac", operating_system_version="14.1", browser="Safari",
            browser_version="17.0", meta_key='["plan","emoji 🙂",""]', meta_value='["pro","✓",""]',
            scroll_depth=255, engagement_time=4294967295, interactive=0,
            revenue_source_amount="12.345", revenue_source_currency="EUR", tracker_version=65535),
        row(event_id="e2", user_id=(1 << 63) - 1, pathname=long_path, country_code="",
            revenue_source_amount=None, meta_key="[]", meta_value="[]", tracker_version=0),
        row(event_id="e3", user_id=0, hostname="", pathname="", name="", domain="site.test"),
    ]
    sink.write(rows)
    got = {r["event_id"]: r for r in q(clickhouse_server,
           "SELECT *, toString(user_id) AS uid, hex(country_code) AS cc_hex, toUInt32(timestamp) AS epoch "
           f"FROM {sink.database}.events FINAL")}
    assert set(got) == {"e1", "e2", "e3"}
    e1 = got["e1"]
    assert e1["timestamp"] == "2026-11-23 10:00:00" and e1["epoch"] == 1795428000
    assert e1["name"] == "Signup ✓" and e1["pathname"] == "/日本語/ページ"
    assert e1["referrer"] == "https://例え.jp/?q=ü" and e1["utm_campaign"] == "w🎉"
    assert e1["uid"] == str(-(1 << 63))
    assert e1["country_code"] == "FR" and e1["subdivision2_code"] == "FR-75"
    assert int(e1["city_geoname_id"]) == 4294967295 and int(e1["engagement_time"]) == 4294967295
    assert e1["meta.key"] == ["plan", "emoji 🙂", ""] and e1["meta.value"] == ["pro", "✓", ""]
    assert (e1["scroll_depth"], e1["interactive"], e1["tracker_version"]) == (255, 0, 65535)
    assert e1["revenue_source_amount"] == "12.345" and e1["revenue_source_currency"] == "EUR"
    assert e1["operating_system_version"] == "14.1" and e1["browser_version"] == "17.0"
    e2 = got["e2"]
    assert e2["uid"] == str((1 << 63) - 1)
    assert e2["pathname"] == long_path
    assert e2["cc_hex"] == "0000"  # unknown country: two NUL bytes, as Plausible stores it
    assert e2["revenue_source_amount"] is None
    assert e2["meta.key"] == [] and e2["meta.value"] == []
    e3 = got["e3"]
    assert (e3["name"], e3["hostname"], e3["pathname"], e3["uid"]) == ("", "", "", "0")


def test_the_same_batch_written_twice_counts_each_event_once(
        clickhouse_server: ClickHouseServer, sink: ClickHouseSink) -> None:
    batch = [row(event_id=f"dup{i}", user_id=7, timestamp=f"2026-11-23 10:{i:02d}:00") for i in range(50)]
    sink.write(batch)
    sink.write(batch)  # a replay after an unknown outcome
    sink.write(batch[10:20])  # and a replay cut differently
    db = sink.database
    (r,) = q(clickhouse_server, f"SELECT count() AS n, uniqExact(event_id) AS u FROM {db}.events FINAL")
    assert int(r["n"]) == 50 and int(r["u"]) == 50
    (s,) = q(clickhouse_server, f"SELECT sum(pageviews) AS pv, count() AS visits FROM {db}.sessions")
    assert int(s["pv"]) == 50 and int(s["visits"]) == 1
    # Merging removes the extra copies for good, which is what FINAL anticipates.
    clickhouse_server.query(f"OPTIMIZE TABLE {db}.events FINAL")
    (r,) = q(clickhouse_server, f"SELECT count() AS n FROM {db}.events")
    assert int(r["n"]) == 50


VISIT_EVENTS = [
    # user 1, visit 1: two pageviews and an interactive custom event -> not a bounce
    {"user_id": 1, "timestamp": "2026-11-23 10:00:00", "name": "pageview", "pathname": "/a"},
    {"user_id": 1, "timestamp": "2026-11-23 10:01:00", "name": "Signup", "pathname": "/a", "interactive": 1},
    {"user_id": 1, "timestamp": "2026-11-23 10:02:00", "name": "engagement", "pathname": "/a"},
    {"user_id": 1, "timestamp": "2026-11-23 10:05:00", "name": "pageview", "pathname": "/b"},
    # user 1, visit 2: 31 minutes later, one pageview -> a bounce of duration 0
    {"user_id": 1, "timestamp": "2026-11-23 10:36:01", "name": "pageview", "pathname": "/c"},
    # user 1, still visit 2: exactly 30 minutes is not a gap
    {"user_id": 1, "timestamp": "2026-11-23 11:06:01", "name": "engagement", "pathname": "/c"},
    # user 2: a pageview and a non-interactive custom event -> bounce
    {"user_id": 2, "timestamp": "2026-11-23 12:00:00", "name": "pageview", "pathname": "/x"},
    {"user_id": 2, "timestamp": "2026-11-23 12:00:30", "name": "Scrolled", "pathname": "/x", "interactive": 0},
    # user 3 on another site, same second twice: order by event_id decides entry/exit
    {"user_id": 3, "domain": "other.test", "timestamp": "2026-11-23 09:00:00", "name": "pageview",
         "pathname": "/first", "event_id": "aaa"},
    {"user_id": 3, "domain": "other.test", "timestamp": "2026-11-23 09:00:00", "name": "pageview",
         "pathname": "/second", "event_id": "bbb"},
    # user 4: only a custom event, no pageview
    {"user_id": 4, "timestamp": "2026-11-23 13:00:00", "name": "Download", "pathname": "/d", "interactive": 1},
]

EXPECTED_VISITS = [
    # domain, user, visit, start, end, duration, entry, exit, pageviews, events, bounce
    ("other.test", 3, 1, "2026-11-23 09:00:00", "2026-11-23 09:00:00", 0, "/first", "/second", 2, 2, 0),
    ("site.test", 1, 1, "2026-11-23 10:00:00", "2026-11-23 10:05:00", 300, "/a", "/b", 2, 3, 0),
    ("site.test", 1, 2, "2026-11-23 10:36:01", "2026-11-23 11:06:01", 1800, "/c", "/c", 1, 1, 1),
    ("site.test", 2, 1, "2026-11-23 12:00:00", "2026-11-23 12:00:30", 30, "/x", "/x", 1, 2, 1),
    ("site.test", 4, 1, "2026-11-23 13:00:00", "2026-11-23 13:00:00", 0, "", "", 0, 1, 0),
]


def test_sessions_view_derives_visits_like_the_sqlite_view(
        clickhouse_server: ClickHouseServer, sink: ClickHouseSink, tmp_path: Path) -> None:
    rows = [row(**e) for e in VISIT_EVENTS]
    sink.write(rows)
    sink.write(rows[:3])  # a replay must not change any visit
    got = [
        (r["domain"], int(r["user_id"]), int(r["visit"]), r["start"], r["end"], int(r["duration"]),
         r["entry_page"], r["exit_page"], int(r["pageviews"]), int(r["events"]), int(r["is_bounce"]))
        for r in q(clickhouse_server, f"SELECT * FROM {sink.database}.sessions ORDER BY domain, user_id, visit")
    ]
    assert got == EXPECTED_VISITS
    (day,) = q(clickhouse_server, f"SELECT DISTINCT toString(day) AS d FROM {sink.database}.sessions")
    assert day["d"] == "2026-11-23"

    lite = SQLiteSink(tmp_path / "events.sqlite3")
    lite.write(rows)
    conn = lite._conn
    sqlite_visits = [
        (d, u, v, s, e, dur, ep or "", xp or "", pv, ev, b)
        for d, u, v, s, e, dur, ep, xp, pv, ev, b in conn.execute(
            "SELECT domain, user_id, visit, start, end, duration, entry_page, exit_page, pageviews, events,"
            " is_bounce FROM sessions ORDER BY domain, user_id, visit")
    ]
    lite.close()
    assert sqlite_visits == EXPECTED_VISITS


def test_wrong_password_is_an_error_and_ping_is_false(clickhouse_server: ClickHouseServer) -> None:
    s = ClickHouseSink(clickhouse_server.url, database="default", user="gateway", password="nope")
    assert s.ping() is False
    with pytest.raises(ClickHouseError) as exc:
        s.write([row()])
    assert exc.value.code in (192, 193, 516)  # 18.16: wrong password; current: authentication failed
    s.close()


def test_an_idle_connection_closed_by_the_server_is_replaced(sink: ClickHouseSink,
                                                             clickhouse_server: ClickHouseServer) -> None:
    sink.write([row(event_id="before-idle")])
    time.sleep(3.5)  # the test server's keep_alive_timeout is 3 s
    sink.write([row(event_id="after-idle")])
    (r,) = q(clickhouse_server, f"SELECT count() AS n FROM {sink.database}.events FINAL")
    assert int(r["n"]) == 2


def test_ensure_schema_adds_columns_a_newer_gateway_writes(clickhouse_server: ClickHouseServer) -> None:
    clickhouse_server.query("CREATE DATABASE IF NOT EXISTS older")
    ddl = _create_table_sql("older", "events", block_dedup=False)
    ddl = ddl.replace(",\n  `tracker_version` UInt16", "").replace(",\n  `revenue_source_currency` String", "")
    clickhouse_server.query(ddl)
    s = ClickHouseSink(clickhouse_server.url, database="older")
    s.ensure_schema()
    s.write([row(event_id="new-cols", tracker_version=9, revenue_source_currency="USD")])
    (r,) = q(clickhouse_server, "SELECT tracker_version, revenue_source_currency FROM older.events")
    assert (r["tracker_version"], r["revenue_source_currency"]) == (9, "USD")
    s.close()


def test_ensure_schema_refuses_a_column_whose_type_changes_the_binary_layout(
        clickhouse_server: ClickHouseServer) -> None:
    clickhouse_server.query("CREATE DATABASE IF NOT EXISTS clash")
    ddl = _create_table_sql("clash", "events", block_dedup=False).replace(
        "`scroll_depth` UInt8", "`scroll_depth` UInt32")
    clickhouse_server.query(ddl)
    s = ClickHouseSink(clickhouse_server.url, database="clash")
    with pytest.raises(ClickHouseError, match="scroll_depth is UInt32"):
        s.ensure_schema()
    s.close()


def test_stored_times_and_days_are_utc_whatever_the_server_time_zone() -> None:
    if clickhouse_command() is None:
        missing("clickhouse-server", "ClickHouse server")
    base = Path(tempfile.mkdtemp(prefix="gw-ch-tz-"))
    try:
        with ClickHouseServer(base, timezone="Asia/Tokyo").start() as server:
            s = ClickHouseSink(server.url, database="tz")
            s.ensure_schema()
            s.write([row(event_id="late", timestamp="2026-11-23 20:00:00", user_id=5)])
            (r,) = q(server, "SELECT toString(timestamp) AS t, toUInt32(timestamp) AS e FROM tz.events")
            assert r == {"t": "2026-11-23 20:00:00", "e": 1795464000}
            (v,) = q(server, "SELECT toString(day) AS d, toString(start) AS s FROM tz.sessions")
            assert v == {"d": "2026-11-23", "s": "2026-11-23 20:00:00"}  # Tokyo is already on the 24th
            s.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_server_down_write_raises_and_ping_is_false_then_writes_resume_when_it_is_back() -> None:
    if clickhouse_command() is None:
        missing("clickhouse-server", "ClickHouse server")
    base = Path(tempfile.mkdtemp(prefix="gw-ch-down-"))
    try:
        server = ClickHouseServer(base).start()
        s = ClickHouseSink(server.url, database="down", timeout=5)
        s.ensure_schema()
        s.write([row(event_id="before")])
        server.stop()
        assert s.ping() is False
        with pytest.raises(ClickHouseError):
            s.write([row(event_id="during")])
        server.start()
        assert s.ping() is True
        s.write([row(event_id="during")])  # the caller's retry of the failed batch
        (r,) = q(server, "SELECT groupArray(event_id) AS ids FROM (SELECT event_id FROM down.events FINAL"
                         " ORDER BY event_id)")
        assert r["ids"] == ["before", "during"]
        s.close()
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- encoder details that need no server ---------------------------------------------------

def test_rowbinary_lengths_are_varints_and_fixed_strings_are_padded_or_cut() -> None:
    types = ["String", "FixedString(2)", "FixedString(2)", "Nullable(String)", "Nullable(String)"]
    data = encode_rowbinary([("x" * 300, "F", "FRA", None, "")], types)
    assert data == b"\xac\x02" + b"x" * 300 + b"F\0" + b"FR" + b"\x01" + b"\x00\x00"


def test_rowbinary_clamps_numbers_instead_of_failing_the_batch() -> None:
    data = encode_rowbinary([(300, -1, 70000, None)], ["UInt8", "UInt32", "UInt16", "UInt8"])
    assert data == b"\xff" + b"\0\0\0\0" + b"\xff\xff" + b"\0"


def test_rowbinary_props_from_json_text_or_lists() -> None:
    types = ["Array(String)"] * 3
    data = encode_rowbinary([('["a","é"]', ["b"], "not json")], types)
    assert data == b"\x02\x01a\x02\xc3\xa9" + b"\x01\x01b" + b"\x01\x08not json"


def test_rowbinary_datetime_is_the_utc_epoch() -> None:
    types = ["DateTime", "DateTime"]
    data = encode_rowbinary([("1970-01-01 00:00:01", "2026-11-23 10:00:00")], types)
    assert data == (1).to_bytes(4, "little") + (1795428000).to_bytes(4, "little")


def test_schema_view_and_encoding_on_current_clickhouse_in_process(tmp_path: Path) -> None:
    """Current ClickHouse (chDB, a test dependency) accepts the same DDL, view and RowBinary."""
    import chdb.session

    sess = chdb.session.Session(str(tmp_path / "chdb"))
    sess.query("CREATE DATABASE gw")
    sess.query(_create_table_sql("gw", "events", block_dedup=True))
    sess.query(_sessions_sql("gw", "events", "sessions"))
    rows = [row(**e) for e in VISIT_EVENTS]
    blob = tmp_path / "rows.bin"
    blob.write_bytes(encode_rowbinary(rows))
    structure = ", ".join(f"`{n}` {t}" for n, t in column_types()).replace("'", "\\'")
    cols = ", ".join(f"`{c}`" for c in COLUMNS)
    for _ in range(2):
        sess.query(f"INSERT INTO gw.events ({cols}) SELECT * FROM file('{blob}', 'RowBinary', '{structure}')")
    out = sess.query("SELECT domain, user_id, visit, toString(start), toString(`end`), duration, entry_page,"
                     " exit_page, pageviews, events, is_bounce FROM gw.sessions"
                     " ORDER BY domain, user_id, visit", "TSV")
    got = [tuple(int(x) if x.lstrip("-").isdigit() else x for x in line.split("\t"))
           for line in str(out).splitlines() if line]
    assert got == EXPECTED_VISITS


def test_config_builds_the_sink_and_names_the_bad_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway.config import parse_sink
    from gateway.errors import ConfigError
    from gateway.store.clickhouse import open_clickhouse_sink

    monkeypatch.setenv("GW_TEST_CH_PASSWORD", "s3cret")
    cfg = parse_sink({"type": "clickhouse", "url": "http://127.0.0.1:8123/", "database": "analytics",
                      "table": "ev", "user": "gateway", "password_env": "GW_TEST_CH_PASSWORD",
                      "timeout": 5, "create_schema": False}, "gateway.toml", tmp_path)
    s = open_clickhouse_sink(cfg)
    assert (s.database, s.table, s.timeout, s.create_schema) == ("analytics", "ev", 5.0, False)
    assert s._headers["X-ClickHouse-Key"] == "s3cret"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "127.0.0.1:8123"}, "sink.url"),
        ({"database": "a-b"}, "sink.database"),
        ({"table": "1x"}, "sink.table"),
        ({"timeout": 0}, "sink.timeout"),
        ({"create_schema": "yes"}, "sink.create_schema"),
        ({"password_env": "GW_TEST_UNSET_VARIABLE"}, "sink.password_env"),
        ({"pasword": "x"}, "sink.pasword"),
    ]
    for change, key in bad:
        fields = {"type": "clickhouse", "url": "http://127.0.0.1:8123/", "database": "default", **change}
        with pytest.raises(ConfigError) as exc:
            parse_sink(fields, "gateway.toml", tmp_path)
        assert exc.value.key == key, change


# --- the console's tables: drop records and per-minute counts ---------------------------------

def _console_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from gateway.schema import DropRecord, MinuteCount

    drops = [tuple(DropRecord(f"{i:032x}", f"2026-11-23 10:0{i % 3}:0{i}", "site.test", reason, evidence,
                              "detail", "pageview", "site.test", f"/p{i % 2}", "ref.example" if i % 2 else "",
                              "DE" if i < 3 else "", "Chrome", "Desktop"))
             for i, (reason, evidence) in enumerate([("bot", "user_agent"), ("bot", "user_agent"), ("dc_ip", "hosting_asn"),
                                                     ("site_page_blocklist", ""), ("spoofed_agent", "no_sec_fetch")])]
    counts = [tuple(MinuteCount(f"c{i}", minute, "site.test", outcome, reason, n)) for i, (minute, outcome, reason, n) in
              enumerate([("2026-11-23 10:00:00", "accepted", "", 7), ("2026-11-23 10:00:00", "accepted", "", 3),
                         ("2026-11-23 10:01:00", "dropped", "bot", 2), ("2026-11-23 11:05:00", "would_drop", "dc_ip", 1),
                         ("2026-11-22 23:59:00", "dropped", "bot", 5)])]
    events = [row(event_id=f"{i:032x}", timestamp=f"2026-11-23 10:00:0{i}", name="Signup" if i % 2 else "pageview",
                  pathname=f"/e{i}", country_code="FR" if i else "", meta_key='["plan"]', meta_value=f'["p{i}"]',
                  revenue_source_amount="9.99" if i == 3 else None, revenue_source_currency="EUR" if i == 3 else "")
              for i in range(5)]
    return drops, counts, events


def _read_all(reader: Any) -> dict[str, Any]:
    day = ("2026-11-23 00:00:00", "2026-11-24 00:00:00")
    return {
        "summary": {i: reader.summary("site.test", day[0], day[1], i) for i in ("minute", "hour", "day")},
        "drops": reader.drops("site.test", reason=None, evidence=None, limit=50, before=None),
        "bots": reader.drops("site.test", reason="bot", evidence="user_agent", limit=1, before=f"{1:032x}"),
        "top": {f: reader.top("site.test", *day, f) for f in ("pages", "referrers", "countries", "evidence")},
        "events": reader.events("site.test", name=None, limit=3, before=None),
        "signups": reader.events("site.test", name="Signup", limit=50, before=("2026-11-23 10:00:03", f"{3:032x}")),
        "groups": reader.event_groups("site.test", "2026-11-23 00:00:00"),
        "other": reader.drops("other.test", reason=None, evidence=None, limit=50, before=None),
    }


def test_console_tables_have_one_schema_and_read_back_the_same_from_sqlite_and_clickhouse(
        sink: ClickHouseSink, tmp_path: Path) -> None:
    from gateway.store.queries import ClickHouseReader, SQLiteReader

    drops, counts, events = _console_rows()
    lite = SQLiteSink(tmp_path / "e.sqlite3")
    for s in (lite, sink):
        s.write(events)
        s.write_table("drops", drops)
        s.write_table("counts", counts)
        s.write_table("counts", counts[:2])  # a replayed segment: the same rows again count once
    ch = ClickHouseReader(ClickHouseSink(sink.url, database=sink.database, user="gateway",
                                         password=sink._headers["X-ClickHouse-Key"]))
    from_sqlite, from_clickhouse = _read_all(SQLiteReader(tmp_path / "e.sqlite3")), _read_all(ch)
    assert from_sqlite == from_clickhouse
    assert [b.events for b in from_sqlite["summary"]["day"]] == [10, 2, 1]
    assert [(b.start, b.outcome) for b in from_sqlite["summary"]["hour"]] == [
        ("2026-11-23 10:00:00", "accepted"), ("2026-11-23 10:00:00", "dropped"), ("2026-11-23 11:00:00", "would_drop")]
    assert [d["drop_id"] for d in from_sqlite["bots"]] == [f"{0:032x}"]
    assert from_sqlite["top"]["countries"] == [("DE", 3), ("", 2)]
    assert [e.pathname for e in from_sqlite["signups"]] == ["/e1"]
    assert from_sqlite["events"][0].pathname == "/e4" and from_sqlite["other"] == []
    lite.close()


def test_console_tables_expire_after_their_retention_in_both_sinks(sink: ClickHouseSink, tmp_path: Path) -> None:
    from gateway.store.spool import SegmentShipper

    drops, counts, _ = _console_rows()
    lite = SQLiteSink(tmp_path / "e.sqlite3")
    for s in (lite, sink):
        s.write_table("drops", drops)
        s.write_table("counts", counts)
        fresh = time.strftime("%Y-%m-%d %H:%M:00", time.gmtime())
        s.write_table("counts", [("fresh", fresh, "site.test", "accepted", "", 1)])
        shipper = SegmentShipper(tmp_path / f"spool-{type(s).__name__}", s, retention_days={"drops": 7, "counts": 7})
        (tmp_path / f"spool-{type(s).__name__}").mkdir()
        shipper.ship_ready()
    conn = sqlite3.connect(tmp_path / "e.sqlite3")
    assert conn.execute("SELECT count(*) FROM drops").fetchone() == (0,)
    assert conn.execute("SELECT count_id FROM counts").fetchall() == [("fresh",)]
    assert int(q_rows(sink, "SELECT count() AS n FROM drops")[0]["n"]) == 0  # UInt64 is text on 18.16
    assert [r["count_id"] for r in q_rows(sink, "SELECT count_id FROM counts")] == ["fresh"]


def q_rows(sink: ClickHouseSink, sql: str) -> list[dict[str, Any]]:
    return sink.query_rows(sql.replace("FROM ", f"FROM {sink.database}."))


def _raw(server: ClickHouseServer, sink: ClickHouseSink) -> list[tuple[str, str, int]]:
    """Every stored copy (no FINAL: what is on disk, before or after any merge)."""
    return sorted((r["event_id"], r["timestamp"], int(r["user_id"])) for r in q(
        server, f"SELECT event_id, toString(timestamp) AS timestamp, user_id FROM {sink.database}.events"))


def test_a_senders_event_retried_later_by_another_visitor_is_written_once(
        clickhouse_server: ClickHouseServer, sink: ClickHouseSink) -> None:
    sent = stored_event_id("site.test", "order-1")
    sink.write([row(event_id=sent, timestamp="2026-11-23 23:59:58", user_id=11, name="Order")])
    # The retry arrived seconds later, after UTC midnight: another time, another daily visitor id.
    sink.write([row(event_id=sent, timestamp="2026-11-24 00:00:03", user_id=12, name="Order"),
                row(event_id=stored_event_id("site.test", "order-2"), timestamp="2026-11-24 00:00:03",
                    user_id=12, name="Order")])
    assert _raw(clickhouse_server, sink) == sorted([(sent, "2026-11-23 23:59:58", 11),
                                                    (stored_event_id("site.test", "order-2"), "2026-11-24 00:00:03", 12)])


def test_repeats_within_one_batch_are_written_once_beside_the_gateways_own_ids(
        clickhouse_server: ClickHouseServer, sink: ClickHouseSink) -> None:
    sent = stored_event_id("site.test", "order-3")
    own = [row(user_id=3), row(user_id=3)]
    sink.write([row(event_id=sent, timestamp="2026-11-23 10:00:00", user_id=1), own[0],
                row(event_id=sent, timestamp="2026-11-23 10:00:02", user_id=2), own[1]])
    assert _raw(clickhouse_server, sink) == sorted([(r[0], "2026-11-23 10:00:00", 3) for r in own] + [
        (sent, "2026-11-23 10:00:00", 1)])


def test_a_retry_is_found_only_within_the_window_and_for_its_own_site(
        clickhouse_server: ClickHouseServer, sink: ClickHouseSink) -> None:
    sink.retry_window = 3600
    sent = stored_event_id("site.test", "order-4")
    sink.write([row(event_id=sent, timestamp="2026-11-23 10:00:00")])
    sink.write([row(event_id=sent, timestamp="2026-11-23 10:59:00", user_id=2)])  # within the hour
    sink.write([row(event_id=sent, timestamp="2026-11-23 09:58:00", user_id=3)])  # another node's clock, behind
    assert len(_raw(clickhouse_server, sink)) == 1
    sink.write([row(event_id=sent, timestamp="2026-11-23 11:00:01", user_id=4)])  # past the window: a new event
    sink.write([row(event_id=sent, domain="other.test", user_id=5)])  # the id is per site: another site's
    assert sorted(u for _, _, u in _raw(clickhouse_server, sink)) == [1, 4, 5]


def test_a_sink_opened_from_the_config_finds_retries_within_server_api_max_age(tmp_path: Path) -> None:
    from gateway.config import load_gateway_config
    from gateway.store.sinks import open_sink

    cfg = tmp_path / "gw.toml"
    cfg.write_text('[sink]\ntype = "clickhouse"\nurl = "http://127.0.0.1:8123/"\n[server_api]\nmax_age = "36h"\n')
    sink = open_sink(load_gateway_config(cfg))
    assert isinstance(sink, ClickHouseSink) and sink.retry_window == 36 * 3600


# --- a running gateway on ClickHouse, read back through the console API -------------------------

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def _until(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)
    return value


def test_a_gateway_on_clickhouse_answers_the_console_api_from_what_it_stored(
        clickhouse_server: ClickHouseServer, tmp_path: Path) -> None:
    database = "console_e2e"
    cfg = write_config(tmp_path / "gw", sites={
        "shop": 'domain = "shop.test"\n[shields]\npage_blocklist = ["/admin/*"]\n',
        "other": 'domain = "other.test"\n'})
    cfg.write_text(re.sub(r"\[sink\][^\[]*", "", cfg.read_text()) + (
        f'[sink]\ntype = "clickhouse"\nurl = "{clickhouse_server.url}"\ndatabase = "{database}"\n'
        f'user = "gateway"\npassword = "{clickhouse_server.password}"\nbatch_size = 500\nflush_interval = 0.2\n'))
    gw = Gateway(cfg).start()
    try:
        read = gw.key("shop.test", "read")
        for i in range(3):
            body = {"n": "Signup" if i == 2 else "pageview", "u": f"https://shop.test/p{i}", "d": "shop.test",
                    "p": {"plan": f"plan{i}"}}
            assert gw.post(body, ip=f"203.0.113.{i + 1}", ua=CHROME).json() == {"accepted": 1}
        assert gw.post({"n": "pageview", "u": "https://shop.test/admin/users", "d": "shop.test"},
                       ip="203.0.113.9", ua=CHROME).json() == {"accepted": 0, "dropped": 1}
        assert gw.post({"n": "pageview", "u": "https://shop.test/b", "d": "shop.test", "r": "https://news.example/x"},
                       ip="203.0.113.10", ua="curl/8.5.0").json() == {"accepted": 0, "dropped": 1}
        assert gw.post({"n": "pageview", "u": "https://other.test/o", "d": "other.test"},
                       ip="203.0.113.11", ua="curl/8.5.0").json() == {"accepted": 0, "dropped": 1}

        def summary() -> dict[str, Any]:
            r = gw.api("GET", "/api/v1/sites/shop.test/summary", read, params={"interval": "minute"})
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        totals = _until(lambda: (t := summary()["totals"])["accepted"] == 3 and sum(t["dropped"].values()) == 2 and t)
        assert totals["dropped"] == {"site_page_blocklist": 1, "bot": 1}
        drops = _until(lambda: len(d := gw.api("GET", "/api/v1/sites/shop.test/drops", read).json()["drops"]) == 2 and d)
        assert [d["pathname"] for d in drops] == ["/b", "/admin/users"]  # newest first
        assert drops[0]["reason"] == "bot" and drops[0]["referrer_host"] == "news.example" and drops[0]["evidence"]
        assert drops[1]["reason"] == "site_page_blocklist" and drops[1]["hostname"] == "shop.test"
        bots = gw.api("GET", "/api/v1/sites/shop.test/drops", read, params={"reason": "bot"}).json()["drops"]
        assert [d["pathname"] for d in bots] == ["/b"]
        events = _until(lambda: len(e := gw.api("GET", "/api/v1/sites/shop.test/events", read).json()["events"]) == 3 and e)
        assert sorted(e["pathname"] for e in events) == ["/p0", "/p1", "/p2"]
        assert [e["timestamp"] for e in events] == sorted((e["timestamp"] for e in events), reverse=True)
        signups = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"name": "Signup"}).json()["events"]
        assert [(e["page"], e["props"]) for e in signups] == [("https://shop.test/p2", {"plan": "plan2"})]
        page = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"limit": 2}).json()
        rest = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"limit": 2, "before": page["next"]}).json()
        assert len({e["id"] for e in page["events"] + rest["events"]}) == 3 and rest["next"] is None
        # It was ClickHouse that answered: nothing went to a SQLite file, and its tables hold the rows,
        # without an address or a User-Agent.
        assert not gw.sqlite_path.exists()
        stored = q(clickhouse_server, f"SELECT domain, pathname, reason, detail, browser FROM {database}.drops")
        assert sorted(r["pathname"] for r in stored) == ["/admin/users", "/b", "/o"]
        assert "203.0.113." not in str(stored) and "curl/8.5.0" not in str(stored) and CHROME not in str(stored)
        assert int(q(clickhouse_server, f"SELECT count() AS n FROM {database}.events FINAL")[0]["n"]) == 3
    finally:
        gw.close()
