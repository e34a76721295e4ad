"""Requests that contradict the browser their User-Agent claims to be: the `spoofed_agent` shield.

A User-Agent is one header anyone can write. The other headers a browser adds to a script's
`fetch` or `sendBeacon` are written by the browser itself, and page scripts cannot remove or
change them; HTTP libraries leave them out or get them wrong. So a request that claims a browser
but lacks what that browser always sends is not from that browser. `SpoofedAgentShield` holds
the request's headers (`BrowserHeaders`) against the claim (shields/claims.py). The rules, each
an evidence label, and their sources are in docs/shields.md ("Spoofed agents").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import ClassVar, Final

from shields.claims import BLINK, GECKO, WEBKIT, BrowserClaim
from shields.model import BrowserHeaders, ClientContext, DropReason, Event, SiteConfig, Verdict

__all__ = ["BROTLI_SINCE", "CLIENT_HINTS_SINCE", "HTTP2_SINCE", "SEC_FETCH_SINCE", "SIGNALS", "TLS13_SINCE",
           "SpoofedAgentShield", "hints_platform"]

# Since when each engine sends what (first versions, from MDN's compatibility data and the
# browsers' release notes; docs/shields.md gives the links).
SEC_FETCH_SINCE: Final = {BLINK: 76, GECKO: 90, WEBKIT: 1604}
CLIENT_HINTS_SINCE: Final = 93  # all three low-entropy hints by default (platform since 93); Blink only
BROTLI_SINCE: Final = {BLINK: 50, GECKO: 44, WEBKIT: 1100}  # "br" in Accept-Encoding over https
HTTP2_SINCE: Final = {BLINK: 51, GECKO: 36, WEBKIT: 900}  # HTTP/2 over TLS (ALPN) whenever the server offers it
# TLS 1.3 as RFC 8446 defines it (what a server's TLS library negotiates): Chrome 70, Firefox 63,
# Safari 12.1 (macOS 10.14.4, iOS 12.2). Earlier versions cannot negotiate it at all.
TLS13_SINCE: Final = {BLINK: 70, GECKO: 63, WEBKIT: 1201}

#: Every evidence label this shield gives, in the order it checks them.
SIGNALS: Final = ("no_accept_language", "no_accept_encoding", "https_page_over_http", "no_origin", "no_brotli",
                  "no_http2", "tls13_from_old_browser", "no_sec_fetch", "bad_sec_fetch", "client_hints_from_other_engine", "no_client_hints", "client_hints_mismatch")

# sec-ch-ua-platform values, as Chromium writes them (quoted), for the platform a UA names.
_HINT_PLATFORMS: Final = {"Windows": '"Windows"', "macOS": '"macOS"', "Linux": '"Linux"', "Android": '"Android"',
                          "Chrome OS": '"Chrome OS"'}
_BRAND_VERSION = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"(\d+)')
_FETCH_SITES: Final = frozenset({"cross-site", "same-site", "same-origin"})
_FETCH_MODES: Final = frozenset({"cors", "no-cors", "same-origin"})


def hints_platform(claim: BrowserClaim) -> str:
    """The sec-ch-ua-platform value a Blink browser sends for the platform its UA names."""
    return _HINT_PLATFORMS.get(claim.platform, "")


_BROTLI = re.compile(r"(?:^|,)[ \t]*br[ \t]*(?:;|,|$)")


def _offers_brotli(accept_encoding: str) -> bool:
    """Whether `br` is one of the offered codings (coding names are case-insensitive)."""
    return "br" in accept_encoding.lower() and _BROTLI.search(accept_encoding.lower()) is not None


def _brand_versions(sec_ch_ua: str) -> list[int]:
    return [int(v) for brand, v in _BRAND_VERSION.findall(sec_ch_ua) if "Not" not in brand]


class SpoofedAgentShield:
    """Drops a request whose headers contradict the browser its User-Agent claims to be.

    Needs no site and no parse beyond `claim_of` (kept with a remembered client), so it runs
    before anything that costs: a bare HTTP library with a browser's User-Agent is dropped
    before a geo lookup or a User-Agent parse is made for it.
    """

    reason: ClassVar[DropReason] = DropReason.SPOOFED_AGENT
    evidence: ClassVar[tuple[str, ...]] = SIGNALS

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        headers = client.headers
        if headers is None:  # not judged from an HTTP request (a server-side sender, a test)
            return None
        claim = client.claim
        if not claim.engine:
            return None
        signal = _judge(claim, headers, event.url.startswith("https:"))
        if signal is None:
            return None
        return Verdict(DropReason.SPOOFED_AGENT, detail=_DETAILS[signal], evidence=signal)

    @staticmethod
    def _signal(claim: BrowserClaim, h: BrowserHeaders, https_page: bool) -> str | None:
        if not h.accept_language:
            return "no_accept_language"
        if not h.accept_encoding or "gzip" not in h.accept_encoding:
            return "no_accept_encoding"
        # Fetch Metadata and client hints go only to potentially trustworthy URLs: https, or a
        # loopback host. When a trusted proxy did not say how the request reached it, an https
        # page tells: a browser on one can only post to an https endpoint (mixed content).
        if h.transport == "http" and https_page and not h.loopback:
            return "https_page_over_http"
        secure = h.loopback or h.transport == "https" or (h.transport is None and https_page)
        modern = claim.version >= SEC_FETCH_SINCE[claim.engine]
        if modern and not h.origin:  # on a POST, always (Fetch: "append a request Origin header")
            return "no_origin"
        if secure and claim.version >= BROTLI_SINCE[claim.engine] and not _offers_brotli(h.accept_encoding):
            return "no_brotli"
        # Only a proxy that offers HTTP/2 says which version the client spoke (docs/shields.md).
        if (h.http_version in ("1.0", "1.1") and h.transport == "https"
                and claim.version >= HTTP2_SINCE[claim.engine]):
            return "no_http2"
        # A client that negotiated TLS 1.3 with the proxy is no browser from before TLS 1.3:
        # claiming an old browser to skip the checks above costs a library its TLS 1.3.
        if h.tls_version == "1.3" and claim.version < TLS13_SINCE[claim.engine]:
            return "tls13_from_old_browser"
        if secure and modern:
            if not (h.sec_fetch_site and h.sec_fetch_mode and h.sec_fetch_dest):
                return "no_sec_fetch"
            if (h.sec_fetch_site not in _FETCH_SITES or h.sec_fetch_mode not in _FETCH_MODES
                    or h.sec_fetch_dest != "empty"):
                return "bad_sec_fetch"
        if claim.engine != BLINK:
            if h.sec_ch_ua is not None:
                return "client_hints_from_other_engine"
            return None
        if not secure or claim.version < CLIENT_HINTS_SINCE or claim.webview:
            return None
        if h.sec_ch_ua is None or h.sec_ch_ua_mobile is None or h.sec_ch_ua_platform is None:
            return "no_client_hints"
        if claim.version not in _brand_versions(h.sec_ch_ua):
            return "client_hints_mismatch"
        if h.sec_ch_ua_mobile != ("?1" if claim.mobile else "?0"):
            return "client_hints_mismatch"
        expected = hints_platform(claim)
        # Chrome on Android asked for the desktop site says Linux in the UA and Android in the hint.
        if expected and h.sec_ch_ua_platform != expected and not (
                claim.platform == "Linux" and h.sec_ch_ua_platform == '"Android"'):
            return "client_hints_mismatch"
        return None


# The signal depends only on the claim and the headers, and most visitors share both with
# others (one browser version, one language): a bounded memo of the answers.
_judge: Final = lru_cache(maxsize=4096)(SpoofedAgentShield._signal)

_DETAILS: Final = {
    "no_accept_language": "no Accept-Language, which every browser sends",
    "no_accept_encoding": "no gzip in Accept-Encoding, which every browser sends",
    "https_page_over_http": "an https page's event over plain http, which browsers block as mixed content",
    "no_origin": "a POST without Origin from a browser that always sends it",
    "no_brotli": "no br in Accept-Encoding on a secure request from a browser that always offers it",
    "no_http2": "HTTP/1.1 to a proxy offering HTTP/2, which this browser always speaks over TLS",
    "tls13_from_old_browser": "TLS 1.3, which the browser version this User-Agent claims could not negotiate",
    "no_sec_fetch": "no Sec-Fetch-Site/Mode/Dest on a secure request from a browser that sends them",
    "bad_sec_fetch": "Sec-Fetch values no script's fetch or beacon has",
    "client_hints_from_other_engine": "Chromium's client hints with a non-Chromium User-Agent",
    "no_client_hints": "no sec-ch-ua hints on a secure request from a Chromium that sends them",
    "client_hints_mismatch": "client hints (version, mobile or platform) disagree with the User-Agent",
}
assert set(_DETAILS) == set(SIGNALS)
