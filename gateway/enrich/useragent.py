"""User-Agent → browser, OS and device class, named the way Plausible's dashboards name them.

The parsing itself is ua-parser (uap-core's regexes) with the `ua-parser-rs` accelerator when it is
installed. On top of it sit three small pieces of our own:

* name normalisation: uap-core's family names are mapped to the names Plausible stores (it uses
  Matomo's device detector), so `Mobile Safari` → `Safari`, `Mac OS X` → `Mac`, `Linux` → `GNU/Linux`,
  `Edge` → `Microsoft Edge`, in-app browsers and WebViews → `Mobile App`, and so on;
* versions cut to `major.minor` (`120.0.6099.71` → `120.0`; a version that is one word stays one word:
  Windows `10`, `XP`);
* the device class (`screen_size`): uap-core does not classify devices, so `_screen_size` decides from
  the device family, the OS and a few well-known UA tokens ("Mobile" on Android, "iPad", TV markers),
  following the same generic rules Matomo applies when it does not know the exact device model.

A `UAParser` owns one resolver and one bounded LRU cache keyed by the UA string; `parse` never raises.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from typing import Final

from ua_parser import (
    BestAvailableResolver,
    Domain,
    Resolver,
    load_builtins,
    load_lazy_builtins,
)
from ua_parser import Result as _UAResult

__all__ = ["EMPTY_UA_INFO", "UAInfo", "UAParser"]


@dataclass(frozen=True, slots=True)
class UAInfo:
    """What the gateway stores about a User-Agent. `""` means unknown."""

    browser: str = ""
    browser_version: str = ""
    operating_system: str = ""
    operating_system_version: str = ""
    screen_size: str = ""  # "Mobile", "Tablet", "Desktop" or ""


EMPTY_UA_INFO: Final = UAInfo()

# Longer User-Agents are parsed but not cached: a real browser's UA is a few hundred characters, and
# caching arbitrarily long client-sent strings would let the cache's memory grow far beyond its count.
_MAX_CACHED_LEN: Final = 1024

MOBILE_APP: Final = "Mobile App"

# uap-core family → stored name. Families not listed are stored as uap-core names them.
_BROWSER_NAMES: Final[dict[str, str]] = {
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Firefox Beta": "Firefox",
    "Firefox Alpha": "Firefox",
    "Opera Mobile": "Opera",
    "Opera Mini": "Opera",
    "Edge": "Microsoft Edge",
    "Edge Mobile": "Microsoft Edge",
    "IE": "Internet Explorer",
    "Samsung Internet": "Samsung Browser",
    "Android": "Android Browser",
    "MiuiBrowser": "Mi Browser",
    "QQ Browser Mobile": "QQ Browser",
    "QQ Browser Mini": "QQ Browser",
    "VivoBrowser": "vivo Browser",
    "YandexSearch": "Yandex Browser",
    "Yandex Browser Lite": "Yandex Browser",
    "Amazon Silk": "Mobile Silk",
    "DuckDuckGo": "DuckDuckGo Privacy Browser",
    "DuckDuckGo Mobile": "DuckDuckGo Privacy Browser",
    "Epiphany": "GNOME Web",
    "Ecosia Android": "Ecosia",
    "Ecosia iOS": "Ecosia",
    "HeadlessChrome": "Headless Chrome",
    "Whale": "Whale Browser",
    "Baidu Explorer": "Baidu Browser",
    "Puffin": "Puffin Web Browser",
    "HeyTap Browser": "HeyTapBrowser",
}

# In-app browsers and WebViews: the visitor is inside another app, whose version says nothing useful.
_MOBILE_APPS: Final = frozenset({
    "Chrome Mobile WebView",
    "Facebook",
    "Facebook Messenger",
    "Instagram",
    "Pinterest",
    "Snapchat",
    "Twitter",
    "TikTok",
    "LINE",
    "KakaoTalk",
    "WeChat Browser",
    "Weibo",
    "Google",  # the Google Search app (GSA)
    "Flipboard",
    "Kurio App",
    "Roblox App",
    "TopBuzz",
})

_OS_NAMES: Final[dict[str, str]] = {
    "Mac OS X": "Mac",
    "Mac OS": "Mac",
    "Linux": "GNU/Linux",
    "SUSE": "openSUSE",
    "Linux Mint": "Mint",
    "ATV OS X": "tvOS",
    "Web0S": "webOS",
}

_DESKTOP_OSES: Final = frozenset({
    "Windows", "Mac OS X", "Mac OS", "Chrome OS", "Linux", "Ubuntu", "Kubuntu", "Xubuntu", "Lubuntu",
    "Debian", "Fedora", "SUSE", "openSUSE", "Gentoo", "Red Hat", "CentOS", "Slackware", "Arch Linux",
    "Linux Mint", "Mandriva", "Mageia", "PCLinuxOS", "FreeBSD", "OpenBSD", "NetBSD", "Solaris",
})
_MOBILE_OSES: Final = frozenset({
    "Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS", "Firefox OS", "Bada", "BREW", "Brew MP",
    "Nokia Series 40", "Nokia Series 30 Plus", "Maemo", "MeeGo", "Sailfish", "WatchOS", "HarmonyOS",
})
_TABLET_DEVICES: Final = frozenset({
    "iPad", "Generic Tablet", "BlackBerry Playbook", "HP TouchPad", "Microsoft Surface RT",
    "Lenovo Ideapad K1", "Thor", "Tesla Model S",  # Matomo counts car browsers as tablets
})
_MOBILE_DEVICES: Final = frozenset({
    "iPhone", "iPod", "iOS-Device", "Generic Feature Phone", "BlackBerry", "Quest",
})
_DESKTOP_DEVICES: Final = frozenset({"AppleTV", "Chromecast", "Inettv", "PlayStation 3", "Nintendo Wii U"})

# Matomo counts TVs, consoles and Chromebooks as desktops (one search for all of them).
_DESKTOP_MARKERS = re.compile(
    r"SMART-TV|SmartTV|HbbTV|\(TV;|CrKey|BRAVIA|NetCast|Web0S|Opera TV|Xbox|PlayStation|Nintendo|AFT[A-Z]"
    r"|Chromebook|\bCrOS\b",
)
# Android user agents without "Mobile" that come from HTTP libraries or feature-phone-like browsers.
_ANDROID_PHONE_CLIENT = re.compile(r"Dalvik|MIDP|Release/|Browser/")
_WINDOWS_MOBILE = re.compile(r"Windows CE|IEMobile|Windows Phone")
_GENERIC_MOBILE = re.compile(r"Mobi|MIDP|J2ME|Opera Mini|iPhone|Phone")
_GENERIC_TABLET = re.compile(r"Tablet|iPad")


def _major_minor(major: str | None, minor: str | None) -> str:
    if not major:
        return ""
    if not minor:
        return major
    return f"{major}.{minor}"


def _int_or(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdecimal() and len(value) < 6 else default


def _screen_size(ua: str, os_family: str, os_major: str | None, device: str) -> str:
    if device in _TABLET_DEVICES or device.startswith("Kindle"):
        return "Tablet"
    if device in _MOBILE_DEVICES:
        return "Mobile"
    if device in _DESKTOP_DEVICES or _DESKTOP_MARKERS.search(ua):
        return "Desktop"
    if os_family == "Android" or "Android" in ua:
        # Chrome on Android says "Mobile" on phones and leaves it out on tablets; other Android
        # browsers mostly follow it. Without either hint, fall back on Android's own history.
        low = ua.lower()  # substring tests: a case-insensitive regex costs several times as much
        if "tablet" in low or "pad/apad" in low:
            return "Tablet"
        if "mobile" in low or "elibom" in low or "opera mini" in low:
            return "Mobile"
        if "Chrome/" in ua:
            return "Tablet"
        major = _int_or(os_major, -1)
        if 0 <= major < 2:
            return "Mobile"
        if major == 3:  # Honeycomb was tablet-only
            return "Tablet"
        if _ANDROID_PHONE_CLIENT.search(ua):
            return "Mobile"
        return "Tablet"
    if os_family == "iOS":
        return "Tablet" if "iPad" in ua else "Mobile"
    if os_family in _MOBILE_OSES or os_family.startswith("Symbian") or _WINDOWS_MOBILE.search(ua):
        return "Mobile"
    if os_family == "Windows" and "Touch" in ua and _int_or(os_major, 0) >= 8:
        return "Tablet"  # Windows 8+ touch devices, as Matomo counts them
    if os_family in _DESKTOP_OSES or ("X11" in ua and "Linux" in ua):
        return "Desktop"
    if _GENERIC_MOBILE.search(ua):
        return "Mobile"
    if _GENERIC_TABLET.search(ua):
        return "Tablet"
    return ""


def _to_info(ua: str, result: _UAResult) -> UAInfo:
    browser = browser_version = ""
    if (agent := result.user_agent) is not None:
        family = agent.family
        if family in _MOBILE_APPS:
            browser = MOBILE_APP
        else:
            browser = _BROWSER_NAMES.get(family, family)
            if family.startswith("Firefox ("):  # Firefox (Minefield), (Shiretoko)...: pre-release builds
                browser = "Firefox"
            browser_version = _major_minor(agent.major, agent.minor)

    os_name = os_version = ""
    os_family = ""
    os_major: str | None = None
    device = result.device.family if result.device is not None else ""
    if (system := result.os) is not None:
        os_family = system.family
        os_major = system.major
        os_name = _OS_NAMES.get(os_family, os_family)
        if os_family.startswith("Symbian"):
            os_name = "Symbian OS"
        elif os_family == "iOS" and device == "iPad" and _int_or(os_major, 0) >= 13:
            os_name = "iPadOS"
        os_version = _major_minor(system.major, system.minor)
    if os_name == "Other":
        os_name = os_version = ""
    if browser == "Other":
        browser = browser_version = ""

    return UAInfo(browser, browser_version, os_name, os_version, _screen_size(ua, os_family, os_major, device))


def _default_resolver() -> Resolver:
    # The lazy matchers only pay off with a compiled resolver (ua-parser-rs or re2); the pure-Python
    # fallback wants the eager ones.
    if importlib.util.find_spec("ua_parser_rs") is None and importlib.util.find_spec("re2") is None:
        return BestAvailableResolver(load_builtins())
    return BestAvailableResolver(load_lazy_builtins())


class UAParser:
    """Parses User-Agent strings into `UAInfo`, with a bounded LRU cache in front.

    Build one at start-up (loading the regexes takes a fraction of a second) and share it. Safe to
    call from several threads (functools.lru_cache is thread-safe).
    """

    __slots__ = ("_cached", "_resolver")

    def __init__(self, cache_size: int = 10000, *, resolver: Resolver | None = None) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._resolver = resolver if resolver is not None else _default_resolver()
        # functools' LRU: bounded, thread-safe, and a hit costs a fifth of a locked cachetools one.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._parse_uncached) if cache_size else None

    def parse(self, ua: str) -> UAInfo:
        """Browser, OS and device class of `ua`; all fields `""` for an empty or unknown UA. Never raises."""
        if not ua:
            return EMPTY_UA_INFO
        cached = self._cached
        if cached is None or len(ua) > _MAX_CACHED_LEN:
            return self._parse_uncached(ua)
        return cached(ua)

    def _parse_uncached(self, ua: str) -> UAInfo:
        try:
            return _to_info(ua, self._resolver(ua, Domain.ALL).complete())
        except UnicodeError:
            # Lone surrogates cannot cross into the Rust matcher; real headers never hold them.
            clean = ua.encode("utf-8", "replace").decode("utf-8")
        except Exception:  # noqa: BLE001  # a matcher bug must not turn a visit into a 500
            return EMPTY_UA_INFO
        try:
            return _to_info(clean, self._resolver(clean, Domain.ALL).complete())
        except Exception:  # noqa: BLE001
            return EMPTY_UA_INFO

    def cache_info(self) -> tuple[int, int]:
        """(entries, capacity) of the cache, for metrics."""
        if self._cached is None:
            return 0, 0
        info = self._cached.cache_info()
        return info.currsize, int(info.maxsize or 0)
