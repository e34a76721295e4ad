"""Host names: taking them out of URLs, normalising them, and sets with parent-domain matching.

`split_url` is the one reading of a URL's structure that both the spam-referrer shield and the
gateway's referrer columns use: scheme, authority, path, for absolute (`https://host/...`),
protocol-relative (`//host/...`) and scheme-less (`host/...`) values, as server-side senders
often forward referrers. What each does with the authority differs on purpose:
`normalise_host` makes a host comparable with a host list (no port or userinfo, punycode, no
IPv6 literal), while the stored referrer keeps what Plausible keeps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SpamReferrerList", "normalise_host", "parse_host_lines", "referrer_host", "split_url", "strip_www"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY_AND_PATH = re.compile(r"([^/?#]*)([^?#]*)")
# What a browser's URL parser removes before parsing (WHATWG URL: ASCII tab or newline).
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
# Hosts are compared as ASCII: Matomo's list spells IDNs in punycode.
_HOST_CHARS = re.compile(r"^[a-z0-9._-]+$")


def strip_www(host: str) -> str:
    """The host without one leading `www.`: how site domains, event hostnames, referrer hosts
    and hostname rules are compared everywhere."""
    return host.removeprefix("www.")


def split_url(value: str) -> tuple[str, str, str]:
    """(scheme, authority, path) of a URL-ish value: the scheme lower-cased and "" when the
    value has no `scheme://`; the authority up to the first `/`, `?` or `#`; the path up to
    the query or fragment. Never raises."""
    value = value.strip()
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.translate(_TAB_OR_NEWLINE)
    m = _SCHEME.match(value)
    if m is not None:
        scheme, rest = m.group()[:-3].lower(), value[m.end():]
    else:
        scheme, rest = "", value[2:] if value.startswith("//") else value
    parts = _AUTHORITY_AND_PATH.match(rest)
    assert parts is not None  # both groups match the empty string
    return scheme, parts.group(1), parts.group(2)


def normalise_host(host: str) -> str:
    """Lower-case, without port, userinfo, brackets or trailing dots; IDNs in punycode.

    Returns "" for something that is not a host name.
    """
    host = host.strip()
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    if host.startswith("["):  # an IPv6 literal never is on a host list
        return ""
    if ":" in host:
        host = host.split(":", 1)[0]
    host = host.rstrip(".").lower()
    if not host:
        return ""
    if not host.isascii():
        try:
            host = ".".join(
                label.encode("idna").decode("ascii") if not label.isascii() else label for label in host.split(".")
            )
        except UnicodeError:
            return ""
    if not _HOST_CHARS.match(host) or ".." in host:
        return ""
    return host


def referrer_host(referrer: str | None) -> str:
    """The normalised host of a raw referrer value, or "" when it has none."""
    if not referrer:
        return ""
    return normalise_host(split_url(referrer)[1])


# Referrers up to this length have their answer remembered by the list (`match`).
_MAX_REMEMBERED_REFERRER = 512


class SpamReferrerList:
    """An immutable set of hosts with parent-domain matching: `a.b.spam.example` matches a
    listed `spam.example`, a look-alike `notspam.example` does not.

    `match` remembers the answer for up to `cache_size` recent referrers: few referrers make up
    most traffic (search engines, social sites, the site itself), and the answer is a pure
    function of the referrer and of this list, which a reload replaces whole (its memo with it).
    """

    __slots__ = ("_hosts", "_remembered")

    def __init__(self, hosts: Iterable[str], cache_size: int = 8192) -> None:
        self._hosts = frozenset(h for h in (normalise_host(x) for x in hosts) if h)
        self._remembered = functools.lru_cache(maxsize=cache_size)(self._match)

    @classmethod
    def from_file(cls, path: Path) -> SpamReferrerList:
        """One host per line; blank lines and `#` comments are skipped."""
        return cls(parse_host_lines(path.read_text(encoding="utf-8")))

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and self.match_host(host) is not None

    def match_host(self, host: str) -> str | None:
        """The listed domain that `host` (already normalised) is or lies under, or None."""
        hosts = self._hosts
        if not hosts or not host:
            return None
        if host in hosts:
            return host
        dot = host.find(".")
        while dot != -1:
            host = host[dot + 1 :]
            if host in hosts:
                return host
            dot = host.find(".")
        return None

    def match(self, referrer: str | None) -> str | None:
        """The listed domain a raw referrer value comes from, or None."""
        if not referrer or not self._hosts:
            return None
        if len(referrer) <= _MAX_REMEMBERED_REFERRER:
            return self._remembered(referrer)
        return self._match(referrer)

    def _match(self, referrer: str) -> str | None:
        return self.match_host(referrer_host(referrer))


def parse_host_lines(text: str) -> list[str]:
    """Hosts from a one-per-line list, skipping blanks and comments; invalid lines are dropped."""
    hosts: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            host = normalise_host(line)
            if host:
                hosts.append(host)
    return hosts
