"""The web console at /console/ in real headless Chromium, against the real gateway and sink:
sign-in, charts drawn from events sent to the gateway, filters, the rule editor, scopes, site
isolation, several sites in one browser, sign-out and the cookie's flags."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gatewayproc import Gateway

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
SITES = {
    "shop": 'domain = "shop.test"\n[shields]\npage_blocklist = ["/admin/*", { value = "/beta/*", report_only = true }]\n',
    "other": 'domain = "other.test"\n',
    "third": 'domain = "third.test"\n',
}


def _event(path: str, domain: str = "shop.test") -> dict[str, Any]:
    return {"n": "pageview", "u": f"https://{domain}{path}", "d": domain}


def _wait(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


@pytest.fixture
def shop(start_gateway: Callable[..., Gateway]) -> Gateway:
    gw = start_gateway(sites=SITES)
    for i in range(3):
        assert gw.post(_event(f"/p{i}"), ip=f"203.0.113.{i + 1}", ua=CHROME).json() == {"accepted": 1}
    gw.post(_event("/admin/users"), ip="203.0.113.10", ua=CHROME)
    gw.post(_event("/beta/new"), ip="203.0.113.11", ua=CHROME)  # kept, and a report-only would-drop
    for i in range(2):
        gw.post(_event(f"/b{i}"), ip="203.0.113.12", ua="curl/8.5.0")
    gw.post(_event("/o", domain="other.test"), ip="203.0.113.13", ua="curl/8.5.0")
    key = gw.key("shop.test", "read")
    _wait(lambda: (t := gw.api("GET", "/api/v1/sites/shop.test/summary", key).json()["totals"])["accepted"] == 4
          and sum(t["dropped"].values()) == 3 and t["would_drop"])
    _wait(lambda: len(gw.api("GET", "/api/v1/sites/shop.test/drops", key).json()["drops"]) == 3)
    return gw


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.errors = []  # type: ignore[attr-defined]
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    p.on("pageerror", lambda e: p.errors.append(str(e)))  # type: ignore[attr-defined]
    yield p
    context.close()


def _until(page: Any, js: str, timeout: float = 10.0) -> Any:
    """Poll a page expression from here: Playwright's wait_for_function evaluates strings with
    eval() in the page, which the console's Content-Security-Policy rightly forbids."""
    return _wait(lambda: page.evaluate(js), timeout)


def _sign_in(page: Any, gw: Gateway, key: str) -> None:
    page.goto(f"{gw.url}/console/")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("main[data-site]")
    _until(page, "document.querySelector('main').dataset.loaded")


def _datasets(page: Any, canvas: str) -> dict[str, int]:
    return page.evaluate(  # type: ignore[no-any-return]
        f"Object.fromEntries(Chart.getChart('{canvas}').data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)]))")


def test_a_bad_key_is_refused_with_a_message_and_a_good_one_signs_in(shop: Gateway, page: Any) -> None:
    page.goto(f"{shop.url}/console/")
    page.fill("#key", "egk_000000000000_" + "A" * 43)
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    assert page.context.cookies() == []
    page.errors.clear()  # the refused sign-in's 401
    _sign_in(page, shop, shop.key("shop.test", "read"))
    assert page.inner_text("header h1") == "shop.test"
    assert not page.errors, page.errors  # no script error, no Content-Security-Policy violation


def test_the_charts_and_top_lists_are_drawn_from_the_events_sent(shop: Gateway, page: Any) -> None:
    key = shop.key("shop.test", "read")
    api = shop.api("GET", "/api/v1/sites/shop.test/summary", key).json()["totals"]
    _sign_in(page, shop, key)
    drawn = _datasets(page, "chart")
    assert drawn == {"accepted": api["accepted"], **{f"dropped: {r}": n for r, n in api["dropped"].items()}}
    assert drawn == {"accepted": 4, "dropped: bot": 2, "dropped: site_page_blocklist": 1}
    assert _datasets(page, "would-chart") == {"would drop: site_page_blocklist": 1}
    assert page.evaluate("Chart.getChart('chart').options.scales.y.stacked") is True
    assert "/admin/users" in page.inner_text("#top-pages") and "user_agent" in page.inner_text("#top-evidence")
    # the 7-day view draws the same totals in daily buckets
    page.click("button[data-range='604800']")
    _until(page, "Chart.getChart('chart').data.labels.length >= 7")
    assert _datasets(page, "chart") == drawn


