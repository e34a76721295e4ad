"""The data that flows through the shield chain: events, client context, site config, verdicts.

These types are shared by `shields/` (which decides) and `gateway/` (which builds them from HTTP
requests and runs the chain). They hold no behaviour beyond trivial helpers, and import nothing
outside the standard library, so both packages can depend on them.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotation only: model.py imports nothing outside the standard library at run time
    from shields.rules import CompiledRules

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DropReason(str, enum.Enum):
    """Why an event was not stored. Values are stable: they appear in metrics and logs.

    The order of declaration is the documented precedence (first wins) where the gateway runs
    several checks on one event; see docs/shields.md.
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
    # Answers worked out for this client that hold as long as its context is reused: the
    # verdicts of shields that look at the client alone (`client_only`), visitor ids. None: a
    # one-off context, nothing is kept. Whoever reuses contexts empties it when those answers
    # change (gateway/ingest/clients.py: lists reloaded, salt rotated).
    memo: dict[Any, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RateLimit:
    events_per_minute: int | None = None  # None: unlimited
    burst: int | None = None  # None: same as events_per_minute


@dataclass(frozen=True, slots=True)
class SiteShields:
    """A site owner's rules, compiled at load time (see shields/rules.py for the matchers).

    `enabled` switches global shields (by DropReason value) on or off for this site; `report_only`
    lists reasons counted as would-drop instead of dropped.
    """

    ip_blocklist: tuple[str, ...] = ()
    ip_allowlist: tuple[str, ...] = ()
    country_blocklist: frozenset[str] = frozenset()
    page_blocklist: tuple[str, ...] = ()
    hostname_allowlist: tuple[str, ...] = ()
    disabled: frozenset[str] = frozenset()
    report_only: frozenset[str] = frozenset()
    compiled: CompiledRules | None = None  # built by shields.rules.parse_site_shields; opaque to gateway/


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


@dataclass(slots=True)
class Verdict:
    """A shield's objection: the reason, whether it only reports, and a short operator-facing detail."""

    reason: DropReason
    report_only: bool = False
    detail: str = ""
