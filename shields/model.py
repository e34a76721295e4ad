"""The data a shield decides on: events, client context, site config, verdicts, drop reasons.

These types are shared by `shields/` (which decides) and `gateway/` (which builds them from HTTP
requests and runs the steps). They hold no behaviour beyond trivial helpers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shields.intervals import IntervalSet, IPAddress
from shields.patterns import PatternSet

from shields.claims import BrowserClaim, claim_of

__all__ = ["BrowserHeaders", "ClientContext", "CompiledRules", "DropReason", "Event", "IPAddress", "RateLimit", "SiteConfig",
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
    SPOOFED_AGENT = "spoofed_agent"
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
    NO_CONSENT = "no_consent"  # a server-side event sent with consentGiven: false


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


@dataclass(frozen=True, slots=True)
class BrowserHeaders:
    """What a browser adds to a script's request, as the gateway received it (None: absent), and
    how the request reached the gateway: what the `spoofed_agent` shield judges a claim by."""

    sec_fetch_site: str | None = None
    sec_fetch_mode: str | None = None
    sec_fetch_dest: str | None = None
    sec_ch_ua: str | None = None
    sec_ch_ua_mobile: str | None = None
    sec_ch_ua_platform: str | None = None
    origin: str | None = None
    accept_language: str | None = None
    accept_encoding: str | None = None
    # "https" or "http" when known (the socket, or a trusted proxy's X-Forwarded-Proto); None
    # when a trusted proxy forwarded it without saying.
    transport: str | None = None
    loopback: bool = False  # addressed to localhost or a loopback address (potentially trustworthy)
    # The HTTP version the client spoke to a trusted proxy ("1.1", "2", "3"), when the proxy says
    # (X-Forwarded-Http-Version); None otherwise.
    http_version: str | None = None
    # The TLS version the client negotiated with a trusted proxy ("1.2", "1.3"), when the proxy
    # says (X-Forwarded-Tls-Version); None otherwise.
    tls_version: str | None = None


class ClientContext:
    """Who sent the request, as far as the gateway may trust it.

    `ip` is only ever used in memory: for shields, geo and the visitor id. It is never stored.
    `country_code` and `asn` come from geo/: given here, or looked up the first time a shield
    asks (`_locate`, which the gateway's client overrides), so a client dropped before anything
    asks costs no lookup. `claim` is the browser the User-Agent claims, read the first time it
    is asked for. `headers` is None when the client was not seen in an HTTP request.
    """

    __slots__ = ("ip", "user_agent", "ip_type", "headers", "_country_code", "_asn", "_located", "_claim")

    def __init__(self, ip: IPAddress | None, user_agent: str, ip_type: str | None = None,
                 country_code: str | None = None, asn: int | None = None,
                 headers: BrowserHeaders | None = None) -> None:
        self.ip = ip
        self.user_agent = user_agent  # "" when the header is absent
        self.ip_type = ip_type  # x-plausible-ip-type from a trusted proxy: dc_ip, threat_ip, anonymous_vpn_ip
        self.headers = headers
        self._country_code = country_code
        self._asn = asn
        self._located = True
        self._claim: BrowserClaim | None = None

    def _locate(self) -> tuple[str | None, int | None]:
        """(country code, ASN) for a client whose geo answer is looked up on first use."""
        return self._country_code, self._asn

    def _resolve(self) -> None:
        self._located = True
        self._country_code, self._asn = self._locate()

    @property
    def country_code(self) -> str | None:
        if not self._located:
            self._resolve()
        return self._country_code

    @property
    def asn(self) -> int | None:
        if not self._located:
            self._resolve()
        return self._asn

    @property
    def claim(self) -> BrowserClaim:
        claim = self._claim
        if claim is None:
            claim = self._claim = claim_of(self.user_agent)
        return claim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ip={self.ip!r}, user_agent={self.user_agent!r}, ip_type={self.ip_type!r})"


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
    not run for this site; `report_only` those whose objections are counted as would-drop;
    `ignored` single evidence labels of a step that the site lets through (`dc_ip:vpn_asn`)."""

    ip_blocklist: tuple[str, ...] = ()
    ip_allowlist: tuple[str, ...] = ()
    country_blocklist: frozenset[str] = frozenset()
    page_blocklist: tuple[str, ...] = ()
    hostname_allowlist: tuple[str, ...] = ()
    disabled: frozenset[str] = frozenset()
    report_only: frozenset[str] = frozenset()
    ignored: frozenset[tuple[str, str]] = frozenset()  # (reason, evidence) the site does not act on
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
    server_api_rate: RateLimit = field(default_factory=RateLimit)  # each ingest key's bucket; None: the gateway's
    velocity_window_seconds: int = 1800

    def ip_allowlisted(self, client: ClientContext) -> bool:
        """True when this site exempts the client from the IP-based shields."""
        allow = self.shields.compiled.ip_allow
        return client.ip is not None and bool(allow) and allow.contains(client.ip)


@dataclass(slots=True)
class Verdict:
    """A shield's objection: the reason, whether it only reports, a short operator-facing
    detail, and `evidence`: a label from a small fixed set (which signal or which list), counted
    in the metrics by site and reason, so it must never be built from request data."""

    reason: DropReason
    report_only: bool = False
    detail: str = ""
    evidence: str = ""
