"""Real browsers and real HTTP libraries through a TLS-terminating nginx, as in production.

- Debian's Chromium (Playwright) and Firefox ESR (headless) load pages embedding our tracker and
  Plausible's npm tracker on https://site.test: every event is kept.
- requests, httpx, urllib, aiohttp, curl, wget and node's fetch post pageviews with Chrome,
  Firefox, Safari and Android Chrome User-Agents, bare and dressed with Origin, Referer and
  Accept-Language: at least 99 % are dropped as spoofed_agent.
- Headless Chromium whose User-Agent disagrees with its engine: dropped.
- What the real browsers sent is what tests/browser_headers.py says they send.

Everything runs on loopback; nothing is downloaded but the npm tracker, from the npm registry.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_headers import browser_headers
from gatewayproc import ROOT, Gateway, metric_value, write_config
from prerequisites import unavailable
from tls_front import (CHROMIUM_ARGS, LIBRARIES, TLSFront, chromium_path, chromium_user_agent, firefox,
                       firefox_version, missing_programs, send_with, tls_front)

SITE = "site.test"
PLAUSIBLE_JS = ROOT / "tracker_js" / "node_modules" / "@plausible-analytics" / "tracker" / "plausible.js"
UAS = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "firefox": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
              "Safari/605.1.15",
    "android": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
               "Mobile Safari/537.36",
}
DRESSING = {"Origin": f"https://{SITE}", "Referer": f"https://{SITE}/pricing", "Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, TLSFront]]:
    missing = missing_programs()
    if missing:
        unavailable(f"REAL-BROWSER TESTS CANNOT RUN: {missing} not installed")
    if not PLAUSIBLE_JS.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT / "tracker_js", check=True, capture_output=True)
    base = tmp_path_factory.mktemp("real")
    gw = Gateway(write_config(base / "gw", sites={"site": f'domain = "{SITE}"\n'})).start()
    try:
        with tls_front(gw.port, base / "tls") as tls:
            (tls.www / "plausible.js").write_bytes(PLAUSIBLE_JS.read_bytes())
            yield gw, tls
    finally:
        gw.close()


def our_page(tls: TLSFront, name: str) -> str:
    script = tls.url("collector.test", "/js/script.js")
    return tls.page(name, f'<!doctype html><title>{name}</title><script defer src="{script}" '
                          f'data-domain="{SITE}" data-api="{tls.endpoint}"></script><p>{name}</p>')


def plausible_page(tls: TLSFront, name: str) -> str:
    init = json.dumps({"domain": SITE, "endpoint": tls.endpoint})
    return tls.page(name, f'<!doctype html><title>{name}</title><script type="module">'
                          f'import {{ init }} from "/plausible.js"; init({init});</script><p>{name}</p>')


def wait_rows(gw: Gateway, path: str, n: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
    return gw.wait_rows(n, "pathname = ?", (path,), timeout=timeout)


def dropped(gw: Gateway, evidence: str | None = None) -> float:
    text = gw.client.get("/metrics").text
    if evidence is None:
        return metric_value(text, "gateway_events_dropped_total", site=SITE, reason="spoofed_agent") or 0.0
    return metric_value(text, "gateway_events_dropped_by_evidence_total", site=SITE, reason="spoofed_agent",
                        evidence=evidence) or 0.0


# --- real browsers: every event kept ---------------------------------------------------------------


def test_chromium_events_from_both_trackers_are_kept(front: tuple[Gateway, TLSFront]) -> None:
    from playwright.sync_api import sync_playwright

    gw, tls = front
    with sync_playwright() as p:
        probe = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        ua = chromium_user_agent(probe.version)
        probe.close()
        # The flag, not only the context's user_agent: keepalive requests that outlive a page are
        # sent by the browser process, which knows only the flag.
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=[*CHROMIUM_ARGS, f"--user-agent={ua}"])
        try:
            ctx = browser.new_context(user_agent=ua, ignore_https_errors=True)
            # What a person's browser says; the automation marker is the bot step's test, not this one's.
            ctx.add_init_script("Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => false})")
            for page_url, path in ((our_page(tls, "chromium-ours.html"), "/chromium-ours.html"),
                                   (plausible_page(tls, "chromium-plausible.html"), "/chromium-plausible.html")):
                page = ctx.new_page()
                page.goto(page_url)
                assert wait_rows(gw, path), (path, gw.log()[-2000:])
                page.close()
        finally:
            browser.close()
    sent = [h for h in tls.captured() if h["user-agent"] == ua]
    assert len(sent) >= 2 and dropped(gw) == 0, sent
    assert all(h["sec-fetch-mode"] == "cors" and h["sec-ch-ua"] for h in sent)
    # the shared helper says what this Chromium says, for every header the gateway judges
    model = browser_headers(ua, tls.url(SITE))
    for h in sent:
        for name in ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-ch-ua-mobile",
                     "sec-ch-ua-platform", "accept"):
            assert h[name] == model[name], (name, h[name], model[name])
        assert h["accept-language"] and h["accept-encoding"].startswith("gzip, deflate")
        assert f'"Chromium";v="{ua.split("Chrome/")[1].split(".")[0]}"' in h["sec-ch-ua"]


def test_firefox_events_from_both_trackers_are_kept(front: tuple[Gateway, TLSFront]) -> None:
    gw, tls = front
    before = dropped(gw)
    for page_url, path in ((our_page(tls, "firefox-ours.html"), "/firefox-ours.html"),
                           (plausible_page(tls, "firefox-plausible.html"), "/firefox-plausible.html")):
        with firefox(page_url, tls.base, tls.ca_pem):
            assert wait_rows(gw, path, timeout=60), (path, gw.log()[-2000:])
    sent = [h for h in tls.captured() if "Firefox/" in h["user-agent"]]
    assert len(sent) >= 2 and dropped(gw) == before, sent
    model = browser_headers(sent[0]["user-agent"], tls.url(SITE))
    assert f"Firefox/{firefox_version().split('.')[0]}." in sent[0]["user-agent"]
    for h in sent:
        for name in ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "accept"):
            assert h[name] == model[name], (name, h[name], model[name])
        assert h["accept-language"] and "gzip" in h["accept-encoding"] and not h["sec-ch-ua"]


# --- headless Chromium whose User-Agent disagrees with its engine -------------------------------------


def test_headless_chromium_claiming_another_version_or_platform_is_dropped(front: tuple[Gateway, TLSFront]) -> None:
    from playwright.sync_api import sync_playwright

    gw, tls = front
    claims = [UAS["chrome"].replace("Chrome/131", "Chrome/120"), UAS["chrome"], UAS["android"]]
    before = dropped(gw)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            for i, ua in enumerate(claims):
                ctx = browser.new_context(user_agent=ua, ignore_https_errors=True)
                ctx.add_init_script("Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => false})")
                page = ctx.new_page()
                with page.expect_response(lambda r: r.url.endswith("/api/event")) as answer:
                    page.goto(our_page(tls, f"spoof-{i}.html"))
                assert answer.value.json() == {"accepted": 0, "dropped": 1}, ua
                ctx.close()
        finally:
            browser.close()
    # each page's pageview, and the engagement event its close sends, were dropped
    assert dropped(gw) - before >= len(claims)
    assert all(wait_rows(gw, f"/spoof-{i}.html", timeout=0.5) == [] for i in range(len(claims)))
    assert dropped(gw, "client_hints_mismatch") + dropped(gw, "no_client_hints") >= len(claims)


# --- HTTP libraries with browser User-Agents ---------------------------------------------------------------


def test_http_libraries_with_browser_user_agents_are_dropped(front: tuple[Gateway, TLSFront]) -> None:
    gw, tls = front
    url = f"https://127.0.0.1:{tls.port}/api/event"
    before = dropped(gw)
    answers: Counter[str] = Counter()
    sent = 0
    for lib in LIBRARIES:
        for name, ua in UAS.items():
            for dressed in (False, True):
                path = f"/lib/{lib}/{name}/{'dressed' if dressed else 'bare'}"
                body = json.dumps({"n": "pageview", "u": f"https://{SITE}{path}", "d": SITE}).encode()
                headers = {"User-Agent": ua, "Content-Type": "text/plain", **(DRESSING if dressed else {})}
                answers[send_with(lib, url, body, headers, tls.ca_pem)] += 1
                sent += 1
    assert sent == 56
    rate = (dropped(gw) - before) / sent
    assert rate >= 0.99, (rate, answers)
    assert answers == Counter({'{"accepted":0,"dropped":1}': sent}), answers
    time.sleep(0.3)
    assert gw.rows("pathname LIKE '/lib/%'") == []
    for evidence in ("no_accept_language", "no_http2"):
        assert dropped(gw, evidence) > 0, evidence


OLD_UAS = {  # browsers from before HTTP/2 and Fetch Metadata, whose claims skip those checks
    "chrome 49": UAS["chrome"].replace("Chrome/131", "Chrome/49"),
    "firefox 35": UAS["firefox"].replace("rv:133.0", "rv:35.0").replace("Firefox/133", "Firefox/35"),
}


def test_http_libraries_claiming_browsers_older_than_tls_1_3_are_dropped(front: tuple[Gateway, TLSFront]) -> None:
    """Claiming a browser from before 2016 skips the HTTP/2, brotli, Origin, Fetch Metadata and
    client hint checks; the libraries still negotiate TLS 1.3 with nginx, which those browsers
    could not."""
    gw, tls = front
    url = f"https://127.0.0.1:{tls.port}/api/event"
    before, before_tls = dropped(gw), dropped(gw, "tls13_from_old_browser")
    sent = 0
    for lib in LIBRARIES:
        for name, ua in OLD_UAS.items():
            body = json.dumps({"n": "pageview", "u": f"https://{SITE}/old/{lib}/{name}", "d": SITE}).encode()
            headers = {"User-Agent": ua, "Content-Type": "text/plain", "Accept-Encoding": "gzip, deflate", **DRESSING}
            assert send_with(lib, url, body, headers, tls.ca_pem) == '{"accepted":0,"dropped":1}', (lib, name)
            sent += 1
    assert dropped(gw) - before == sent
    assert dropped(gw, "tls13_from_old_browser") - before_tls == sent
    assert gw.rows("pathname LIKE '/old/%'") == []


def test_a_library_sending_what_a_browser_sends_is_not_told_apart(front: tuple[Gateway, TLSFront]) -> None:
    """The evasion that remains (docs/shields.md): a client that speaks HTTP/2 and copies a real
    browser's whole header set, consistent with its User-Agent, passes this step; the others still
    apply. The same copy over HTTP/1.1 is dropped."""
    gw, tls = front
    url = f"https://127.0.0.1:{tls.port}/api/event"
    ua = UAS["chrome"]
    headers = {k.title(): v for k, v in browser_headers(ua, f"https://{SITE}/").items()}
    body = json.dumps({"n": "pageview", "u": f"https://{SITE}/lib/copied", "d": SITE}).encode()
    assert send_with("httpx", url, body, headers, tls.ca_pem) == '{"accepted":0,"dropped":1}'
    assert dropped(gw, "no_http2") >= 1
    assert send_with("curl", url, body, headers, tls.ca_pem) == '{"accepted":1}'
