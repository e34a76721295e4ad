"""The interface every shield implements."""

from __future__ import annotations

from typing import ClassVar, Protocol

from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict


class Shield(Protocol):
    """Pass (None) or object (a Verdict) for one event. Must not do I/O or raise on any input.

    Optional members, read with getattr by whoever runs the shields (the gateway's executor):

    * `ip_based = True`: a site's `ip_allowlist` exempts the client;
    * `client_only = True`: the verdict depends on the client context and the loaded lists
      alone, never on the event or the site, so it may be kept for a remembered client until
      the lists change;
    * `needs_site = False`: the shield can decide without a site (it may then be given
      `site=None`), so it can run before the site lookup;
    * `applies(site) -> bool`: False when the shield can only pass for that site (a rule shield
      for a site without such rules), so it can be left out for that site.
    """

    reason: ClassVar[DropReason]

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None: ...
