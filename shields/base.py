"""The interface every shield implements."""

from __future__ import annotations

from typing import Protocol

from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict


class Shield(Protocol):
    """Pass (None) or object (a Verdict) for one event. Must not do I/O or raise on any input.

    Optional members, read with getattr: `ip_based = True` (a site's ip_allowlist exempts the
    client), `client_only = True` (the verdict depends on the client context and the loaded
    lists alone, never on the event or the site: the chain keeps it in `ClientContext.memo`),
    and `applies(site) -> bool` (False when the shield can only pass for that site, e.g. a rule
    shield for a site without such rules; the chain then leaves it out for that site).
    """

    reason: DropReason

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None: ...
