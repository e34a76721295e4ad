"""The request path's steps, in order: the one place that says what is checked and which drop
reason wins.

Every event of a request goes through `STEPS`, cheapest first, and the first step that objects
names the drop reason (gateway/ingest/executor.py runs them). So the precedence of the drop
reasons *is* this tuple: `DropReason`'s declaration, the tables in docs/shields.md and the names a
site's `disabled` and `report_only` accept (`SWITCHABLE`) are derived from it or checked against
it by tests/test_steps.py.

A step is a small object with a `reason` and one method, `check(event, client, site) -> Verdict |
None`: None passes the event on, a `Verdict` drops it. Most steps are shields (shields/); the
gateway adds the ones that need its own state: whether a site declares the domain, the site's
rate limit, and the visitor's event count. Optional members tell the executor more (see
shields/base.py): `needs_site`, `ip_based`, `client_only`, `applies(site)`, and for steps that
change state, `peek`, which answers the same without changing it (explain uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from gateway.ingest.clients import Client
from gateway.ingest.visitor import Visitors
from gateway.state.limits import RateLimiter, VelocityTable
from shields.agents import SpoofedAgentShield
from shields.bots import VERIFICATION_AGENT_UA, BotMatcher, BotShield, VerificationAgentShield
from shields.iplists import DatacenterShield, ThreatShield
from shields.lists import LiveLists
from shields.model import DropReason, Event, SiteConfig, Verdict
from shields.referrers import SpamReferrerShield
from shields.rules import SiteCountryShield, SiteHostnameShield, SiteIPShield, SitePageShield

__all__ = ["EVIDENCE", "STEPS", "SWITCHABLE", "UNKNOWN", "RateLimited", "Step", "StepParts", "Throttled", "UnknownSite",
           "Velocity", "build_steps"]


class Step(Protocol):
    reason: ClassVar[DropReason]

    def check(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None: ...


#: The site an event is checked against when no site declares its domain (and its label in
#: metrics). Steps that need a site never see it: unknown_site drops the event first.
UNKNOWN = SiteConfig(domain="(unknown)")


@dataclass(slots=True)
class Throttled(Verdict):
    """A rate limit's objection, with the seconds until the site takes events again."""

    retry_after: float = 0.0


class UnknownSite:
    """Drops events for a domain that no site file declares."""

    reason: ClassVar[DropReason] = DropReason.UNKNOWN_SITE
    needs_site: ClassVar[bool] = False
    switchable: ClassVar[bool] = False  # there is no site to switch it for
    _verdict = Verdict(DropReason.UNKNOWN_SITE, detail="no site file declares this domain")

    def applies(self, site: SiteConfig) -> bool:
        return site is UNKNOWN

    def check(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None:
        return self._verdict if site is UNKNOWN else None


class RateLimited:
    """Drops events past the site's `[rate_limit]` (a token bucket per site, shared by the
    workers, and by every node with `[shared]` Redis). A request whose events are all rate
    limited is answered 429 with Retry-After."""

    reason: ClassVar[DropReason] = DropReason.RATE_LIMITED
    stateful: ClassVar[bool] = True

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def applies(self, site: SiteConfig) -> bool:
        return site.rate_limit.events_per_minute is not None

    def check(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None:
        return self._decide(site, self.limiter.allow)

    def peek(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None:
        return self._decide(site, self.limiter.peek)

    def _decide(self, site: SiteConfig, take: Callable[[str, int, int], tuple[bool, float]]) -> Verdict | None:
        rl = site.rate_limit
        if rl.events_per_minute is None:
            return None
        ok, wait = take(site.domain, rl.events_per_minute, rl.burst or rl.events_per_minute)
        if ok:
            return None
        return Throttled(DropReason.RATE_LIMITED, detail=f"site rate limit of {rl.events_per_minute}/min",
                         retry_after=max(wait, 0.001))


class Velocity:
    """Drops a visitor's events past the site's `[velocity] max_events_per_visit`."""

    reason: ClassVar[DropReason] = DropReason.VELOCITY
    stateful: ClassVar[bool] = True

    def __init__(self, table: VelocityTable, visitors: Visitors) -> None:
        self.table = table
        self.visitors = visitors

    def applies(self, site: SiteConfig) -> bool:
        return site.max_events_per_visit is not None

    def check(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None:
        return self._decide(event, client, site, self.table.hit)

    def peek(self, event: Event, client: Client, site: SiteConfig) -> Verdict | None:
        return self._decide(event, client, site, self.table.peek)

    def _decide(self, event: Event, client: Client, site: SiteConfig,
                count: Callable[[str, int, int, int], bool]) -> Verdict | None:
        cap = site.max_events_per_visit
        if cap is None:
            return None
        user_id = self.visitors.id_of(client, site.domain, event.hostname)
        if count(site.domain, user_id, cap, site.velocity_window_seconds):
            return None
        return Verdict(DropReason.VELOCITY, detail=f"more than {cap} events in this visit")


#: The request path, in order. The precedence of drop reasons is this order.
STEPS: tuple[type[Step], ...] = (
    SpamReferrerShield,  # needs no site: a spam referrer on an unknown domain is spam
    UnknownSite,
    RateLimited,
    SpoofedAgentShield,  # header checks, before anything that parses or looks up
    VerificationAgentShield,
    DatacenterShield,
    ThreatShield,
    SiteHostnameShield,
    SitePageShield,
    SiteIPShield,
    SiteCountryShield,
    BotShield,
    Velocity,
)

#: What a site's `disabled` and `report_only` accept, in precedence order.
SWITCHABLE: tuple[str, ...] = tuple(s.reason.value for s in STEPS if getattr(s, "switchable", True))
#: The evidence labels each step can name (a site's `ignore` takes "<reason>:<label>").
EVIDENCE: dict[str, tuple[str, ...]] = {s.reason.value: tuple(getattr(s, "evidence", ())) for s in STEPS}


@dataclass(frozen=True, slots=True)
class StepParts:
    """What the steps are built from: one worker's lists, matchers and state."""

    lists: LiveLists
    bots: BotMatcher
    limiter: RateLimiter
    velocity: VelocityTable
    visitors: Visitors
    verification_agent_ua: str = VERIFICATION_AGENT_UA


_BUILD: dict[type[Step], Callable[[StepParts], Step]] = {
    SpamReferrerShield: lambda p: SpamReferrerShield(p.lists),
    UnknownSite: lambda p: UnknownSite(),
    RateLimited: lambda p: RateLimited(p.limiter),
    SpoofedAgentShield: lambda p: SpoofedAgentShield(),
    VerificationAgentShield: lambda p: VerificationAgentShield(p.verification_agent_ua),
    DatacenterShield: lambda p: DatacenterShield(p.lists),
    ThreatShield: lambda p: ThreatShield(p.lists),
    SiteHostnameShield: lambda p: SiteHostnameShield(),
    SitePageShield: lambda p: SitePageShield(),
    SiteIPShield: lambda p: SiteIPShield(),
    SiteCountryShield: lambda p: SiteCountryShield(),
    BotShield: lambda p: BotShield(p.bots),
    Velocity: lambda p: Velocity(p.velocity, p.visitors),
}


def build_steps(parts: StepParts) -> tuple[Step, ...]:
    """One instance of each step, in `STEPS` order."""
    return tuple(_BUILD[kind](parts) for kind in STEPS)
