"""The site console API against the real server and its real SQLite sink: drop records and
counts written through the spool, summaries, the drops and events lists, shield rules read,
validated, written, reloaded and rolled back, and dry runs."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gatewayproc import FAKETIME_LIB, Gateway, faketime_env, write_config
from prerequisites import unavailable

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
BOT = "curl/8.5.0"
SHOP = """# the shop's shields: edited by hand and through the console
domain = "shop.test"

[shields]
# never count the back office
page_blocklist = ["/admin/*"]
report_only = ["dc_ip"]
"""
SITES = {"shop": SHOP, "other": 'domain = "other.test"\n'}


def _event(path: str = "/", name: str = "pageview", domain: str = "shop.test", **extra: Any) -> dict[str, Any]:
    return {"n": name, "u": f"https://{domain}{path}", "d": domain, **extra}


def _wait(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@pytest.fixture
def shop(start_gateway: Callable[..., Gateway]) -> tuple[Gateway, str, str]:
    gw = start_gateway(sites=SITES)
    return gw, gw.key("shop.test", "manage"), gw.key("shop.test", "read")


def _summary(gw: Gateway, key: str, **params: Any) -> dict[str, Any]:
    r = gw.api("GET", "/api/v1/sites/shop.test/summary", key, params={"interval": "minute", **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_drops_leave_records_and_exact_counts_without_ip_or_user_agent(shop: tuple[Gateway, str, str]) -> None:
    gw, manage, _ = shop
    for i in range(3):
        assert gw.post(_event(f"/p{i}"), ip=f"203.0.113.{10 + i}", ua=CHROME).json() == {"accepted": 1}
    assert gw.post(_event("/admin/users"), ip="203.0.113.20", ua=CHROME).json()["dropped"] == 1
    assert gw.post(_event("/", r="https://news.example/story"), ip="203.0.113.21", ua=BOT).json()["dropped"] == 1
    # A browser User-Agent without what browsers send: spoofed_agent.
    assert gw.post(_event("/"), ip="203.0.113.22", ua=CHROME, browser=False).json()["dropped"] == 1
    body = _wait(lambda: (s := _summary(gw, manage))["totals"]["accepted"] == 3
                 and sum(s["totals"]["dropped"].values()) == 3 and s)
    assert body["totals"]["dropped"] == {"site_page_blocklist": 1, "bot": 1, "spoofed_agent": 1}
    drops = _wait(lambda: len(r := gw.api("GET", "/api/v1/sites/shop.test/drops", manage).json()["drops"]) == 3 and r)
    by_reason = {d["reason"]: d for d in drops}
    assert by_reason["site_page_blocklist"]["pathname"] == "/admin/users"
    assert by_reason["bot"]["referrer_host"] == "news.example" and by_reason["bot"]["evidence"]
    assert by_reason["spoofed_agent"]["evidence"]  # which header was missing
    assert [d["id"] for d in drops] == sorted((d["id"] for d in drops), reverse=True)  # newest first
    # The privacy invariant over everything the console stores.
    for table in ("drops", "counts", "events"):
        for row in gw.table_rows(table):
            text = " ".join(str(v) for v in row.values())
            assert "203.0.113." not in text and CHROME not in text and BOT not in text, (table, row)


def test_drop_records_are_capped_per_site_and_minute_across_workers_and_the_counts_stay_exact(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, workers=2, extra="[retention]\ndrop_records_per_minute = 5\n")
    key = gw.key("shop.test", "read")
    if time.time() % 60 > 35:  # keep the flood inside one UTC minute
        time.sleep(61 - time.time() % 60)
    minute = int(time.time()) // 60
    sent = 0
    # Until each worker has dropped more than the cap by itself (a cap per worker would then
    # store twice as many records), each event on a new connection so both workers get some.
    while min(gw.worker_dropped("shop.test", "bot").values(), default=0) <= 5 or len(gw.worker_dropped("shop.test", "bot")) < 2:
        assert sent < 400, gw.worker_dropped("shop.test", "bot")
        for _ in range(20):
            assert gw.post(_event(f"/x{sent}"), ip="203.0.113.9", ua=BOT, new_connection=True).status_code == 202
            sent += 1
        time.sleep(1.2)  # the workers' snapshots are published every second
    for i in range(7):  # another site's cap is its own
        gw.post(_event(f"/o{i}", domain="other.test"), ip="203.0.113.9", ua=BOT, new_connection=True)
    assert int(time.time()) // 60 == minute, "the flood crossed a minute: run again"
    counts = _wait(lambda: (s := _summary(gw, key))["totals"]["dropped"].get("bot") == sent and s)
    assert counts["totals"]["dropped"] == {"bot": sent}
    _wait(lambda: sum(r["events"] for r in gw.table_rows("counts") if r["domain"] == "other.test") == 7)
    time.sleep(0.5)
    drops = gw.api("GET", "/api/v1/sites/shop.test/drops", key).json()["drops"]
    assert len(drops) == 5
    assert sorted(r["domain"] for r in gw.table_rows("drops")) == ["other.test"] * 5 + ["shop.test"] * 5


def test_report_only_would_drops_are_counted_apart(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites={"shop": 'domain = "shop.test"\n[shields]\npage_blocklist = [{ value = "/beta/*", '
                                      'report_only = true }]\n'})
    key = gw.key("shop.test", "read")
    assert gw.post(_event("/beta/one"), ip="203.0.113.30", ua=CHROME).json() == {"accepted": 1}
    s = _wait(lambda: (s := _summary(gw, key))["totals"]["accepted"] == 1 and s["totals"]["would_drop"] and s)
    assert s["totals"]["would_drop"] == {"site_page_blocklist": 1} and s["totals"]["dropped"] == {}


def test_summary_buckets_cover_the_window_and_bad_parameters_name_the_field(shop: tuple[Gateway, str, str]) -> None:
    gw, _, read = shop
    now = int(time.time())
    s = _summary(gw, read, **{"from": now - 3600, "to": now, "interval": "minute"})
    assert 60 <= len(s["buckets"]) <= 61 and s["buckets"][0]["start"].endswith(":00Z")
    s = _summary(gw, read, **{"from": "2026-01-01", "to": "2026-01-03T00:00:00Z", "interval": "day"})
    assert [b["start"] for b in s["buckets"]] == ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]
    for params, field in (({"interval": "week"}, "interval"), ({"from": "yesterday"}, "from"),
                          ({"from": now, "to": now - 10}, "from"),
                          ({"from": now - 86400 * 30, "to": now, "interval": "minute"}, "interval")):
        r = gw.api("GET", "/api/v1/sites/shop.test/summary", read, params=params)
        assert r.status_code == 400 and field in r.json()["errors"], (params, r.text)


def test_drops_filter_and_page_and_limits_are_enforced(shop: tuple[Gateway, str, str]) -> None:
    gw, _, read = shop
    for i in range(7):
        gw.post(_event(f"/admin/{i}"), ip="203.0.113.40", ua=CHROME)
    gw.post(_event("/bot"), ip="203.0.113.41", ua=BOT)
    _wait(lambda: len(gw.api("GET", "/api/v1/sites/shop.test/drops", read).json()["drops"]) == 8)
    page = gw.api("GET", "/api/v1/sites/shop.test/drops", read, params={"reason": "site_page_blocklist", "limit": 3}).json()
    seen = [d["pathname"] for d in page["drops"]]
    while page["next"]:
        page = gw.api("GET", "/api/v1/sites/shop.test/drops", read,
                      params={"reason": "site_page_blocklist", "limit": 3, "before": page["next"]}).json()
        seen += [d["pathname"] for d in page["drops"]]
    assert sorted(seen) == [f"/admin/{i}" for i in range(7)] and len(set(seen)) == 7
    bots = gw.api("GET", "/api/v1/sites/shop.test/drops", read, params={"reason": "bot"}).json()["drops"]
    assert [d["pathname"] for d in bots] == ["/bot"]
    assert gw.api("GET", "/api/v1/sites/shop.test/drops", read, params={"limit": 201}).status_code == 400
    assert gw.api("GET", "/api/v1/sites/shop.test/drops", read, params={"reason": "nonsense"}).status_code == 400
    top = gw.api("GET", "/api/v1/sites/shop.test/top", read).json()
    assert top["evidence"] and {"value": "/bot", "records": 1} in top["pages"]


def test_drops_and_events_list_50_by_default_and_take_a_limit_up_to_200(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, extra="[retention]\ndrop_records_per_minute = 1000\n")
    read = gw.key("shop.test", "read")
    for b in range(3):
        kept = gw.post([_event(f"/k{b}-{i}") for i in range(70)], ip=f"203.0.113.{100 + b}", ua=CHROME)
        dropped = gw.post([_event(f"/admin/{b}-{i}") for i in range(70)], ip=f"203.0.113.{110 + b}", ua=CHROME)
        assert kept.json() == {"accepted": 70} and dropped.json() == {"accepted": 0, "dropped": 70}
    assert len(gw.wait_rows(210)) == 210
    _wait(lambda: len(gw.table_rows("drops")) == 210)
    for path, items in (("drops", "drops"), ("events", "events")):
        url = f"/api/v1/sites/shop.test/{path}"
        default = gw.api("GET", url, read).json()
        assert len(default[items]) == 50 and default["next"], path
        most = gw.api("GET", url, read, params={"limit": 200})
        assert most.status_code == 200 and len(most.json()[items]) == 200 and most.json()["next"], path
        assert most.json()[items][:50] == default[items]  # the same newest first
        rest = gw.api("GET", url, read, params={"limit": 200, "before": most.json()["next"]}).json()
        assert len(rest[items]) == 10 and rest["next"] is None, path
        for bad in (201, 0, "ten"):
            r = gw.api("GET", url, read, params={"limit": bad})
            assert r.status_code == 400 and list(r.json()["errors"]) == ["limit"], (path, bad)
            assert "from 1 to 200" in r.json()["errors"]["limit"][0]


def test_drop_records_are_kept_7_days_by_default(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)  # no [retention] table
    read = gw.key("shop.test", "read")
    dry = "/api/v1/sites/shop.test/shields/dry-run"
    assert gw.api("POST", dry, read, json={"shields": {}}).json()["days"] == 7  # looks back as far as records go
    assert gw.api("POST", dry, read, json={"shields": {}, "days": 7}).status_code == 200
    r = gw.api("POST", dry, read, json={"shields": {}, "days": 8})
    assert r.status_code == 400 and "kept 7 days" in r.json()["errors"]["days"][0]


def test_drop_records_older_than_drops_days_expire_in_a_running_gateway(tmp_path: Path) -> None:
    if FAKETIME_LIB is None:
        unavailable("libfaketime (Debian package faketime) is missing")
    cfg = write_config(tmp_path / "gw", sites=SITES)  # no [retention] table: records are kept 7 days
    # The same gateway run three times on one data dir: 8 days ago, 6 days ago and now, each
    # time dropping one bot event of its own.
    for days_ago, path in ((8, "/eight-days-ago"), (6, "/six-days-ago"), (0, "/today")):
        gw = Gateway(cfg, env=faketime_env(-days_ago * 86400) if days_ago else None)
        try:
            gw.start()
            assert gw.post(_event(path), ip="203.0.113.120", ua=BOT).json() == {"accepted": 0, "dropped": 1}
            _wait(lambda: path in {r["pathname"] for r in gw.table_rows("drops")})
            if days_ago:
                continue
            read = gw.key("shop.test", "read")
            # The running gateway's shipper expires the console tables when it starts shipping
            # (then hourly): the record of 8 days ago goes, the one of 6 days ago stays.
            records = _wait(lambda: len(r := gw.api("GET", "/api/v1/sites/shop.test/drops", read).json()["drops"]) == 2 and r)
            assert [d["pathname"] for d in records] == ["/today", "/six-days-ago"]
            assert {r["pathname"] for r in gw.table_rows("drops")} == {"/today", "/six-days-ago"}
            # The per-minute counts are kept 400 days: the event of 8 days ago is still counted.
            since = int(time.time()) - 9 * 86400
            _wait(lambda: _summary(gw, read, **{"from": since, "interval": "day"})["totals"]["dropped"] == {"bot": 3})
        finally:
            gw.close()


def test_events_list_newest_first_with_props_and_paging(shop: tuple[Gateway, str, str]) -> None:
    gw, _, read = shop
    for i in range(5):
        gw.post(_event(f"/a{i}", name="Signup" if i % 2 else "pageview", p={"plan": f"p{i}"}),
                ip=f"203.0.113.{50 + i}", ua=CHROME)
    gw.wait_rows(5)
    r = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"limit": 2}).json()
    ids = [e["id"] for e in r["events"]]
    while r["next"]:
        r = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"limit": 2, "before": r["next"]}).json()
        ids += [e["id"] for e in r["events"]]
    assert len(ids) == len(set(ids)) == 5
    signups = gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"name": "Signup"}).json()["events"]
    assert {e["pathname"] for e in signups} == {"/a1", "/a3"}
    assert signups[0]["props"] in ({"plan": "p1"}, {"plan": "p3"}) and signups[0]["page"].startswith("https://shop.test/")
    assert gw.api("GET", "/api/v1/sites/shop.test/events", read, params={"before": "garbage"}).status_code == 400


def test_shields_put_validates_like_a_file_edit_keeps_comments_and_takes_effect(shop: tuple[Gateway, str, str]) -> None:
    gw, manage, read = shop
    got = gw.api("GET", "/api/v1/sites/shop.test/shields", read).json()
    assert got["shields"] == {"page_blocklist": ["/admin/*"], "report_only": ["dc_ip"]}
    bad = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage,
                 json={"shields": {"ip_blocklist": ["198.51.100.0/24", "10.0.0.0/33"]}})
    assert bad.status_code == 400 and "shields.ip_blocklist[1]" in bad.json()["errors"]
    for shields, field in (({"page_blocklist": [None]}, "shields.page_blocklist[0]"), ({"colour": ["x"]}, "shields.colour"),
                           ({"disabled": ["bot"], "report_only": ["bot"]}, "shields.report_only")):
        r = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": shields})
        assert r.status_code == 400 and field in r.json()["errors"], (shields, r.text)
    assert (gw.base / "sites" / "shop.toml").read_text() == SHOP  # nothing written by a refused PUT
    assert gw.post(_event("/checkout"), ip="203.0.113.60", ua=CHROME).json() == {"accepted": 1}
    new = {"page_blocklist": ["/admin/*", "/checkout"], "report_only": ["dc_ip"]}
    saved = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": new, "version": got["version"]})
    assert saved.status_code == 200 and saved.json()["shields"] == new
    text = (gw.base / "sites" / "shop.toml").read_text()
    assert "# never count the back office" in text and "# the shop's shields" in text
    assert tomllib.loads(text)["shields"] == new
    assert gw.post(_event("/checkout"), ip="203.0.113.61", ua=CHROME).json() == {"accepted": 0, "dropped": 1}
    # a stale version is refused rather than overwriting someone else's edit
    stale = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": {}, "version": got["version"]})
    assert stale.status_code == 409


def test_history_keeps_twenty_versions_and_a_put_of_an_old_one_rolls_back(shop: tuple[Gateway, str, str]) -> None:
    gw, manage, read = shop
    original = gw.api("GET", "/api/v1/sites/shop.test/shields", read).json()["shields"]
    for i in range(22):
        r = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": {"page_blocklist": [f"/v{i}"]}})
        assert r.status_code == 200
    versions = gw.api("GET", "/api/v1/sites/shop.test/shields/history", read).json()["versions"]
    assert len(versions) == 20 and versions[0]["shields"] == {"page_blocklist": ["/v21"]}
    assert versions[0]["saved_by"].startswith("key ") and versions[-1]["shields"] == {"page_blocklist": ["/v2"]}
    first = gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": versions[-1]["shields"]})
    assert first.status_code == 200
    assert gw.post(_event("/v2"), ip="203.0.113.70", ua=CHROME).json()["dropped"] == 1
    assert gw.post(_event("/v21"), ip="203.0.113.71", ua=CHROME).json() == {"accepted": 1}
    assert original != versions[-1]["shields"]


def test_the_first_api_write_keeps_the_hand_written_version_in_the_history(shop: tuple[Gateway, str, str]) -> None:
    gw, manage, read = shop
    gw.api("PUT", "/api/v1/sites/shop.test/shields", manage, json={"shields": {}})
    versions = gw.api("GET", "/api/v1/sites/shop.test/shields/history", read).json()["versions"]
    assert [v["saved_by"] for v in versions] == [versions[0]["saved_by"], "file"]
    assert versions[1]["shields"] == {"page_blocklist": ["/admin/*"], "report_only": ["dc_ip"]}
    assert "shields" not in tomllib.loads((gw.base / "sites" / "shop.toml").read_text())


def test_an_edit_reaches_every_worker(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, workers=2)
    manage = gw.key("shop.test", "manage")
    assert gw.post(_event("/gone"), ip="203.0.113.79", ua=CHROME).json() == {"accepted": 1}
    assert gw.api("PUT", "/api/v1/sites/shop.test/shields", manage,
                  json={"shields": {"page_blocklist": ["/gone"]}}).status_code == 200
    time.sleep(1.5)  # the other worker's once-a-second check
    # Each event on a new connection (the kept-alive one stays with one worker), until every
    # worker's published counters show it dropped some: every answer must be a drop.
    sent = 0
    while len([n for n in gw.worker_dropped("shop.test", "site_page_blocklist").values() if n]) < 2:
        assert sent < 300, gw.worker_dropped("shop.test", "site_page_blocklist")
        for _ in range(10):
            r = gw.post(_event("/gone"), ip=f"203.0.113.{80 + sent % 100}", ua=CHROME, new_connection=True)
            assert r.json() == {"accepted": 0, "dropped": 1}, sent
            sent += 1
        time.sleep(1.1)  # the workers publish their counters every second
    assert len(gw.worker_dropped("shop.test", "site_page_blocklist")) == 2


def test_dry_run_counts_what_a_rule_would_drop_and_let_back_in_with_samples(shop: tuple[Gateway, str, str]) -> None:
    gw, _, read = shop
    for i in range(4):
        gw.post(_event("/pricing"), ip=f"203.0.113.{90 + i}", ua=CHROME)
    gw.post(_event("/blog/a"), ip="203.0.113.95", ua=CHROME)
    gw.post(_event("/admin/x"), ip="203.0.113.96", ua=CHROME)
    for i in range(3):
        gw.post(_event(f"/b{i}"), ip="203.0.113.97", ua=BOT)
    gw.wait_rows(5)
    _wait(lambda: sum(_summary(gw, read)["totals"]["dropped"].values()) == 4
          and len(gw.api("GET", "/api/v1/sites/shop.test/drops", read).json()["drops"]) == 4)
    proposal = {"page_blocklist": ["/pricing"], "disabled": ["bot"], "ip_blocklist": ["198.51.100.0/24"],
                "report_only": ["dc_ip"]}
    r = gw.api("POST", "/api/v1/sites/shop.test/shields/dry-run", read, json={"shields": proposal, "days": 1})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["events_examined"] == 5 and d["drop_records_examined"] == 4
    assert d["would_drop"]["total"] == 4 and d["would_drop"]["by_reason"] == {"site_page_blocklist": 4}
    assert d["would_drop"]["samples"][0]["pathname"] == "/pricing"
    assert d["would_let_back_in"]["by_reason"] == {"site_page_blocklist": 1, "bot": 3}
    lines = {(x["list"], x["rule"], x["change"]): x for x in d["rules"]}
    assert lines[("page_blocklist", "/pricing", "added")]["would_drop"] == 4
    assert lines[("page_blocklist", "/admin/*", "removed")]["would_let_back_in"] == 1
    assert lines[("ip_blocklist", "198.51.100.0/24", "added")]["replayable"] is False
    assert any("cannot be replayed" in n for n in d["notes"])
    assert {"reason": "bot", "change": "disabled", "would_let_back_in": 3} in d["switches"]
    # nothing was saved
    assert (gw.base / "sites" / "shop.toml").read_text() == SHOP
    # Every answer says that IP rules cannot be replayed, whatever the proposal touches.
    for shields in ({"page_blocklist": ["/pricing"]}, {}, {"disabled": ["bot"]}):
        notes = gw.api("POST", "/api/v1/sites/shop.test/shields/dry-run", read, json={"shields": shields}).json()["notes"]
        assert [n for n in notes if "cannot be replayed" in n and "never stores an address" in n], (shields, notes)
    bad = gw.api("POST", "/api/v1/sites/shop.test/shields/dry-run", read, json={"shields": {"page_blocklist": [1]}})
    assert bad.status_code == 400 and "shields.page_blocklist[0]" in bad.json()["errors"]
    assert gw.api("POST", "/api/v1/sites/shop.test/shields/dry-run", read,
                  json={"shields": {}, "days": 99}).status_code == 400
