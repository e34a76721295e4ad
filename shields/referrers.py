"""Spam referrers: the `spam_referrer` shield.

The list (by default Matomo's referrer-spam list, fetched by `edge-gateway lists update`) is a
set of host names. A referrer is spam when its host, or any parent domain of it, is in the set:
`a.b.spam.example` matches a listed `spam.example`. Unlike Plausible's exact match this also
catches the endless subdomains spammers rotate through, while a look-alike host
(`notspam.example`) or a spam host that only appears in the query string does not match.
"""

from __future__ import annotations

from typing import ClassVar

from shields.lists import LiveLists
from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict

__all__ = ["SpamReferrerShield"]


class SpamReferrerShield:
    """Drops events whose referrer is a known spam host.

    It needs no site (the gateway runs it before the site lookup, so that a spam referrer on an
    unknown domain counts as spam), and reads the list through `lists` on every check, so a
    reloaded list takes effect at once.
    """

    reason: ClassVar[DropReason] = DropReason.SPAM_REFERRER
    needs_site: ClassVar[bool] = False

    def __init__(self, lists: LiveLists) -> None:
        self.lists = lists

    def check(self, event: Event, client: ClientContext, site: SiteConfig | None) -> Verdict | None:
        if not event.referrer:
            return None
        listed = self.lists.referrer_spam.match(event.referrer)  # remembered per referrer by the list
        if listed is None:
            return None
        return Verdict(DropReason.SPAM_REFERRER, detail=f"referrer under listed host {listed}")
