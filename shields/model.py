"""The data a shield decides on: events, client context, site config, verdicts, drop reasons.

These types are shared by `shields/` (which decides) and `gateway/` (which builds them from HTTP
requests and runs the steps). They hold no behaviour beyond trivial helpers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shields.intervals import IntervalSet, IPAddress
from shields.patterns import PatternSet

__all__ = ["ClientContext", "CompiledRules", "DropReason", "Event", "IPAddress", "RateLimit", "SiteConfig",
           "SiteShields", "Verdict"]


class DropReason(str, enum.Enum):
    """Why an event was not stored. Values are stable: they appear in metrics, logs and explain.

    The precedence of the reasons is the order of the gateway's request steps
    (`gateway.ingest.steps`); this declaration follows it, and a test keeps it so, so that
    iterating the enum lists the reasons in precedence order. The reasons no step gives
    (`invalid`) come last.
    """

    SPAM_REFERRER = "spam_referrer"
    UNKNOWN_SITE = "unknown_site"
    RATE_LIMITED = "rate_limited"
    VERIFICATION_AGENT = "verification_agent"
    DC_IP = "dc_ip"
    THREAT_IP = "threat_ip"
    SITE_HOSTNAME_ALLOWLIST = "site_hostname_allowlist"
    SITE_PAGE_BLOCKLIST = "site_page_blocklist"
    SITE_IP_BLOCKLIST = "site_ip_blocklist"
    SITE_COUNTRY_BLOCKLIST = "site_country_blocklist"
    BOT = "bot"
    VELOCITY = "velocity"
    INVALID = "invalid"


# The per-request classes (Event, ClientContext, Verdict) are plain dataclasses, treated as
# immutable: a frozen one costs about four times as much to build (each field goes through
# object.__setattr__), and several are built for every request.
@dataclass(slots=True)
class Event:
    """One validated, normalised event for one site domain (a comma list fans out to several)."""

    name: str
    domain: str  # lower-cased, one leading "www." removed
    url: str
    hostname: str  # lower-cased, leading "www." removed, "(none)" when the URL has no host
    pathname: str  # percent-decoded, "#fragment" appended in hash mode
    referrer: str | None = None  # raw client value, cut to 2000 characters
    props: tuple[tuple[str, str], ...] = ()
    hash_mode: bool = False
    interactive: bool = True
    tracker_version: int = 0
    scroll_depth: int = 0  # 0..100, 255 = unknown; 0 for every non-engagement event
    engagement_time: int = 0  # milliseconds; 0 for every non-engagement event
    # From the URL's query string (www-form decoded, last repeated key wins).
    utm_source: str | None = None  # utm_source, else source, else ref ("" counts as present)
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    click_id_param: str | None = None  # gclid, gbraid, wbraid, msclkid, fbclid, twclid
    revenue_amount: str | None = None  # decimal as text
    revenue_currency: str | None = None  # ISO 4217
    automation: bool = False  # the tracker saw navigator.webdriver or a headless marker


@dataclass(slots=True)
class ClientContext:
    """Who sent the request, as far as the gateway may trust it.

    `ip` is only ever used in memory: for shields, geo and the visitor id. It is never stored.
    """

    ip: IPAddress | None
    user_agent: str  # "" when the header is absent
    ip_type: str | None = None  # x-plausible-ip-type from a trusted proxy: dc_ip, threat_ip, anonymous_vpn_ip
    country_code: str | None = None  # filled from geo/ before the shields run
    asn: int | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    events_per_minute: int | None = None  # None: unlimited
    burst: int | None = None  # None: same as events_per_minute


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """Matchers for one site's rules. Report-only rules are kept apart from enforced ones."""

    ip_block: IntervalSet = field(default_factory=IntervalSet)
    ip_block_report: IntervalSet = field(default_factory=IntervalSet)
    ip_allow: IntervalSet = field(default_factory=IntervalSet)
    countries: frozenset[str] = frozenset()
    countries_report: frozenset[str] = frozenset()
    pages: PatternSet = field(default_factory=lambda: PatternSet(()))
    pages_report: PatternSet = field(default_factory=lambda: PatternSet(()))
    hostnames: PatternSet = field(default_factory=lambda: PatternSet(()))


@dataclass(frozen=True, slots=True)
class SiteShields:
    """A site owner's rules as written (for messages and the console) and compiled (for the
    shields; see shields/rules.py). `disabled` lists the steps (by drop reason value) that do
    not run for this site; `report_only` those whose objections are counted as would-drop."""

    ip_blocklist: tuple[str, ...] = ()
    ip_allowlist: tuple[str, ...] = ()
    country_blocklist: frozenset[str] = frozenset()
    page_blocklist: tuple[str, ...] = ()
    hostname_allowlist: tuple[str, ...] = ()
    disabled: frozenset[str] = frozenset()
    report_only: frozenset[str] = frozenset()
    compiled: CompiledRules = field(default_factory=CompiledRules)


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One site, from one TOML file in the sites folder."""

    domain: str
    aliases: tuple[str, ...] = ()
    source: str = ""  # the file it came from, for messages
    shields: SiteShields = field(default_factory=SiteShields)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    max_events_per_visit: int | None = None  # velocity cap in a rolling window
    velocity_window_seconds: int = 1800

    def ip_allowlisted(self, client: ClientContext) -> bool:
        """True when this site exempts the client from the IP-based shields."""
        allow = self.shields.compiled.ip_allow
        return client.ip is not None and bool(allow) and allow.contains(client.ip)


@dataclass(slots=True)
class Verdict:
    """A shield's objection: the reason, whether it only reports, and a short operator-facing detail."""

    reason: DropReason
    report_only: bool = False
    detail: str = ""
