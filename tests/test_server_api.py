"""POST /api/v1/events against the real server and its SQLite sink."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from gatewayproc import Gateway

from gateway.state.keys import parse_token

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
SITES = {"shop": 'domain = "shop.test"\n[shields]\nip_blocklist = ["198.51.100.0/24"]\npage_blocklist = ["/admin/*"]\n'
                 '[server_api]\nevents_per_minute = 3000\nburst = 3000\n',
         "tiny": 'domain = "tiny.test"\n[server_api]\nevents_per_minute = 60\nburst = 5\n',
         "plain": 'domain = "plain.test"\n'}


@pytest.fixture
def gw(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(sites=SITES)


def send(gw: Gateway, key: str | None, events: Any, **kw: Any) -> Any:
    return gw.api("POST", "/api/v1/events", key, content=json.dumps({"events": events}), **kw)


def test_a_batch_of_1000_is_accepted_and_stored_at_the_events_times(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    t = int(time.time() * 1000) - 3_600_000
    events = [{"eventName": "Purchase", "pageUrl": f"https://shop.test/p/{i}", "timestamp": t,
               "properties": {"n": str(i)}, "ip": "203.0.113.5", "userAgent": CHROME} for i in range(1000)]
    r = send(gw, key, events)
    assert r.status_code == 202 and r.json() == {"accepted": 1000}
    rows = gw.wait_rows(1000)
    assert len(rows) == 1000
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t // 1000))
    assert {r["timestamp"] for r in rows} == {stamp} and {r["name"] for r in rows} == {"Purchase"}


def test_mixed_batch_is_207_and_none_valid_is_400_with_details(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "Signup", "path": "/welcome"}, {"url": "https://shop.test/"},
                       {"name": "x", "url": "https://shop.test/", "timestamp": "1999-01-01T00:00:00Z"}])
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 1 and [e["index"] for e in body["errors"]] == [1, 2]
    assert "Event 1: eventName is required" in body["details"]
    r = send(gw, key, [{"url": "https://shop.test/"}])
    assert r.status_code == 400 and r.json()["details"] == ["Event 0: eventName is required"]
    assert send(gw, key, []).status_code == 400
    assert send(gw, key, [{"name": "a", "path": "/"}] * 1001).status_code == 400
    assert gw.api("POST", "/api/v1/events", key, content=b"{nope").status_code == 400


def _refused(r: Any, status: int) -> None:
    """An auth refusal: `status` with the API's `{"error": ...}` body and nothing else."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if status == 429:
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "egk_x",
                                    "Bearer egk_000000000000_" + "A" * 43, "Bearer egk_00000000000_" + "A" * 44])
def test_missing_malformed_and_unknown_keys_get_401_with_an_error(gw: Gateway, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header}
    _refused(gw.client.post("/api/v1/events", content=json.dumps({"events": [{"name": "a", "path": "/"}]}),
                            headers=headers), 401)
    assert gw.rows() == []


@pytest.mark.parametrize("scope", ["read", "manage"])
def test_a_key_of_another_scope_gets_401_here_and_keeps_its_403_on_the_console(gw: Gateway, scope: str) -> None:
    key = gw.key("shop.test", scope)
    _refused(send(gw, key, [{"name": "a", "path": "/"}]), 401)
    assert gw.api("GET", "/api/v1/sites/shop.test/summary", key).status_code == 200  # the key itself is good
    ingest = gw.key("shop.test", "ingest")
    _refused(gw.api("GET", "/api/v1/sites/shop.test/summary", ingest), 403)
    if scope == "read":  # the console still answers a read key that tries to write with 403
        _refused(gw.api("PUT", "/api/v1/sites/shop.test/shields", key, json={"shields": {}}), 403)


def test_failed_attempts_are_limited_per_client_with_429_and_wrong_scopes_count(gw: Gateway) -> None:
    good, read = gw.key("shop.test", "ingest"), gw.key("shop.test", "read")
    client = {"x-forwarded-for": "198.51.100.61"}
    batch = [{"name": "a", "path": "/"}]
    answers = [send(gw, "egk_000000000000_" + "B" * 43 if i % 2 else read, batch, headers=client) for i in range(24)]
    for r in answers[:20]:
        _refused(r, 401)
    for r in answers[20:]:
        _refused(r, 429)
    _refused(send(gw, good, batch, headers=client), 429)  # even a good key, from that client
    assert send(gw, good, batch, headers={"x-forwarded-for": "198.51.100.62"}).json() == {"accepted": 1}
    assert "198.51.100.61" not in gw.log()