def test_the_drops_table_filters_by_reason_and_evidence(shop: Gateway, page: Any) -> None:
    _sign_in(page, shop, shop.key("shop.test", "read"))
    _until(page, "document.querySelectorAll('#drops tbody tr').length === 3")
    page.select_option("#f-reason", "bot")
    page.click("#f-apply")
    _until(page, "document.querySelectorAll('#drops tbody tr').length === 2")
    reasons = page.eval_on_selector_all("#drops tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    assert reasons == ["bot", "bot"]
    page.select_option("#f-reason", "")
    page.fill("#f-evidence", "no-such-label")
    page.click("#f-apply")
    _until(page, "document.querySelectorAll('#drops tbody tr').length === 0")


def test_a_rule_saved_in_the_editor_after_a_dry_run_drops_the_next_event(shop: Gateway, page: Any) -> None:
    _sign_in(page, shop, shop.key("shop.test", "manage"))
    _until(page, "document.getElementById('rules').value.includes('/admin/*')")
    rules = json.loads(page.input_value("#rules"))
    rules["page_blocklist"].append("/p0")
    page.fill("#rules", json.dumps(rules))
    page.click("#dry-run")
    _until(page, "document.querySelector('main').dataset.dryRun")
    assert json.loads(page.get_attribute("main", "data-dry-run"))["would_drop"] == 1
    assert "/p0" in page.inner_text("#dry-result")
    # a bad rule is refused with the field named, and nothing is saved
    page.fill("#rules", json.dumps({**rules, "ip_blocklist": ["10.0.0.0/33"]}))
    page.click("#save")
    page.wait_for_selector("#rule-errors li")
    assert "shields.ip_blocklist[0]" in page.inner_text("#rule-errors")
    assert shop.post(_event("/p0"), ip="203.0.113.40", ua=CHROME).json() == {"accepted": 1}
    page.fill("#rules", json.dumps(rules))
    page.click("#save")
    page.wait_for_selector("#saved:has-text('Saved')")
    assert shop.post(_event("/p0"), ip="203.0.113.41", ua=CHROME).json() == {"accepted": 0, "dropped": 1}


def test_a_read_key_gets_no_editor_and_its_changes_are_refused(shop: Gateway, page: Any) -> None:
    _sign_in(page, shop, shop.key("shop.test", "read"))
    assert page.query_selector("#editor") is None
    status = page.evaluate("""fetch('/api/v1/sites/shop.test/shields', {method: 'PUT', credentials: 'same-origin',
        headers: {'content-type': 'application/json'}, body: JSON.stringify({shields: {}})}).then(r => r.status)""")
    assert status == 403


def test_a_signed_in_site_never_sees_another(shop: Gateway, page: Any) -> None:
    _sign_in(page, shop, shop.key("shop.test", "manage"))
    statuses = page.evaluate("""Promise.all(['summary', 'drops', 'events', 'shields'].map(p =>
        fetch('/api/v1/sites/other.test/' + p, {credentials: 'same-origin'}).then(r => r.status)))""")
    assert statuses == [404, 404, 404, 404]
    assert "other.test" not in page.content()


def _status(page: Any, method: str, path: str, body: Any = None) -> int:
    init = {"method": method, "credentials": "same-origin", "headers": {"content-type": "application/json"}}
    if body is not None:
        init["body"] = json.dumps(body)
    return page.evaluate(f"fetch({json.dumps(path)}, {json.dumps(init)}).then(r => r.status)")  # type: ignore[no-any-return]


def test_an_owner_of_two_sites_signs_in_with_each_and_switches_between_them(shop: Gateway, page: Any) -> None:
    shop_read, other_manage = shop.key("shop.test", "read"), shop.key("other.test", "manage")
    _wait(lambda: shop.api("GET", "/api/v1/sites/other.test/summary", other_manage).json()["totals"]["dropped"])
    _wait(lambda: shop.api("GET", "/api/v1/sites/other.test/drops", other_manage).json()["drops"])
    _sign_in(page, shop, shop_read)
    page.click("nav.sites summary")  # "Add a site", on the dashboard
    page.fill("#add-key", other_manage)
    page.click("#add-site")
    page.wait_for_selector("main[data-site='other.test']")
    _until(page, "document.querySelector('main').dataset.loaded")
    assert page.inner_text("header h1") == "other.test" and page.query_selector("#editor") is not None
    assert page.eval_on_selector_all("nav.sites a", "as => as.map(a => a.textContent)") == ["other.test", "shop.test"]
    assert _datasets(page, "chart") == {"accepted": 0, "dropped: bot": 1}  # other.test's events only
    _until(page, "document.querySelectorAll('#drops tbody tr').length === 1")
    assert "/o" in page.inner_text("#drops tbody") and "/admin/users" not in page.content()
    assert [c["name"] for c in page.context.cookies()] == ["egw_console"]  # one cookie holds both keys

    page.click("nav.sites a:text-is('shop.test')")
    page.wait_for_selector("main[data-site='shop.test']")
    _until(page, "document.querySelector('main').dataset.loaded")
    assert page.query_selector("#editor") is None  # shop.test's key is a read key
    assert _datasets(page, "chart") == {"accepted": 4, "dropped: bot": 2, "dropped: site_page_blocklist": 1}
    assert page.get_attribute("nav.sites a[aria-current=page]", "href") == "/console/?site=shop.test"

    # Each site's requests go with that site's key only: the manage key of other.test gives
    # shop.test no write, and a site without a key in the cookie looks like one that does not exist.
    assert _status(page, "PUT", "/api/v1/sites/shop.test/shields", {"shields": {}}) == 403
    assert _status(page, "PUT", "/api/v1/sites/other.test/shields", {"shields": {"page_blocklist": ["/x"]}}) == 200
    assert (shop.base / "sites" / "shop.toml").read_text() == SITES["shop"]
    assert "/x" in (shop.base / "sites" / "other.toml").read_text()
    third, missing = (_status(page, "GET", f"/api/v1/sites/{d}/summary") for d in ("third.test", "nowhere.test"))
    assert third == missing == 404
    for domain in ("third.test", "nowhere.test"):
        page.goto(f"{shop.url}/console/?site={domain}")
        assert "holds no key for" in page.inner_text("[role=alert]") and page.query_selector("main[data-site]") is None

    page.goto(f"{shop.url}/console/")
    page.wait_for_selector("main[data-site]")
    page.click("#sign-out")  # forgets both
    page.wait_for_selector("#key")
    assert page.context.cookies() == []
    assert [_status(page, "GET", f"/api/v1/sites/{d}/summary") for d in ("shop.test", "other.test")] == [401, 401]


def test_sign_out_clears_the_cookie_and_asks_for_the_key_again(shop: Gateway, page: Any) -> None:
    _sign_in(page, shop, shop.key("shop.test", "read"))
    assert [c["name"] for c in page.context.cookies()] == ["egw_console"]
    page.click("#sign-out")
    page.wait_for_selector("#key")
    assert page.context.cookies() == []
    assert page.evaluate("fetch('/api/v1/me', {credentials: 'same-origin'}).then(r => r.status)") == 401


def test_the_cookie_is_httponly_strict_and_secure_behind_https(shop: Gateway) -> None:
    key = shop.key("shop.test", "read")
    with httpx.Client(base_url=shop.url, follow_redirects=False) as c:
        plain = c.post("/console/sign-in", data={"key": key})
        tls = c.post("/console/sign-in", data={"key": key}, headers={"x-forwarded-proto": "https"})
        page = c.get("/console/")
    assert plain.status_code == tls.status_code == 303
    for answer in (plain, tls):
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in plain.headers["set-cookie"] and "Secure" in tls.headers["set-cookie"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert key not in page.text
