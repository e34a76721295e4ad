"""The browser a User-Agent claims to be: engine, version, platform, mobile.

A few regular expressions, far cheaper than a full User-Agent parse, for the checks that hold a
request's headers against its claim (shields/agents.py). A User-Agent that declares itself a bot
or a tool (`compatible;`, `bot`, `crawler`, `spider`, `headless`) claims no browser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["BLINK", "GECKO", "UNKNOWN_CLAIM", "WEBKIT", "BrowserClaim", "claim_of"]

BLINK: Final = "blink"  # Chromium's engine: Chrome, Edge, Opera, Samsung Internet, Brave...
GECKO: Final = "gecko"  # Firefox
WEBKIT: Final = "webkit"  # Safari, and every browser on iOS


@dataclass(frozen=True, slots=True)
class BrowserClaim:
    """What a User-Agent says the browser is. `version` is the engine's: Chrome's major version
    for Blink, Firefox's for Gecko, major * 100 + minor of Safari (or of iOS) for WebKit."""

    engine: str
    version: int
    platform: str  # "Windows", "macOS", "Linux", "Android", "Chrome OS", "iOS", or ""
    mobile: bool
    webview: bool = False  # an Android WebView (an app's embedded browser)


UNKNOWN_CLAIM: Final = BrowserClaim("", 0, "", False)

_IOS = re.compile(r"\((?:iPhone|iPad|iPod)[^)]*? OS (\d+)_(\d+)")
_BLINK = re.compile(r"(?:Chrome|Chromium)/(\d+)\.")
_GECKO = re.compile(r"\brv:[\d.]+\) Gecko/[\d.]+ Firefox/(\d+)\.")
_SAFARI = re.compile(r"AppleWebKit/[\d.]+ \(KHTML, like Gecko\) Version/(\d+)\.(\d+)(?:\.\d+)?(?: Mobile/\w+)? Safari/")
_ANDROID_MOBILE = re.compile(r"\bMobile\b")


def _platform(ua: str) -> str:
    if "Windows NT" in ua:
        return "Windows"
    if "Android" in ua:
        return "Android"
    if "CrOS" in ua:
        return "Chrome OS"
    if "Macintosh" in ua:
        return "macOS"
    if "Linux" in ua or "X11" in ua:
        return "Linux"
    return ""


def _self_declared(ua: str) -> bool:
    """Whether the User-Agent names itself a bot or tool (plain substring tests on the lower-cased
    string: a case-insensitive regular expression costs twenty times as much)."""
    low = ua.lower()
    return ("bot" in low or "crawl" in low or "spider" in low or "headless" in low or "compatible;" in low
            or "slurp" in low or "scrap" in low)


def claim_of(ua: str) -> BrowserClaim:
    """The browser a User-Agent claims to be; `UNKNOWN_CLAIM` for anything else. Never raises."""
    if not ua or len(ua) > 512 or _self_declared(ua):
        return UNKNOWN_CLAIM
    m = _IOS.search(ua)
    if m is not None:  # every iOS browser (CriOS, FxiOS, EdgiOS...) is WebKit, versioned as iOS
        return BrowserClaim(WEBKIT, int(m.group(1)) * 100 + min(int(m.group(2)), 99), "iOS", "iPad" not in ua)
    if "Edge/" in ua:  # EdgeHTML, the engine Edge had before Chromium: no rule is known to hold
        return UNKNOWN_CLAIM
    m = _BLINK.search(ua)
    if m is not None:
        platform = _platform(ua)
        return BrowserClaim(BLINK, int(m.group(1)), platform,
                            platform == "Android" and _ANDROID_MOBILE.search(ua) is not None, "; wv)" in ua)
    m = _GECKO.search(ua)
    if m is not None:
        platform = _platform(ua)
        return BrowserClaim(GECKO, int(m.group(1)), platform, "Mobile" in ua)
    m = _SAFARI.search(ua)
    if m is not None:
        return BrowserClaim(WEBKIT, int(m.group(1)) * 100 + min(int(m.group(2)), 99), _platform(ua), "Mobile" in ua)
    return UNKNOWN_CLAIM