def test_a_revoked_key_is_refused_within_5_seconds(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    assert send(gw, key, [{"name": "a", "path": "/"}]).status_code == 202
    assert gw.cli("keys", "revoke", parse_token(key)[0]).returncode == 0  # type: ignore[index]
    deadline = time.monotonic() + 5
    while (r := send(gw, key, [{"name": "a", "path": "/"}], headers={"x-forwarded-for": "203.0.113.77"})).status_code != 401:
        assert r.status_code == 202 and time.monotonic() < deadline
    _refused(r, 401)


def test_the_key_bucket_answers_429_then_recovers(gw: Gateway) -> None:
    key = gw.key("tiny.test", "ingest")
    assert send(gw, key, [{"name": "a", "path": "/"}] * 5).status_code == 202
    r = send(gw, key, [{"name": "a", "path": "/"}] * 2)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    time.sleep(2.2)  # one token a second
    assert send(gw, key, [{"name": "a", "path": "/"}] * 2).status_code == 202


def test_a_batch_over_the_bucket_is_413_naming_its_size_and_only_valid_events_take_tokens(gw: Gateway) -> None:
    key = gw.key("tiny.test", "ingest")  # 60 a minute, burst 5
    ok, bad = {"name": "a", "path": "/"}, {"path": "/"}
    r = send(gw, key, [ok] * 6)
    assert r.status_code == 413 and r.json() == {
        "error": "this key's bucket holds 5 events: send at most 5 valid events in one batch"}
    assert "retry-after" not in r.headers
    assert send(gw, key, [bad] * 8).status_code == 400  # none valid: no token taken
    r = send(gw, key, [ok] * 5 + [bad] * 3)  # 8 events, 5 valid: they fit, and take the 5 tokens
    assert r.status_code == 207 and r.json()["accepted"] == 5
    r = send(gw, key, [ok])
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2


def test_a_batch_refused_with_503_takes_no_tokens(start_gateway: Callable[..., Gateway]) -> None:
    budget = 60_000
    gw = start_gateway(sites={"meter": 'domain = "meter.test"\n[server_api]\nevents_per_minute = 1\nburst = 400\n'},
                       extra=f"[spool]\nmax_disk_bytes = {budget}\nsegment_bytes = 8192\n", flush_interval=0.2)
    key = gw.key("meter.test", "ingest")
    assert send(gw, key, [{"name": "first", "path": "/"}]).json() == {"accepted": 1}
    assert gw.wait_rows(1)
    lock = sqlite3.connect(gw.sqlite_path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the sink cannot write: the spool fills up to its budget
    padded = [{"name": "pad", "path": "/", "props": {"pad": "x" * 1500}}] * 10
    spent, refused = 1, 0
    try:
        while refused < 5:
            r = send(gw, key, padded)
            if r.status_code == 202:
                assert refused == 0 and spent < 300, "the spool budget was never enforced"
                spent += 10
            else:
                assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
                refused += 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    def drained(rows: int) -> None:
        assert len(gw.wait_rows(rows, timeout=30)) == rows
        deadline = time.monotonic() + 30
        while send(gw, key, [{"path": "/"}]).status_code == 503:  # 400 once the spool has room: no token spent
            assert time.monotonic() < deadline
            time.sleep(0.2)

    drained(spent)
    # Every token the 50 refused events would have cost is still there, and not one more.
    assert send(gw, key, [{"name": "rest", "path": "/"}] * (400 - spent)).json() == {"accepted": 400 - spent}
    drained(400)
    assert send(gw, key, [{"name": "over", "path": "/"}]).status_code == 429


def test_gzip_bodies_and_a_gzip_bomb(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    body = gzip.compress(json.dumps({"events": [{"name": "z", "path": "/gz"}]}).encode())
    r = gw.api("POST", "/api/v1/events", key, content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    bomb = gzip.compress(b'{"events": [' + b" " * (64 * 1024 * 1024) + b"]}")
    started = time.monotonic()
    r = gw.api("POST", "/api/v1/events", key, content=bomb, headers={"content-encoding": "gzip"})
    assert r.status_code == 413 and time.monotonic() - started < 2


def _body_of(size: int) -> bytes:
    """A valid one-event batch padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps({"events": [{"name": "big", "path": "/big"}]}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_just_over_the_byte_limit_is_413_in_this_apis_shape(gw: Gateway) -> None:
    key, limit = gw.key("shop.test", "ingest"), 4 * 1024 * 1024  # [server_api] max_body_bytes
    assert send(gw, key, [{"name": "small", "path": "/"}]).status_code == 202
    at_limit = gw.api("POST", "/api/v1/events", key, content=_body_of(limit))
    assert at_limit.json() == {"accepted": 1}
    over = gw.api("POST", "/api/v1/events", key, content=_body_of(limit + 1))  # Sanic's own limit
    assert over.status_code == 413 and over.json() == {"error": f"the body is larger than {limit} bytes (after gzip is undone)"}

    def chunks() -> Any:
        body = _body_of(limit + 1)
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    chunked = gw.api("POST", "/api/v1/events", key, content=chunks())
    assert chunked.status_code == 413 and list(chunked.json()) == ["error"]
    # /api/event keeps its own shape for the same refusal
    assert gw.post(content=_body_of(limit + 1)).json() == {"errors": {"request": ["request body is too large"]}}
    assert [r["name"] for r in gw.wait_rows(2)] == ["small", "big"]


def test_consent_false_drops_as_no_consent_and_leaves_a_record(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/c", "consentGiven": False}, {"name": "b", "path": "/c"}])
    assert r.json() == {"accepted": 1, "dropped": 1}
    assert gw.metric("gateway_events_dropped_total", site="shop.test", reason="no_consent") == 1
    deadline = time.monotonic() + 10
    while not gw.table_rows("drops") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [d["reason"] for d in gw.table_rows("drops")] == ["no_consent"]


def test_a_batch_retried_seconds_later_is_stored_once(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    # No timestamps (each copy's row time is its arrival), and visitors of every kind.
    batch = [{"name": "Order", "path": f"/o/{i}", "eventId": f"order-{i}",
              **[{}, {"anonymousId": "customer-1"}, {"ip": "203.0.113.30", "userAgent": CHROME}][i % 3]}
             for i in range(6)]
    assert send(gw, key, batch).json() == {"accepted": 6}
    first = sorted((r["event_id"], r["timestamp"], r["user_id"]) for r in gw.wait_rows(6))
    time.sleep(1.2)  # the retry lands in a later second, from another request
    assert send(gw, key, batch).json() == {"accepted": 6}
    assert send(gw, key, [{"name": "Later", "path": "/"}]).status_code == 202
    gw.wait_rows(7)  # the retry was shipped before this one, or with it
    assert sorted((r["event_id"], r["timestamp"], r["user_id"]) for r in gw.rows("name = 'Order'")) == first
    assert all(r[0].startswith("s") and len(r[0]) == 32 for r in first)


def test_forwarded_visitor_meets_the_site_rules_and_joins_its_browser_events(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/", "ip": "198.51.100.9", "userAgent": CHROME}])
    assert r.json() == {"accepted": 0, "dropped": 1}
    r = send(gw, key, [{"name": "a", "path": "/", "ip": "203.0.113.8", "userAgent": "curl/8.5.0"}])
    assert r.json() == {"accepted": 0, "dropped": 1}  # the bot shield applies to the forwarded visitor
    # a browser event (with its browser's headers) and a server event of one visitor share the visitor id
    assert gw.post({"n": "pageview", "u": "https://shop.test/", "d": "shop.test"}, ip="203.0.113.8",
                   ua=CHROME).json() == {"accepted": 1}
    assert send(gw, key, [{"name": "Signup", "path": "/", "ip": "203.0.113.8", "userAgent": CHROME}]).json() == {"accepted": 1}
    rows = gw.wait_rows(2)
    assert len({r["user_id"] for r in rows}) == 1


@pytest.mark.parametrize("own_user_agent", [None, CHROME])
def test_a_library_forwarding_a_browsers_user_agent_is_accepted_here_and_spoofed_on_api_event(
        gw: Gateway, own_user_agent: str | None) -> None:
    """The key vouches for the sender: spoofed_agent does not judge it. The same library sending
    the same User-Agent, with the same (no) browser headers, to the public endpoint is a spoof."""
    key = gw.key("shop.test", "ingest")
    headers = {} if own_user_agent is None else {"user-agent": own_user_agent}  # httpx's own, or the visitor's
    r = send(gw, key, [{"name": "Signup", "path": "/", "ip": "203.0.113.50", "userAgent": CHROME}], headers=headers)
    assert r.json() == {"accepted": 1}
    assert gw.metric("gateway_events_dropped_total", site="shop.test", reason="spoofed_agent") is None
    (row,) = gw.wait_rows(1)
    assert row["browser"] == "Chrome"
    public = gw.post({"n": "Signup", "u": "https://shop.test/", "d": "shop.test"}, ip="203.0.113.50", ua=CHROME,
                     browser=False)  # the library's request with the browser's User-Agent and nothing else
    assert public.json() == {"accepted": 0, "dropped": 1}
    assert gw.metric("gateway_events_dropped_total", site="shop.test", reason="spoofed_agent") == 1
    assert len(gw.rows()) == 1


def test_identity_fields_are_listed_as_ignored_and_never_stored(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/", "email": "jane@example.com", "userId": "u-778899",
                        "traits": {"plan": "gold-secret"}, "ip": "203.0.113.44", "userAgent": CHROME}])
    assert r.status_code == 202 and r.json()["ignored"] == ["email", "traits", "userId"]
    gw.wait_rows(1)
    gw.stop()
    for path in gw.base.rglob("*"):
        if path.is_file() and not path.name.endswith(".toml"):
            data = path.read_bytes()
            for needle in (b"jane@example.com", b"u-778899", b"gold-secret", b"203.0.113.44", CHROME.encode()):
                assert needle not in data, (needle, path)


def test_other_apis_field_names_are_read_as_aliases(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    t_ms = int(time.time() * 1000) - 60_000
    r = send(gw, key, [
        {"type": "Signup", "pageUrl": "https://shop.test/app?utm_source=old#/plans", "hashMode": True,
         "utm": {"source": "newsletter", "campaign": "winter"}, "metadata": {"plan": "pro"},
         "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "referrer": "https://news.example.org/a", "eventId": "s-1"},
        {"event_type": "Upgrade", "path": "/billing", "utmMedium": "email", "properties": {"tier": "2"},
         "timestamp": t_ms, "eventId": "s-2"},
    ])
    assert r.status_code == 202 and r.json() == {"accepted": 2}, r.text
    rows = {row["name"]: row for row in gw.wait_rows(2)}
    signup, upgrade = rows["Signup"], rows["Upgrade"]
    assert (signup["pathname"], signup["utm_source"], signup["utm_campaign"]) == ("/app#/plans", "newsletter", "winter")
    assert (signup["referrer"], signup["referrer_source"]) == ("news.example.org/a", "newsletter")
    assert (upgrade["hostname"], upgrade["pathname"], upgrade["utm_medium"]) == ("shop.test", "/billing", "email")
    assert (signup["meta.key"], signup["meta.value"]) == ('["plan"]', '["pro"]')
    assert (upgrade["meta.key"], upgrade["meta.value"]) == ('["tier"]', '["2"]')
    assert upgrade["timestamp"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_ms // 1000))


def test_events_with_no_visitor_fields_share_one_visitor_per_request(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    first = [{"name": "a", "path": "/1", "eventId": "r1-a"}, {"name": "b", "path": "/2", "eventId": "r1-b"},
             {"name": "c", "path": "/3"}, {"name": "d", "path": "/4", "anonymousId": "customer-9"}]
    assert send(gw, key, first).json() == {"accepted": 4}
    assert send(gw, key, [{"name": "e", "path": "/5", "eventId": "r2-e"}]).json() == {"accepted": 1}
    visitor = {r["name"]: r["user_id"] for r in gw.wait_rows(5)}
    assert visitor["a"] == visitor["b"] == visitor["c"]  # one request, no visitor fields: one visitor
    assert visitor["d"] != visitor["a"]  # an anonymousId is its own visitor
    assert visitor["e"] not in (visitor["a"], visitor["d"])  # another request, another visitor


def test_a_visitors_events_are_one_visitor_whether_sent_together_or_between_others(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    who = {"a": ("203.0.113.61", CHROME), "b": ("203.0.113.62", CHROME), "c": ("203.0.113.61", firefox)}
    order = ["a", "a", "b", "a", "c", "b", "b", "a", "c"]  # runs of one visitor and visitors in between
    events = [{"name": f"{v}{i}", "path": "/", "ip": who[v][0], "userAgent": who[v][1]} for i, v in enumerate(order)]
    assert send(gw, key, events).json() == {"accepted": len(order)}
    ids: dict[str, set[int]] = {}
    for row in gw.wait_rows(len(order)):
        ids.setdefault(row["name"][0], set()).add(row["user_id"])
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(ids["a"] | ids["b"] | ids["c"]) == 3  # the address or the User-Agent tells them apart


def test_ignored_names_each_field_once_across_events_and_message_id_is_read_not_ignored(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    batch = [{"name": "a", "path": "/m", "messageId": "m-1", "email": "a@example.com", "pageTitle": "A"},
             {"name": "b", "path": "/m", "message_id": "m-2", "email": "b@example.com", "sessionId": "s-1",
              "context": {"library": "x"}},
             {"name": "c", "path": "/m", "email": "c@example.com", "pageTitle": "C", "sessionId": "s-2"}]
    r = send(gw, key, batch)
    assert r.json() == {"accepted": 3, "ignored": ["context", "email", "pageTitle", "sessionId"]}
    assert send(gw, key, batch[:2]).json()["accepted"] == 2  # a retry, by messageId / message_id
    time.sleep(1.0)
    rows = gw.wait_rows(3)
    assert sorted(r["name"] for r in rows) == ["a", "b", "c"]
    assert len(gw.rows()) == 3


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def test_timestamps_from_max_age_ago_to_5_minutes_ahead_each_event_on_its_own(gw: Gateway) -> None:
    key, now = gw.key("shop.test", "ingest"), time.time()
    r = send(gw, key, [{"name": "old-ok", "path": "/", "timestamp": int((now - 7 * 86400 + 120) * 1000)},
                       {"name": "too-old", "path": "/", "timestamp": int((now - 7 * 86400 - 120) * 1000)},
                       {"name": "soon", "path": "/", "timestamp": _iso(now + 240)},
                       {"name": "too-soon", "path": "/", "timestamp": _iso(now + 420)},
                       {"name": "too-soon-ms", "path": "/", "timestamp": int((now + 420) * 1000)}])
    assert r.status_code == 207 and r.json()["accepted"] == 2, r.text
    assert r.json()["errors"] == [{"index": 1, "errors": {"timestamp": ["is older than the accepted age"]}},
                                  {"index": 3, "errors": {"timestamp": ["is more than 5 minutes in the future"]}},
                                  {"index": 4, "errors": {"timestamp": ["is more than 5 minutes in the future"]}}]
    stored = {row["name"]: row["timestamp"] for row in gw.wait_rows(2)}
    assert stored["soon"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(now + 240)))


def test_a_changed_max_age_is_honoured(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, extra='[server_api]\nmax_age = "36h"\n')
    key, now = gw.key("shop.test", "ingest"), time.time()
    r = send(gw, key, [{"name": "a", "path": "/", "timestamp": _iso(now - 35 * 3600)},
                       {"name": "b", "path": "/", "timestamp": _iso(now - 37 * 3600)},
                       {"name": "c", "path": "/", "timestamp": _iso(now - 3 * 86400)}])  # within the default 7d
    assert r.status_code == 207 and r.json()["accepted"] == 1
    assert [e["index"] for e in r.json()["errors"]] == [1, 2]
    assert [row["name"] for row in gw.wait_rows(1)] == ["a"]



def test_the_default_bucket_is_1000_events_a_minute(gw: Gateway) -> None:
    key = gw.key("plain.test", "ingest")  # no [server_api] in its site file, none in the gateway's
    assert send(gw, key, [{"name": "a", "path": "/"}] * 1000).json() == {"accepted": 1000}
    r = send(gw, key, [{"name": "b", "path": "/"}] * 20)
    assert r.status_code == 429 and r.json() == {"error": "this key may send 1000 events a minute"}
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 2  # 20 tokens at 1000 a minute: 1.2 s
    time.sleep(wait)
    assert send(gw, key, [{"name": "b", "path": "/"}] * 20).json() == {"accepted": 20}


def test_a_key_whose_site_file_was_removed_gets_401(gw: Gateway) -> None:
    key = gw.key("plain.test", "ingest")
    assert send(gw, key, [{"name": "a", "path": "/"}]).status_code == 202
    (gw.base / "sites" / "plain.toml").unlink()
    deadline = time.monotonic() + 5  # the workers pick up site files every second
    while (r := send(gw, key, [{"name": "a", "path": "/"}], headers={"x-forwarded-for": "203.0.113.90"})).status_code == 202:
        assert time.monotonic() < deadline
    _refused(r, 401)
    assert r.json()["error"] == "the key's site plain.test is not configured"
    assert send(gw, gw.key("shop.test", "ingest"), [{"name": "a", "path": "/"}]).status_code == 202  # others go on


def test_a_batchs_drops_are_recorded_each_with_its_own_visitors_columns(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/x", "ip": "198.51.100.9", "userAgent": CHROME},
                       {"name": "b", "path": "/y", "ip": "203.0.113.8", "userAgent": "curl/8.5.0"},
                       {"name": "c", "path": "/z", "ip": "198.51.100.9", "userAgent": CHROME}])
    assert r.json() == {"accepted": 0, "dropped": 3}
    deadline = time.monotonic() + 10
    while len(gw.table_rows("drops")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    records = sorted((d["name"], d["reason"], d["browser"]) for d in gw.table_rows("drops"))
    assert records == [("a", "site_ip_blocklist", "Chrome"), ("b", "bot", "curl"),
                       ("c", "site_ip_blocklist", "Chrome")]


def test_the_sites_page_rules_apply_to_server_events(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/admin/users"}, {"name": "b", "pageUrl": "https://shop.test/admin/"},
                       {"name": "c", "path": "/administrator"}])
    assert r.json() == {"accepted": 1, "dropped": 2}
    assert gw.metric("gateway_events_dropped_total", site="shop.test", reason="site_page_blocklist") == 2
    assert [row["pathname"] for row in gw.wait_rows(1)] == ["/administrator"]


def test_an_event_id_over_64_characters_is_refused_per_event(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/", "eventId": "x" * 64}, {"name": "b", "path": "/", "eventId": "x" * 65},
                       {"name": "c", "path": "/", "messageId": ""}])
    assert r.status_code == 207 and r.json()["accepted"] == 1
    assert r.json()["errors"] == [{"index": i, "errors": {"eventId": ["must be a string of 1 to 64 characters"]}}
                                  for i in (1, 2)]


def test_visitor_id_utm_source_page_title_and_session_id(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    r = send(gw, key, [{"name": "a", "path": "/pricing", "anonymousId": "cust-5", "utmSource": "newsletter",
                        "pageTitle": "Pricing — Shop", "sessionId": "sess-9f2"},
                       {"name": "b", "path": "/", "visitorId": "cust-5", "utm_medium": "email",
                        "utm": {"campaign": "spring"}}])
    assert r.json() == {"accepted": 2, "ignored": ["pageTitle", "sessionId"]}
    rows = {row["name"]: row for row in gw.wait_rows(2)}
    assert rows["a"]["user_id"] == rows["b"]["user_id"]  # visitorId is anonymousId
    assert (rows["a"]["utm_source"], rows["b"]["utm_medium"], rows["b"]["utm_campaign"]) == ("newsletter", "email", "spring")
    gw.stop()
    data = gw.sqlite_path.read_bytes() + b"".join(p.read_bytes() for p in gw.data_dir.rglob("*") if p.is_file())
    for needle in (b"Pricing \xe2\x80\x94 Shop", b"sess-9f2", b"cust-5"):
        assert needle not in data, needle


def test_the_inflation_ratio_alone_refuses_a_gzip_body(gw: Gateway) -> None:
    key = gw.key("shop.test", "ingest")
    body = _body_of(1024 * 1024)  # 1 MiB of valid JSON, a quarter of the byte limit, mostly spaces
    packed = gzip.compress(body)
    assert len(body) / len(packed) > 50  # [server_api] max_inflation_ratio
    assert gw.api("POST", "/api/v1/events", key, content=body).json() == {"accepted": 1}  # the bytes alone are fine
    r = gw.api("POST", "/api/v1/events", key, content=packed, headers={"content-encoding": "gzip"})
    assert r.status_code == 413 and list(r.json()) == ["error"]
    mild = json.dumps({"events": [{"name": f"n{i}", "path": f"/p/{i}"} for i in range(200)]}).encode()
    assert len(mild) / len(gzip.compress(mild)) < 50
    r = gw.api("POST", "/api/v1/events", key, content=gzip.compress(mild), headers={"content-encoding": "gzip"})
    assert r.json() == {"accepted": 200}
