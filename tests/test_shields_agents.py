"""The `spoofed_agent` shield: what a User-Agent claims, and each signal that contradicts it.

The header sets are the shared helper's (tests/browser_headers.py), which tests/test_real_browsers.py
holds against real Chromium and Firefox; each test here takes one thing away or changes one
value, as a library or a disguised bot would."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from browser_headers import browser_headers
from gateway.ingest.clients import HEADERS, read_browser_headers
from shields.agents import SIGNALS, SpoofedAgentShield
from shields.claims import BLINK, GECKO, WEBKIT, claim_of
from shields.model import ClientContext, DropReason, Event, SiteConfig

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
                  "Mobile Safari/537.36")
EDGE = CHROME + " Edg/131.0.0.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
          "Safari/605.1.15")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
CRIOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1")
WEBVIEW = ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36")
OLD_SAFARI = IPHONE.replace("17_4", "15_8").replace("Version/17.4", "Version/15.6")
BROWSERS = [CHROME, CHROME_ANDROID, EDGE, FIREFOX, SAFARI, IPHONE, CRIOS, WEBVIEW, OLD_SAFARI]
SHIELD = SpoofedAgentShield()
SITE = SiteConfig(domain="site.test")
HTTPS_PAGE = "https://site.test/pricing"


def request(ua: str, headers: dict[str, str], *, proxy: bool = True, tls: bool = False,
            page: str = HTTPS_PAGE) -> tuple[Event, ClientContext]:
    """The event and client the gateway would build for these headers, behind a TLS proxy by
    default (X-Forwarded-Proto: https, as the shipped nginx example sends)."""
    given = {"x-forwarded-proto": "https", "host": "collector.test", **{k.lower(): v for k, v in headers.items()}}
    values = tuple(given.get(h) for h in HEADERS[5:])
    client = ClientContext(ipaddress.ip_address("203.0.113.9"), ua, headers=read_browser_headers(values, proxy, tls))
    return Event(name="pageview", domain="site.test", url=page, hostname="site.test", pathname="/"), client


def signal(ua: str, headers: dict[str, str], **kw: object) -> str | None:
    event, client = request(ua, headers, **kw)  # type: ignore[arg-type]
    verdict = SHIELD.check(event, client, SITE)
    if verdict is None:
        return None
    assert verdict.reason is DropReason.SPOOFED_AGENT and verdict.evidence in SIGNALS
    return verdict.evidence


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


@pytest.mark.parametrize(("ua", "engine", "version", "platform", "mobile"), [
    (CHROME, BLINK, 131, "Windows", False),
    (CHROME_ANDROID, BLINK, 131, "Android", True),
    (EDGE, BLINK, 131, "Windows", False),
    (FIREFOX, GECKO, 128, "Linux", False),
    ("Mozilla/5.0 (Android 14; Mobile; rv:131.0) Gecko/131.0 Firefox/131.0", GECKO, 131, "Android", True),
    (SAFARI, WEBKIT, 1704, "macOS", False),
    (IPHONE, WEBKIT, 1704, "iOS", True),
    (CRIOS, WEBKIT, 1704, "iOS", True),  # every iOS browser is WebKit, versioned as iOS
    (WEBVIEW, BLINK, 131, "Android", True),
])
def test_the_claim_is_read_from_the_user_agent(ua: str, engine: str, version: int, platform: str, mobile: bool) -> None:
    claim = claim_of(ua)
    assert (claim.engine, claim.version, claim.platform, claim.mobile) == (engine, version, platform, mobile)
    assert claim.webview == (ua == WEBVIEW)


@pytest.mark.parametrize("ua", [
    "curl/8.5.0", "python-requests/2.32.3", "", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 "
    "Safari/537.36 Edge/18.19041",
])
def test_tools_bots_and_engines_without_known_rules_claim_no_browser(ua: str) -> None:
    assert claim_of(ua).engine == ""
    assert signal(ua, {}) is None  # the bot step judges these


@given(st.text(max_size=300))
def test_reading_a_claim_never_raises(ua: str) -> None:
    claim_of(ua)


@pytest.mark.parametrize("ua", BROWSERS)
def test_what_each_browser_sends_passes(ua: str) -> None:
    assert signal(ua, browser_headers(ua, HTTPS_PAGE)) is None
    assert signal(ua, browser_headers(ua, HTTPS_PAGE, beacon=True)) is None
    # over plain http to a non-loopback host, no Fetch Metadata and no hints: still a browser
    assert signal(ua, browser_headers(ua, "http://site.test/", secure=False), proxy=False, page="http://site.test/") is None


@pytest.mark.parametrize("ua", BROWSERS)
def test_a_library_with_a_browsers_user_agent_is_spoofed(ua: str) -> None:
    assert signal(ua, {}) == "no_accept_language"
    assert signal(ua, {"accept-language": "en-US", "accept": "*/*"}) == "no_accept_encoding"  # urllib, curl


@pytest.mark.parametrize("ua", [CHROME, CHROME_ANDROID, EDGE, FIREFOX, SAFARI, IPHONE, CRIOS, WEBVIEW])
def test_dressing_with_origin_referer_and_language_is_not_enough(ua: str) -> None:
    dressed = {"accept-language": "en-US,en;q=0.9", "accept-encoding": "gzip, deflate, br", "origin": "https://site.test",
               "referer": "https://site.test/pricing"}
    assert signal(ua, dressed) == "no_sec_fetch"
    assert signal(ua, without(dressed, "origin")) == "no_origin"


def test_fetch_metadata_values_must_be_a_scripts() -> None:
    good = browser_headers(CHROME, HTTPS_PAGE)
    for name, value in (("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document"), ("sec-fetch-site", "none")):
        assert signal(CHROME, {**good, name: value}) == "bad_sec_fetch", name


def test_fetch_metadata_is_only_required_where_browsers_send_it() -> None:
    bare = without(browser_headers(FIREFOX, HTTPS_PAGE), "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
    assert signal(FIREFOX, bare) == "no_sec_fetch"  # behind a TLS proxy
    assert signal(FIREFOX, bare, proxy=False, tls=True) == "no_sec_fetch"  # TLS to the gateway itself
    assert signal(FIREFOX, {**bare, "host": "127.0.0.1:8000"}, proxy=False) == "no_sec_fetch"  # loopback is trustworthy
    assert signal(FIREFOX, {**bare, "x-forwarded-proto": ""}, page="http://site.test/") is None  # proxy did not say
    assert signal(FIREFOX, {**bare, "x-forwarded-proto": ""}) == "no_sec_fetch"  # ... but the page is https
    # Safari before 16.4 and Firefox before 90 sent no Fetch Metadata
    assert signal(OLD_SAFARI, without(browser_headers(OLD_SAFARI, HTTPS_PAGE), "sec-fetch-site")) is None


def test_an_https_pages_event_over_plain_http_is_mixed_content_no_browser_sends() -> None:
    headers = browser_headers(CHROME, HTTPS_PAGE, secure=False)
    assert signal(CHROME, {**headers, "host": "collector.test"}, proxy=False) == "https_page_over_http"
    assert signal(CHROME, {**headers, "x-forwarded-proto": "http"}) == "https_page_over_http"
    assert signal(CHROME, headers, proxy=False, page="http://site.test/") is None


def test_chromium_must_send_client_hints_that_agree_with_its_user_agent() -> None:
    good = browser_headers(CHROME, HTTPS_PAGE)
    assert signal(CHROME, without(good, "sec-ch-ua")) == "no_client_hints"
    assert signal(CHROME, without(good, "sec-ch-ua-platform")) == "no_client_hints"
    older_engine = {**good, "sec-ch-ua": '"Chromium";v="120", "Not_A Brand";v="24"'}
    assert signal(CHROME, older_engine) == "client_hints_mismatch"  # a headless 120 claiming 131
    assert signal(CHROME, {**good, "sec-ch-ua-platform": '"Linux"'}) == "client_hints_mismatch"
    assert signal(CHROME, {**good, "sec-ch-ua-mobile": "?1"}) == "client_hints_mismatch"
    assert signal(CHROME_ANDROID, {**browser_headers(CHROME_ANDROID, HTTPS_PAGE), "sec-ch-ua-mobile": "?0"}) == \
        "client_hints_mismatch"


def test_client_hints_rules_leave_real_exceptions_alone() -> None:
    desktop_mode = CHROME_ANDROID.replace("Linux; Android 10; K", "X11; Linux x86_64").replace(" Mobile", "")
    asked = {**browser_headers(desktop_mode, HTTPS_PAGE), "sec-ch-ua-platform": '"Android"'}
    assert signal(desktop_mode, asked) is None  # Chrome on Android showing the desktop site
    assert signal(WEBVIEW, without(browser_headers(WEBVIEW, HTTPS_PAGE), "sec-ch-ua")) is None
    old = CHROME.replace("Chrome/131", "Chrome/92")
    assert signal(old, without(browser_headers(old, HTTPS_PAGE), "sec-ch-ua")) is None  # before 93


@pytest.mark.parametrize("ua", [FIREFOX, SAFARI, IPHONE, CRIOS])
def test_client_hints_from_a_non_chromium_user_agent_are_a_chromium_in_disguise(ua: str) -> None:
    chromium = browser_headers(CHROME, HTTPS_PAGE)
    disguised = {**browser_headers(ua, HTTPS_PAGE), **{k: v for k, v in chromium.items() if k.startswith("sec-ch")}}
    assert signal(ua, disguised) == "client_hints_from_other_engine"


@pytest.mark.parametrize("ua", BROWSERS)
def test_a_library_default_encoding_is_no_browser_since_brotli(ua: str) -> None:
    """Chrome 50+, Firefox 44+ and Safari 11+ offer br on every https request; libraries by default
    do not (requests, httpx, aiohttp, urllib, wget: "gzip, deflate" or nothing)."""
    headers = browser_headers(ua, HTTPS_PAGE)
    assert "br" in headers["accept-encoding"]
    assert signal(ua, {**headers, "accept-encoding": "gzip, deflate"}) == "no_brotli"
    assert signal(ua, {**headers, "accept-encoding": "gzip;q=1.0, br;q=0.5"}) is None


def test_brotli_is_not_asked_of_browsers_before_it_or_over_http() -> None:
    for ua in (CHROME.replace("Chrome/131", "Chrome/49"), FIREFOX.replace("rv:128.0", "rv:43.0").replace("Firefox/128", "Firefox/43"),
               IPHONE.replace("17_4", "10_3").replace("Version/17.4", "Version/10.0")):
        headers = browser_headers(ua, HTTPS_PAGE)
        assert "br" not in headers["accept-encoding"], ua
        assert signal(ua, headers) is None, ua
    plain = browser_headers(CHROME, "http://site.test/", secure=False)
    assert signal(CHROME, {**plain, "host": "collector.test"}, proxy=False, page="http://site.test/") is None


@pytest.mark.parametrize("ua", BROWSERS)
def test_http_1_1_through_a_proxy_offering_http_2_is_a_library(ua: str) -> None:
    """Browsers speak HTTP/2 over TLS whenever the server offers it; requests, urllib, aiohttp,
    node's fetch and wget speak HTTP/1.1. Only a trusted proxy's X-Forwarded-Http-Version says."""
    headers = browser_headers(ua, HTTPS_PAGE)
    assert signal(ua, {**headers, "x-forwarded-http-version": "HTTP/1.1"}) == "no_http2"
    assert signal(ua, {**headers, "x-forwarded-http-version": "HTTP/1.0"}) == "no_http2"
    for spoken in ("HTTP/2.0", "HTTP/3.0", "2", "", "SPDY/3"):
        assert signal(ua, {**headers, "x-forwarded-http-version": spoken}) is None, spoken
    assert signal(ua, headers) is None  # a proxy that does not say


def test_http_version_counts_only_from_a_trusted_proxy_over_tls() -> None:
    headers = {**browser_headers(CHROME, HTTPS_PAGE), "x-forwarded-http-version": "HTTP/1.1"}
    assert signal(CHROME, {**headers, "host": "127.0.0.1"}, proxy=False, tls=True) is None  # a client's own word
    old = CHROME.replace("Chrome/131", "Chrome/49")
    assert signal(old, {**browser_headers(old, HTTPS_PAGE), "x-forwarded-http-version": "HTTP/1.1"}) is None
    plain = {**browser_headers(CHROME, "http://site.test/", secure=False), "x-forwarded-proto": "http",
             "x-forwarded-http-version": "HTTP/1.1"}
    assert signal(CHROME, plain, page="http://site.test/") is None  # no TLS, no ALPN


OLD_CLAIMS = [CHROME.replace("Chrome/131", "Chrome/69"), CHROME.replace("Chrome/131", "Chrome/52"),
              FIREFOX.replace("rv:128.0", "rv:62.0").replace("Firefox/128", "Firefox/62"),
              SAFARI.replace("Version/17.4", "Version/12.0"),
              IPHONE.replace("17_4", "12_0").replace("Version/17.4", "Version/12.0")]


@pytest.mark.parametrize("ua", OLD_CLAIMS)
def test_tls_1_3_from_a_browser_older_than_tls_1_3_is_a_library(ua: str) -> None:
    """Chrome 70, Firefox 63 and Safari 12.1 were the first to negotiate RFC 8446 TLS 1.3; a
    client that negotiated it with the proxy while claiming an older browser is not that browser
    (Python's ssl, curl, node and Go speak TLS 1.3 by default). Claiming an old browser to skip
    the Fetch Metadata and client hint checks no longer passes."""
    headers = browser_headers(ua, HTTPS_PAGE)
    assert signal(ua, headers) is None  # a proxy that does not say
    assert signal(ua, {**headers, "x-forwarded-tls-version": "TLSv1.2"}) is None  # what that browser spoke
    assert signal(ua, {**headers, "x-forwarded-tls-version": "TLSv1.3"}) == "tls13_from_old_browser"
    assert signal(ua, {**headers, "x-forwarded-tls-version": "1.3"}) == "tls13_from_old_browser"


@pytest.mark.parametrize("ua", BROWSERS)
def test_tls_1_3_from_browsers_that_speak_it_is_fine(ua: str) -> None:
    headers = browser_headers(ua, HTTPS_PAGE)
    for spoken in ("TLSv1.3", "TLSv1.2", "", "SSLv3", "TLSv9"):
        assert signal(ua, {**headers, "x-forwarded-tls-version": spoken}) is None, spoken
    first = {BLINK: CHROME.replace("Chrome/131", "Chrome/70"),
             GECKO: FIREFOX.replace("rv:128.0", "rv:63.0").replace("Firefox/128", "Firefox/63"),
             WEBKIT: SAFARI.replace("Version/17.4", "Version/12.1")}
    for engine, first_ua in first.items():
        assert claim_of(first_ua).engine == engine
        assert signal(first_ua, {**browser_headers(first_ua, HTTPS_PAGE), "x-forwarded-tls-version": "TLSv1.3"}) is None


def test_tls_version_counts_only_from_a_trusted_proxy() -> None:
    old = OLD_CLAIMS[0]
    headers = {**browser_headers(old, HTTPS_PAGE), "x-forwarded-tls-version": "TLSv1.3", "host": "127.0.0.1"}
    assert signal(old, headers, proxy=False, tls=True) is None  # a client's own word


def test_without_request_headers_nothing_is_judged() -> None:
    event, client = request(CHROME, {})
    client.headers = None  # a client not seen in an HTTP request
    assert SHIELD.check(event, client, SITE) is None


def test_every_signal_is_reachable_and_the_set_is_bounded() -> None:
    seen = set()
    good = browser_headers(CHROME, HTTPS_PAGE)
    cases = [({}, {}), ({"accept-language": "en"}, {}), (browser_headers(CHROME, HTTPS_PAGE, secure=False),
                                                        {"proxy": False, "page": HTTPS_PAGE}),
             (without(good, "origin"), {}), ({**good, "accept-encoding": "gzip, deflate"}, {}),
             ({**good, "x-forwarded-http-version": "HTTP/1.1"}, {}),
             (without(good, "sec-fetch-mode"), {}),
             ({**good, "sec-fetch-dest": "document"}, {}), (without(good, "sec-ch-ua"), {}),
             ({**good, "sec-ch-ua-mobile": "?1"}, {})]
    for headers, kw in cases:
        seen.add(signal(CHROME, {**headers, "host": "collector.test"}, **kw))
    seen.add(signal(FIREFOX, {**browser_headers(FIREFOX, HTTPS_PAGE), "sec-ch-ua": good["sec-ch-ua"]}))
    old = OLD_CLAIMS[0]
    seen.add(signal(old, {**browser_headers(old, HTTPS_PAGE), "x-forwarded-tls-version": "TLSv1.3"}))
    assert seen == set(SIGNALS)
