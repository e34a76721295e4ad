"""Shields: decide whether an event should be dropped, and why.

A plain library (no Sanic, no HTTP, no storage). Each shield family is one module with a small
class implementing `Shield.check(event, client, site) -> Verdict | None`; `gateway/` decides the
order they run in.
"""

from shields.base import Shield
from shields.model import (
    ClientContext,
    DropReason,
    Event,
    IPAddress,
    RateLimit,
    SiteConfig,
    SiteShields,
    Verdict,
)

__all__ = [
    "ClientContext",
    "DropReason",
    "Event",
    "IPAddress",
    "RateLimit",
    "Shield",
    "SiteConfig",
    "SiteShields",
    "Verdict",
]
