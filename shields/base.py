"""The interface every shield implements."""

from __future__ import annotations

from typing import Protocol

from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict


class Shield(Protocol):
    """Pass (None) or object (a Verdict) for one event. Must not do I/O or raise on any input."""

    reason: DropReason

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None: ...
