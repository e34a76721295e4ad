"""End to end through the real server on loopback: HTTP in, rows read back from SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from browser_headers import browser_headers
from gatewayproc import Gateway

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def pageview(path: str = "/", domain: str = "site.test", **extra: object) -> dict[str, object]:
    return {"n": "pageview", "u": f"https://{domain}{path}", "d": domain, **extra}


def test_health_and_ready(gateway: Gateway) -> None:
    r = gateway.client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = gateway.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["ready"] is True and r.json()["sites"] == 1


def test_pageview_is_stored_with_its_fields(gateway: Gateway) -> None:
    r = gateway.post(pageview("/pricing?utm_source=newsletter&utm_campaign=fall", r="https://www.google.com/search?q=x"),
                     ip="203.0.113.9", ua=CHROME)
    assert r.status_code == 202
    assert r.json() == {"accepted": 1}
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["access-control-allow-origin"] == "*"
    [row] = gateway.wait_rows(1)
    assert row["name"] == "pageview"
    assert row["domain"] == "site.test"
    assert row["hostname"] == "site.test"
    assert row["pathname"] == "/pricing"
    assert row["utm_source"] == "newsletter"
    assert row["utm_campaign"] == "fall"
    assert row["browser"] == "Chrome"
    assert row["operating_system"] == "Windows"
    assert row["screen_size"] == "Desktop"
    assert len(row["event_id"]) == 32
    assert isinstance(row["user_id"], int) and row["user_id"] != 0


def test_event_ids_are_unique_and_in_arrival_order(gateway: Gateway) -> None:
    before_ms = int(time.time() * 1000)
    for i in range(30):
        assert gateway.post(pageview(f"/p{i}"), ip="203.0.113.9", ua=CHROME).status_code == 202
    after_ms = int(time.time() * 1000)
    rows = gateway.wait_rows(30)
    ids = [r["event_id"] for r in sorted(rows, key=lambda r: int(r["pathname"][2:]))]
    assert len(set(ids)) == 30
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # The first 12 hex digits are the time in milliseconds (two requests may share one).
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)
    assert before_ms <= stamps[0] and stamps[-1] <= after_ms


def test_text_plain_body_is_parsed_as_json(gateway: Gateway) -> None:
    r = gateway.post(content=json.dumps(pageview()), headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 202 and r.json() == {"accepted": 1}


def test_invalid_event_gets_400_with_plausible_messages(gateway: Gateway) -> None:
    r = gateway.post({"n": "pageview", "d": "site.test"})
    assert r.status_code == 400
    assert r.json() == {"errors": {"url": ["is required"]}}
    r = gateway.post(content=b"{not json")
    assert r.status_code == 400
    assert r.json() == {"errors": {"request": ["Unable to parse request body as json"]}}


def test_unknown_domain_is_dropped_and_counted(gateway: Gateway) -> None:
    r = gateway.post(pageview(domain="nobody.example"))
    assert r.status_code == 202
    assert r.json() == {"accepted": 0, "dropped": 1}
    assert gateway.metric("gateway_events_dropped_total", site="(unknown)", reason="unknown_site") == 1


def test_comma_separated_domains_fan_out_one_event_per_known_domain(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites={"a": 'domain = "site.test"\n', "b": 'domain = "other.test"\n'})
    r = gw.post({"n": "pageview", "u": "https://site.test/", "d": "site.test, OTHER.test,nobody.test"})
    assert r.json() == {"accepted": 2, "dropped": 1}
    rows = gw.wait_rows(2)
    assert sorted(r["domain"] for r in rows) == ["other.test", "site.test"]


def test_alias_domain_counts_for_its_site(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites={"a": 'domain = "site.test"\naliases = ["alias.test"]\n'})
    assert gw.post(pageview(domain="alias.test")).json() == {"accepted": 1}
    [row] = gw.wait_rows(1)
    assert row["domain"] == "site.test"


def test_batch_accepts_valid_events_and_reports_invalid_ones_by_index(gateway: Gateway) -> None:
    batch = [pageview("/a"), {"n": "pageview", "d": "site.test"}, pageview("/c")]
    r = gateway.post(batch)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2 and body["dropped"] == 1
    assert body["errors"] == [{"index": 1, "errors": {"url": ["is required"]}}]
    assert sorted(r["pathname"] for r in gateway.wait_rows(2)) == ["/a", "/c"]


def test_body_over_the_limit_gets_413_json(gateway: Gateway) -> None:
    r = gateway.post(content=b"{" + b" " * 70_000 + b"}")
    assert r.status_code == 413
    assert "errors" in r.json()
    assert r.headers["access-control-allow-origin"] == "*"


def test_each_answer_carries_its_own_length_and_connection_headers(gateway: Gateway) -> None:
    # The gateway remembers encoded header lines per header set: answers that differ only in
    # length or keep-alive must still each get their own.
    answers = []
    for body, connection in ((pageview(), "keep-alive"), (pageview(domain="other.test"), "keep-alive"),
                             (pageview(), "keep-alive"), ({"n": "pageview"}, "keep-alive"),
                             (pageview(domain="other.test"), "close"), (pageview(), "close")):
        with httpx.Client(base_url=gateway.url) as c:
            r = c.post("/api/event", content=json.dumps(body),
                       headers={**browser_headers(CHROME, body.get("u", "https://site.test/")), "connection": connection})
        answers.append((r.status_code, r.json(), r.headers["connection"]))
        assert int(r.headers["content-length"]) == len(r.content)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["access-control-allow-origin"] == "*"
    assert answers == [
        (202, {"accepted": 1}, "keep-alive"),
        (202, {"accepted": 0, "dropped": 1}, "keep-alive"),
        (202, {"accepted": 1}, "keep-alive"),
        (400, {"errors": {"url": ["is required"], "domain": ["can't be blank"]}}, "keep-alive"),
        (202, {"accepted": 0, "dropped": 1}, "close"),
        (202, {"accepted": 1}, "close"),
    ]


def test_a_returning_client_gets_the_geo_of_a_replaced_database(start_gateway: Callable[..., Gateway],
                                                                 tmp_path: Path) -> None:
    from geo.testdb import nested_city_record, write_db

    db = tmp_path / "city.mmdb"
    write_db(db, [("81.2.69.0/24", nested_city_record("GB", city_geoname_id=7))])
    gw = start_gateway(extra=f'[geo]\ndatabase = "{db}"\nreload_check_seconds = 0.2\n')
    assert gw.post(pageview("/a"), ip="81.2.69.5", ua=CHROME).status_code == 202
    assert gw.post(pageview("/b"), ip="81.2.69.5", ua=CHROME).status_code == 202
    assert [r["country_code"] for r in gw.wait_rows(2)] == ["GB", "GB"]
    # The client is remembered now; the replaced file must still reach its next events.
    write_db(db, [("81.2.69.0/24", nested_city_record("FR", city_geoname_id=8))])
    deadline = time.monotonic() + 10
    n = 2
    while True:
        n += 1
        assert gw.post(pageview(f"/c{n}"), ip="81.2.69.5", ua=CHROME).status_code == 202
        if gw.wait_rows(n)[-1]["country_code"] == "FR" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert gw.wait_rows(n)[-1]["country_code"] == "FR"


def test_preflight_is_answered_with_max_age(gateway: Gateway) -> None:
    r = gateway.client.options("/api/event", headers={"origin": "https://site.test",
                                                      "access-control-request-method": "POST"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert int(r.headers["access-control-max-age"]) >= 600
    assert "POST" in r.headers["access-control-allow-methods"]


def test_unknown_route_and_method_answer_json(gateway: Gateway) -> None:
    r = gateway.client.get("/api/event")
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/json")
    r = gateway.client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


def test_forwarded_for_is_ignored_from_an_untrusted_peer(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(trusted_proxies=[])
    for ip in ("198.51.100.1", "198.51.100.2"):
        assert gw.post(pageview(), ip=ip, ua=CHROME).status_code == 202
    rows = gw.wait_rows(2)
    # Both requests come from the same real peer (loopback), so they are the same visitor.
    assert len({r["user_id"] for r in rows}) == 1


def test_forwarded_for_from_a_trusted_proxy_separates_visitors(gateway: Gateway) -> None:
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        assert gateway.post(pageview(), ip=ip, ua=CHROME).status_code == 202
    rows = gateway.wait_rows(3)
    ids = [r["user_id"] for r in rows]
    assert len(set(ids)) == 2


def test_two_workers_give_one_visitor_one_id(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(workers=2)
    pids = set()
    for i in range(40):
        # a new connection each time so the kernel spreads requests over both workers
        with httpx.Client(base_url=gw.url, headers={"connection": "close"}) as c:
            r = c.post("/api/event", content=json.dumps(pageview(f"/p{i}")),
                       headers={**browser_headers(CHROME), "x-forwarded-for": "192.0.2.44"})
            assert r.status_code == 202
    rows = gw.wait_rows(40)
    assert len(rows) == 40
    assert len({r["user_id"] for r in rows}) == 1
    workers_seen = len(list((gw.data_dir / "metrics").glob("worker-*.json")))
    pids.add(workers_seen)
    assert workers_seen == 2
    # both workers accepted some of them (each publishes its own counters)
    snaps = [json.loads(p.read_text()) for p in (gw.data_dir / "metrics").glob("worker-*.json")]
    time.sleep(1.2)
    snaps = [json.loads(p.read_text()) for p in (gw.data_dir / "metrics").glob("worker-*.json")]
    per_worker = [sum(v for _, v in s["accepted"]) for s in snaps]
    assert sum(per_worker) == 40


def test_clean_stop_flushes_every_buffered_event(start_gateway: Callable[..., Gateway]) -> None:
    # A long flush interval and a huge batch: nothing is written until the stop.
    gw = start_gateway(workers=2, flush_interval=600, batch_size=100_000)
    n = 300
    for i in range(n):
        with httpx.Client(base_url=gw.url, headers={"connection": "close"}) as c:
            assert c.post("/api/event", content=json.dumps(pageview(f"/p{i}")),
                          headers=browser_headers(CHROME)).status_code == 202
    assert gw.rows() == []
    assert gw.stop(signal.SIGTERM) == 0
    assert len(gw.rows()) == n
    assert len({r["pathname"] for r in gw.rows()}) == n


@pytest.mark.parametrize("shipper", ["process", "worker"])
def test_events_reach_the_sink_while_running(start_gateway: Callable[..., Gateway], shipper: str) -> None:
    # The shipper process (default) or each worker's thread moves segments while the gateway
    # serves, not only at the stop; the workers' metrics show what the shipper process did.
    gw = start_gateway(workers=2, extra=f'[spool]\nshipper = "{shipper}"\n')
    for i in range(30):
        with httpx.Client(base_url=gw.url, headers={"connection": "close"}) as c:
            assert c.post("/api/event", content=json.dumps(pageview(f"/p{i}")),
                          headers=browser_headers(CHROME)).status_code == 202
    assert len(gw.wait_rows(30)) == 30
    status = gw.data_dir / "state" / "shipper.json"
    if shipper == "process":
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and json.loads(status.read_text())["shipped_rows"] < 30:
            time.sleep(0.1)
        assert json.loads(status.read_text())["shipped_rows"] == 30  # not shipped by a worker
    else:
        assert not status.exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and gw.metric("gateway_spool_segments") != 0:
        time.sleep(0.2)
    assert gw.metric("gateway_spool_segments") == 0
    assert gw.stop(signal.SIGTERM) == 0
    assert len(gw.rows()) == 30


def test_workers_ship_themselves_when_the_shipper_process_dies(start_gateway: Callable[..., Gateway]) -> None:
    from gateway.store.shipper import STALE_SECONDS

    gw = start_gateway()
    status = gw.data_dir / "state" / "shipper.json"
    shipper_pid = json.loads(status.read_text())["pid"]
    assert shipper_pid != gw.proc.pid
    os.kill(shipper_pid, signal.SIGKILL)
    for i in range(5):
        assert gw.post(pageview(f"/after-kill-{i}")).status_code == 202
    # Nobody ships until the workers notice the missing heartbeat; then they take over.
    assert len(gw.wait_rows(5, timeout=STALE_SECONDS + 10)) == 5
    assert "the shipper process has not reported" in gw.log()
    assert gw.proc.poll() is None  # the server kept serving throughout


def _group(pgid: int) -> set[int]:
    """The live processes of process group `pgid` (a gateway runs in its own session)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def test_shipper_and_workers_exit_when_the_gateway_process_is_killed_and_keep_what_they_took(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(workers=2, flush_interval=600, batch_size=100_000)
    for i in range(30):
        assert gw.post(pageview(f"/k{i}")).status_code == 202
    assert gw.proc is not None
    shipper_pid = json.loads((gw.data_dir / "state" / "shipper.json").read_text())["pid"]
    others = _group(gw.proc.pid) - {gw.proc.pid}
    assert shipper_pid in others and len(others) >= 3  # the shipper and two workers
    os.kill(gw.proc.pid, signal.SIGKILL)  # the main process only: no chance to stop the others
    gw.proc.wait(5)
    deadline = time.monotonic() + 15
    while _group(gw.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(gw.proc.pid) == set(), "a worker or the shipper outlived the gateway process"
    log = gw.log()
    assert "the gateway process is gone: the shipper stops" in log
    assert log.count("the gateway process is gone: worker") == 2
    # The workers flushed the events they had taken to the spool as they stopped: the next
    # start ships them.
    again = start_gateway(base=gw.base)
    assert len(again.wait_rows(30)) == 30


def test_sigint_also_flushes(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(flush_interval=600, batch_size=100_000)
    for i in range(20):
        assert gw.post(pageview(f"/p{i}")).status_code == 202
    gw.stop(signal.SIGINT)
    assert len(gw.rows()) == 20


def test_sessions_view_groups_a_visit(gateway: Gateway) -> None:
    for path in ("/", "/pricing"):
        gateway.post(pageview(path), ip="192.0.2.7", ua=CHROME)
    gateway.post({"n": "signup", "u": "https://site.test/pricing", "d": "site.test"}, ip="192.0.2.7", ua=CHROME)
    gateway.wait_rows(3)
    conn = sqlite3.connect(gateway.sqlite_path)
    [(entry, exit_, pageviews, events, bounce)] = conn.execute(
        "SELECT entry_page, exit_page, pageviews, events, is_bounce FROM sessions").fetchall()
    assert (entry, exit_, pageviews, events, bounce) == ("/", "/pricing", 2, 3, 0)


def test_salt_files_are_private_and_only_current_and_previous_exist(gateway: Gateway) -> None:
    gateway.post(pageview())
    salts = list((gateway.data_dir / "salts").iterdir())
    assert len(salts) == 1
    assert oct(salts[0].stat().st_mode & 0o777) == "0o600"
    assert salts[0].stat().st_size == 16


def test_no_raw_ip_or_user_agent_in_any_file_the_gateway_wrote(start_gateway: Callable[..., Gateway]) -> None:
    ip = "203.0.113.197"
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 PrivacyProbe/7.7.7"
    # a site whose own rule names the address: its drop records must not repeat it
    sites = {"site": 'domain = "site.test"\n[shields]\npage_blocklist = ["/private/*"]\n',
             "blocked": f'domain = "blocked.test"\n[shields]\nip_blocklist = ["{ip}", "203.0.113.0/24"]\n'}
    gw = start_gateway(workers=2, sites=sites)
    for i in range(10):
        assert gw.post(pageview(f"/p{i}"), ip=ip, ua=ua).status_code == 202
    # also invalid and dropped events, which go down other code paths and leave drop records
    gw.post({"n": "pageview", "d": "site.test"}, ip=ip, ua=ua)
    gw.post(pageview(domain="unknown.test"), ip=ip, ua=ua)
    gw.post(pageview("/private/x"), ip=ip, ua=ua)
    gw.post(pageview(domain="blocked.test"), ip=ip, ua=ua)
    gw.post(pageview("/bare"), ip=ip, ua=ua, browser=False)  # spoofed_agent: the UA without its headers
    gw.wait_rows(10)
    deadline = time.monotonic() + 10
    while len(gw.table_rows("drops")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {r["reason"] for r in gw.table_rows("drops")} == {"site_page_blocklist", "site_ip_blocklist", "spoofed_agent"}
    key = gw.key("blocked.test", "read")
    answer = gw.api("GET", "/api/v1/sites/blocked.test/drops", key)
    assert answer.status_code == 200 and "203.0.113" not in answer.text
    gw.client.get("/metrics")
    gw.stop()
    needles = [ip.encode(), ua.encode(), b"PrivacyProbe", b"203.0.113", ip.encode("utf-16-le")]
    scanned = 0
    for path in gw.base.rglob("*"):
        if path.is_file() and path.name != "gateway.toml" and not path.name.endswith(".toml"):
            data = path.read_bytes()
            scanned += 1
            for needle in needles:
                assert needle not in data, f"{needle!r} found in {path}"
    assert scanned >= 3  # the sqlite file, its WAL/metrics files and the log
