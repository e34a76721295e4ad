"""API keys: made, listed and revoked by the real CLI; checked by the real server over HTTP."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import servers
from gatewayproc import Gateway
from servers import RedisServer, missing, redis_command

from gateway.state.keys import KeyRing, SQLiteKeyStore, create_key, parse_token
from gateway.store.sqlite import SQLiteSink, ensure_schema

SITES = {"a": 'domain = "a.test"\n', "b": 'domain = "b.test"\n'}
redis_server = servers.redis_server


def test_create_prints_the_secret_once_as_the_last_line_and_stores_only_its_hash(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    made_after = int(time.time())
    token = gw.key("a.test", "read", "dashboard")
    made_before = time.time()
    parsed = parse_token(token)
    assert parsed is not None
    key_id, secret = parsed
    listed = gw.cli("keys", "list", "--json")
    assert listed.returncode == 0
    [entry] = json.loads(listed.stdout)
    assert entry["id"] == key_id and entry["site"] == "a.test" and entry["scope"] == "read"
    assert entry["label"] == "dashboard" and entry["last_used"] is None and entry["revoked"] is None
    created = datetime.strptime(entry["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert made_after <= created <= made_before
    header, row = gw.cli("keys", "list").stdout.splitlines()
    assert header.split()[:4] == ["id", "site", "scope", "created"]
    assert row.split()[:6] == [key_id, "a.test", "read", entry["created"], "-", "-"] and row.endswith("dashboard")
    assert secret not in listed.stdout and secret not in gw.cli("keys", "list").stdout
    for path in gw.data_dir.glob("keys.sqlite*"):  # the file and its WAL
        assert secret.encode() not in path.read_bytes()
    conn = sqlite3.connect(gw.data_dir / "keys.sqlite")
    assert conn.execute("SELECT digest FROM keys WHERE id = ?", (key_id,)).fetchone() == (
        hashlib.sha256(secret.encode()).hexdigest(),)
    conn.close()


def test_create_refuses_an_unknown_site_and_scope(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    done = gw.cli("keys", "create", "--site", "nowhere.test", "--scope", "read")
    assert done.returncode == 2 and "no site" in done.stderr
    done = gw.cli("keys", "create", "--site", "a.test", "--scope", "admin")
    assert done.returncode != 0


def test_a_key_reads_its_own_site_only_and_other_sites_look_like_missing_ones(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    key_a = gw.key("a.test", "manage")
    assert gw.api("GET", "/api/v1/sites/a.test/summary", key_a).status_code == 200
    for path in ("summary", "drops", "events", "top", "shields", "shields/history"):
        other = gw.api("GET", f"/api/v1/sites/b.test/{path}", key_a)
        missing = gw.api("GET", f"/api/v1/sites/nowhere.test/{path}", key_a)
        assert other.status_code == missing.status_code == 404, path
        assert other.json() == missing.json()
    put = gw.api("PUT", "/api/v1/sites/b.test/shields", key_a, json={"shields": {"disabled": ["bot"]}})
    assert put.status_code == 404
    assert "disabled" not in (gw.base / "sites" / "b.toml").read_text()
    dry = gw.api("POST", "/api/v1/sites/b.test/shields/dry-run", key_a, json={"shields": {}})
    assert dry.status_code == 404
    assert gw.api("GET", "/api/v1/me", key_a).json()["site"] == "a.test"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz",
                                    "Bearer egk_000000000000_" + "A" * 43])
def test_missing_malformed_and_unknown_keys_get_401(start_gateway: Callable[..., Gateway], header: str | None) -> None:
    gw = start_gateway(sites=SITES)
    headers = {} if header is None else {"authorization": header}
    r = gw.client.get("/api/v1/sites/a.test/summary", headers=headers)
    assert r.status_code == 401 and "error" in r.json()


def test_a_wrong_secret_for_a_real_id_is_refused(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    token = gw.key("a.test", "read")
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert gw.api("GET", "/api/v1/sites/a.test/summary", wrong).status_code == 401
    assert gw.api("GET", "/api/v1/sites/a.test/summary", token).status_code == 200


def test_scopes_read_cannot_change_rules_and_ingest_cannot_read(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    read, ingest = gw.key("a.test", "read"), gw.key("a.test", "ingest")
    put = gw.api("PUT", "/api/v1/sites/a.test/shields", read, json={"shields": {"disabled": ["bot"]}})
    assert put.status_code == 403
    assert "disabled" not in (gw.base / "sites" / "a.toml").read_text()
    assert gw.api("POST", "/api/v1/sites/a.test/shields/dry-run", read, json={"shields": {}}).status_code == 200
    assert gw.api("GET", "/api/v1/sites/a.test/drops", ingest).status_code == 403


def test_a_revoked_key_fails_on_every_worker_within_5_seconds(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, workers=2)
    token = gw.key("a.test", "read")
    for _ in range(20):  # both workers have it cached
        assert gw.api("GET", "/api/v1/sites/a.test/summary", token).status_code == 200
    key_id = parse_token(token)[0]  # type: ignore[index]
    done = gw.cli("keys", "revoke", key_id)
    assert done.returncode == 0
    revoked_at = time.monotonic()
    refused_since = None
    i = 0
    while time.monotonic() - revoked_at < 8:
        i += 1
        # new connections, so the kernel spreads them over both workers; each poll from its own
        # address (through the trusted loopback proxy), so the failures do not add up to a 429
        with gw.client.__class__(base_url=gw.url, timeout=5) as fresh:
            status = fresh.get("/api/v1/sites/a.test/summary", headers={
                "authorization": f"Bearer {token}", "x-forwarded-for": f"198.51.{i // 250}.{i % 250}"}).status_code
        if status == 401:
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > 2.5:
                break
        else:
            assert status == 200
            refused_since = None
    assert refused_since is not None and refused_since - revoked_at < 5.0
    assert json.loads(gw.cli("keys", "list", "--json").stdout)[0]["revoked"] is not None
    assert gw.cli("keys", "revoke", key_id).returncode == 1  # already revoked


def test_failed_attempts_are_limited_per_client_with_429(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    good = gw.key("a.test", "read")
    statuses = [gw.api("GET", "/api/v1/sites/a.test/summary", "egk_000000000000_" + "B" * 43,
                       headers={"x-forwarded-for": "198.51.100.7"}).status_code for _ in range(30)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    limited = gw.api("GET", "/api/v1/sites/a.test/summary", good, headers={"x-forwarded-for": "198.51.100.7"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # another client is not held up by the first one's failures
    assert gw.api("GET", "/api/v1/sites/a.test/summary", good,
                  headers={"x-forwarded-for": "198.51.100.8"}).status_code == 200
    # the failure bucket is keyed by a salted hash, never the address
    assert "198.51.100.7" not in gw.log()
    for path in (gw.data_dir / "state").glob("*"):
        assert b"198.51.100.7" not in path.read_bytes()


def test_last_used_is_recorded(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    token = gw.key("a.test", "read")
    assert gw.api("GET", "/api/v1/me", token).status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if json.loads(gw.cli("keys", "list", "--json").stdout)[0]["last_used"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("last_used was never written")


def test_keyring_compares_in_constant_time_and_remembers_lookups_briefly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SQLiteKeyStore(tmp_path / "keys.sqlite")
    now = [1000.0]
    ring = KeyRing(store, clock=lambda: now[0])
    record, token = create_key(store, "a.test", "read")
    assert ring.verify(token) == record
    assert ring.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    store.revoke(record.id, now[0])
    assert ring.verify(token) is not None  # still remembered for at most CACHE_SECONDS
    now[0] += 2.5
    assert ring.verify(token) is None
    conn = sqlite3.connect(tmp_path / "keys.sqlite")
    assert [r[0] for r in conn.execute("SELECT digest FROM keys")] == [record.digest]


def _open_at_once(opener: Callable[[Path], object], path: str, gate: Any, errors: Any) -> None:
    gate.wait()
    try:
        opener(Path(path))
    except Exception as exc:  # noqa: BLE001 - the test reports what any process raised
        errors.put(repr(exc))


def _open_events_file(path: Path) -> None:
    ensure_schema(path)
    SQLiteSink(path).close()


@pytest.mark.parametrize("opener", [SQLiteKeyStore, _open_events_file], ids=["keys", "events"])
def test_processes_opening_a_new_database_file_at_the_same_moment_all_succeed(
        tmp_path: Path, opener: Callable[[Path], object]) -> None:
    # Every worker opens keys.sqlite as it starts; a new file's switch to WAL raced between
    # them and one worker's start failed with "database is locked".
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(40):
        gate = ctx.Barrier(4)
        path = str(tmp_path / f"r{round_}" / "db.sqlite")
        procs = [ctx.Process(target=_open_at_once, args=(opener, path, gate, errors)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []


def test_keys_live_in_redis_when_nodes_share_state(start_gateway: Callable[..., Gateway],
                                                   redis_server: RedisServer) -> None:
    extra = f'[shared]\ntype = "redis"\nurl = "{redis_server.url}"\nkey_prefix = "keystest:"\n'
    a = start_gateway(sites=SITES, extra=extra)
    b = start_gateway(sites=SITES, extra=extra)
    token = a.key("a.test", "read")  # made through node a's config
    assert b.api("GET", "/api/v1/sites/a.test/summary", token).status_code == 200
    assert not (a.data_dir / "keys.sqlite").exists()
    key_id = parse_token(token)[0]  # type: ignore[index]
    assert b.cli("keys", "revoke", key_id).returncode == 0  # revoked through node b's
    deadline = time.monotonic() + 5
    while a.api("GET", "/api/v1/sites/a.test/summary", token).status_code == 200:
        assert time.monotonic() < deadline, "node a still accepts a key revoked in Redis"
        time.sleep(0.2)


def _shared(server: RedisServer, prefix: str) -> str:
    return f'[shared]\ntype = "redis"\nurl = "{server.url}"\nkey_prefix = "{prefix}"\n'


def _console(gw: Gateway, cookie: str, ip: str) -> httpx.Response:
    """GET /console/ with this cookie from this client, outside the gateway's client (whose
    cookie jar would keep what the answers set)."""
    return httpx.get(f"{gw.url}/console/", headers={"cookie": f"egw_console={cookie}", "x-forwarded-for": ip},
                     timeout=10)


def test_console_cookie_guesses_take_from_the_same_failure_bucket_as_bearer_ones(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    good = gw.key("a.test", "read")
    guess = "egk_000000000000_" + "B" * 43
    pages = [_console(gw, f"a.test:{guess}", "198.51.100.30") for _ in range(25)]
    assert [p.status_code for p in pages[:20]] == [200] * 20 and {p.status_code for p in pages[20:]} == {429}
    assert "no longer valid" in pages[0].text and 'id=key' in pages[0].text
    assert "Max-Age=0" in pages[0].headers["set-cookie"]  # the bad key is dropped from the cookie
    assert int(pages[-1].headers["retry-after"]) >= 1
    # Once limited, a valid key gets the same answer: the page no longer tells them apart.
    limited = _console(gw, f"a.test:{good}", "198.51.100.30")
    assert limited.status_code == 429 and "data-site" not in limited.text
    # The bucket is the API's too.
    assert gw.api("GET", "/api/v1/me", good, headers={"x-forwarded-for": "198.51.100.30"}).status_code == 429
    # Another client signs in as before.
    assert "data-site='a.test'" in _console(gw, f"a.test:{good}", "198.51.100.31").text
    # Many guesses in one cookie cost one token each: ten, ten, then nothing is left.
    many = "|".join(f"s{i}.test:egk_{i:012x}_" + "C" * 43 for i in range(10))
    assert [_console(gw, many, "198.51.100.32").status_code for _ in range(3)] == [200, 200, 429]
    # A Bearer failure and a sign-in failure fill the same bucket as well.
    for _ in range(19):
        assert gw.api("GET", "/api/v1/me", guess, headers={"x-forwarded-for": "198.51.100.33"}).status_code == 401
    assert httpx.post(f"{gw.url}/console/sign-in", data={"key": guess},
                      headers={"x-forwarded-for": "198.51.100.33"}).status_code == 401
    assert _console(gw, f"a.test:{guess}", "198.51.100.33").status_code == 429


def test_the_console_cookie_keeps_one_key_per_site_at_most_ten_and_drops_revoked_ones(
        start_gateway: Callable[..., Gateway]) -> None:
    sites = {f"s{i}": f'domain = "s{i}.test"\n' for i in range(11)}
    gw = start_gateway(sites=sites)
    keys = {i: gw.key(f"s{i}.test", "read") for i in range(11)}
    with httpx.Client(base_url=gw.url) as browser:
        for i in range(11):
            done = browser.post("/console/sign-in", data={"key": keys[i]})
            assert done.status_code == 303 and done.headers["location"] == f"/console/?site=s{i}.test"
        cookie = browser.cookies["egw_console"]
        assert [p.split(":")[0] for p in cookie.split("|")] == [f"s{i}.test" for i in range(10, 0, -1)]
        assert len(cookie) < 4096 and keys[0] not in cookie  # the first site fell off
        page = browser.get("/console/", params={"site": "s3.test"}).text
        assert "data-site='s3.test'" in page and page.count("<a href='/console/?site=") == 10
        assert browser.get("/console/", params={"site": "s0.test"}).status_code == 404
        # A second key for a site replaces the first, which goes on working by itself.
        newer = gw.key("s3.test", "manage")
        browser.post("/console/sign-in", data={"key": newer})
        cookie = browser.cookies["egw_console"]
        assert cookie.startswith(f"s3.test:{newer}|") and keys[3] not in cookie and cookie.count("|") == 9
        assert "data-scope='manage'" in browser.get("/console/", params={"site": "s3.test"}).text
        # A revoked key leaves the cookie at the next page; the others stay.
        assert gw.cli("keys", "revoke", parse_token(keys[5])[0]).returncode == 0  # type: ignore[index]
        time.sleep(2.5)
        page = browser.get("/console/").text
        assert "data-site='s3.test'" in page and "s5.test" not in page
        assert keys[5] not in browser.cookies["egw_console"] and browser.cookies["egw_console"].count("|") == 8
        browser.post("/console/sign-out")
        assert "egw_console" not in browser.cookies


def test_an_unreachable_key_store_answers_503_on_the_console_and_the_api(
        start_gateway: Callable[..., Gateway]) -> None:
    if redis_command() is None:
        missing(servers.REDIS_PACKAGE, "Redis server")
    base = Path(tempfile.mkdtemp(prefix="gw-redis-keys-"))
    server = RedisServer(base)
    try:
        server.start()
        gw = start_gateway(sites=SITES, extra=_shared(server, "down:"))
        token = gw.key("a.test", "manage")
        assert "data-site='a.test'" in _console(gw, f"a.test:{token}", "198.51.100.40").text
        server.stop()
        time.sleep(2.5)  # past the workers' memory of the key
        page = _console(gw, f"a.test:{token}", "198.51.100.40")
        assert page.status_code == 503, page.text
        assert page.headers["content-type"].startswith("text/html") and page.headers["retry-after"] == "5"
        assert "cannot be checked" in page.text
        assert "set-cookie" not in page.headers  # an outage does not sign anyone out
        api = gw.api("GET", "/api/v1/sites/a.test/summary", token)
        assert api.status_code == 503 and api.headers["retry-after"] == "5"
        sign_in = httpx.post(f"{gw.url}/console/sign-in", data={"key": token})
        assert sign_in.status_code == 503 and "cannot be checked" in sign_in.text
        log = gw.log()
        assert "Exception occurred" not in log and "Traceback" not in log
        assert token.rsplit("_", 1)[1] not in log
        server.start()  # back, and empty (nothing is kept on disk here): a key made now signs in
        token = gw.key("a.test", "read")
        assert "data-site='a.test'" in _console(gw, f"a.test:{token}", "198.51.100.41").text
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_failed_last_used_write_is_logged_and_the_request_still_answered(
        start_gateway: Callable[..., Gateway], redis_server: RedisServer) -> None:
    gw = start_gateway(sites=SITES, extra=_shared(redis_server, "touchfail:"))
    token = gw.key("a.test", "read")
    client = redis.Redis.from_url(redis_server.url)
    # Redis still answers reads but refuses every write (no replica to acknowledge it): the key
    # checks out, its last_used cannot be written.
    client.config_set("min-replicas-to-write", 1)
    try:
        assert gw.api("GET", "/api/v1/me", token).status_code == 200
        key_id = parse_token(token)[0]  # type: ignore[index]
        deadline = time.monotonic() + 5
        while "could not be recorded" not in gw.log():
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.1)
        line = next(x for x in gw.log().splitlines() if "could not be recorded" in x)
        assert f"key {key_id}:" in line and "NOREPLICAS" in line
        assert token.rsplit("_", 1)[1] not in gw.log()
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.close()
    assert json.loads(gw.cli("keys", "list", "--json").stdout)[0]["last_used"] is None
