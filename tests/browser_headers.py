"""The headers a browser adds to a tracker's request: the one helper for every test, benchmark
and load test that sends a browser's User-Agent.

A request with a browser's User-Agent and without these is not a browser, and the gateway's
`spoofed_agent` step drops it. The values follow what Debian's Chromium and Firefox ESR send
(tests/test_real_browsers.py compares this helper with their real requests through a TLS proxy)
and the browsers' documented behaviour for Safari: Fetch Metadata (`Sec-Fetch-*`) and
Chromium's client hints only to potentially trustworthy URLs (https, or a loopback host),
`Origin` on every POST, `Accept-Language` and `Accept-Encoding` always.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from shields.claims import BLINK, GECKO, WEBKIT, claim_of

__all__ = ["browser_headers", "claims_a_browser"]

_SEC_FETCH_SINCE = {BLINK: 76, GECKO: 90, WEBKIT: 1604}
_PLATFORMS = {"Windows": '"Windows"', "macOS": '"macOS"', "Linux": '"Linux"', "Android": '"Android"',
              "Chrome OS": '"Chrome OS"'}
_LANGUAGE = {BLINK: "en-US,en;q=0.9", GECKO: "en-US,en;q=0.5", WEBKIT: "en-US,en;q=0.9"}


def claims_a_browser(ua: str | None) -> bool:
    return bool(ua) and bool(claim_of(ua or "").engine)


def _brands(ua: str, major: int) -> str:
    """sec-ch-ua as the Chromium-based browser the UA names writes it (a GREASE brand included)."""
    if "Edg/" in ua:
        own = f'"Microsoft Edge";v="{major}"'
    elif "OPR/" in ua:
        own = '"Opera";v="115"'
    elif "SamsungBrowser/" in ua:
        own = '"Samsung Internet";v="23"'
    elif "HeadlessChrome" in ua or "Chromium/" in ua:
        own = ""
    else:
        own = f'"Google Chrome";v="{major}"'
    return ", ".join(b for b in (f'"Chromium";v="{major}"', own, '"Not_A Brand";v="24"') if b)


# Content codings each engine offers over https, newest first: (since version, Accept-Encoding).
# Brotli: Chrome 50, Firefox 44, Safari 11; zstd: Chrome 123, Firefox 126 (MDN compatibility data).
_ENCODINGS = {BLINK: ((123, "gzip, deflate, br, zstd"), (50, "gzip, deflate, br"), (0, "gzip, deflate, sdch")),
              GECKO: ((126, "gzip, deflate, br, zstd"), (44, "gzip, deflate, br"), (0, "gzip, deflate")),
              WEBKIT: ((1100, "gzip, deflate, br"), (0, "gzip, deflate"))}


def _encodings(engine: str, version: int) -> str:
    return next(value for since, value in _ENCODINGS[engine] if version >= since)


def browser_headers(ua: str, page: str = "https://site.test/", *, secure: bool = True, beacon: bool = False,
                    cross_site: bool = True) -> dict[str, str]:
    """What the browser `ua` claims to be sends with a tracker's POST from `page`.

    `secure`: the gateway URL is potentially trustworthy (https, or a loopback host as in the
    tests), so Fetch Metadata and client hints are sent. `beacon`: `navigator.sendBeacon`
    (no-cors) rather than `fetch` (cors). Empty for a User-Agent that claims no browser.
    """
    claim = claim_of(ua)
    if not claim.engine:
        return {}
    parts = urlsplit(page)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"
    modern = claim.version >= _SEC_FETCH_SINCE[claim.engine]
    headers = {
        "user-agent": ua,
        "accept": "*/*",
        "accept-language": _LANGUAGE[claim.engine],
        "accept-encoding": _encodings(claim.engine, claim.version) if secure else "gzip, deflate",
        "content-type": "text/plain;charset=UTF-8",
        "origin": origin,
    }
    if secure and modern:
        headers.update({"sec-fetch-site": "cross-site" if cross_site else "same-origin",
                        "sec-fetch-mode": "no-cors" if beacon else "cors", "sec-fetch-dest": "empty"})
    if secure and claim.engine == BLINK and claim.version >= 93 and not claim.webview:
        headers.update({"sec-ch-ua": _brands(ua, claim.version), "sec-ch-ua-mobile": "?1" if claim.mobile else "?0",
                        "sec-ch-ua-platform": _PLATFORMS.get(claim.platform, '"Unknown"')})
    return headers
