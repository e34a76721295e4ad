"""Spam referrers: the `spam_referrer` shield.

The list (by default Matomo's referrer-spam list, fetched by `edge-gateway lists update`) is a
set of host names. A referrer is spam when its host, or any parent domain of it, is in the set:
`a.b.spam.example` matches a listed `spam.example`. Unlike Plausible's exact match this also
catches the endless subdomains spammers rotate through, while a look-alike host
(`notspam.example`) or a spam host that only appears in the query string does not match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict

if TYPE_CHECKING:
    from shields.lists import LiveLists

__all__ = ["SpamReferrerList", "SpamReferrerShield", "normalise_host", "parse_host_lines", "referrer_host"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Hosts are compared as ASCII: Matomo's list spells IDNs in punycode.
_HOST_CHARS = re.compile(r"^[a-z0-9._-]+$")


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
    """The normalised host of a raw referrer value, or "" when it has none.

    Accepts absolute URLs, protocol-relative ones (`//host/path`) and scheme-less ones
    (`host/path`), as referrers forwarded by server-side senders often are.
    """
    if not referrer:
        return ""
    value = referrer.strip()
    if not value:
        return ""
    if not _SCHEME.match(value) and not value.startswith("//"):
        value = "//" + value
    try:
        netloc = urlsplit(value).netloc
    except ValueError:
        return ""
    return normalise_host(netloc)


class SpamReferrerList:
    """An immutable set of spam hosts with parent-domain matching."""

    __slots__ = ("_hosts",)

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = frozenset(h for h in (normalise_host(x) for x in hosts) if h)

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


class SpamReferrerShield:
    """Drops events whose referrer is a known spam host.

    Reads the list through `lists` on every check, so a reloaded list takes effect at once.
    """

    reason = DropReason.SPAM_REFERRER

    def __init__(self, lists: LiveLists, cache_size: int = 8192) -> None:
        self.lists = lists
        # Few referrers make up most traffic (search engines, social sites): remember their hosts
        # rather than parse the same URL again.
        self._host = functools.lru_cache(maxsize=cache_size)(referrer_host)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        return self.check_any_site(event, client)

    def check_any_site(self, event: Event, client: ClientContext) -> Verdict | None:
        """The same check without a site: for running before the site lookup, as the
        reference does (a spam referrer on an unknown domain is `spam_referrer`)."""
        if not event.referrer:
            return None
        listed = self.lists.referrer_spam.match_host(self._host(event.referrer))
        if listed is None:
            return None
        return Verdict(DropReason.SPAM_REFERRER, detail=f"referrer under listed host {listed}")
