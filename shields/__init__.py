"""Shields: decide whether an event should be dropped, and why.

A plain library (no Sanic, no HTTP, no network, no storage: checked by import contracts in
`make lint`). Each shield family is one module with small classes implementing
`Shield.check(event, client, site) -> Verdict | None` (shields/base.py):

* `bots` — bot User-Agents (`bot`) and the gateway's verification agent (`verification_agent`);
* `referrers` — spam referrers (`spam_referrer`);
* `iplists` — datacenter and threat addresses (`dc_ip`, `threat_ip`);
* `rules` — a site owner's rules (`site_*`), parsed from the site TOML's `[shields]` table.

and the data structures and data they use: `intervals` (address sets), `patterns` (wildcard
patterns), `hosts` (host names and host sets), `lists` (the downloadable list kinds, their
formats and the live matchers), `model` (events, clients, sites, verdicts, drop reasons).
Which shields run, in which order, and what a site's switches do, is the gateway's request path
(`gateway.ingest.steps`), not this library's.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from shields.base import Shield
from shields.errors import RuleError
from shields.model import (
    ClientContext,
    CompiledRules,
    DropReason,
    Event,
    IPAddress,
    RateLimit,
    SiteConfig,
    SiteShields,
    Verdict,
)

# The matchers pull in compiled dependencies (regex, pyahocorasick) and data packages; they are
# imported on first use, so code that only needs the shared types (`shields.model`) does not pay
# for them.
_LAZY = {
    "VERIFICATION_AGENT_UA": "shields.bots",
    "BotMatcher": "shields.bots",
    "BotShield": "shields.bots",
    "VerificationAgentShield": "shields.bots",
    "SpamReferrerList": "shields.hosts",
    "IntervalSet": "shields.intervals",
    "parse_network": "shields.intervals",
    "DatacenterShield": "shields.iplists",
    "ThreatShield": "shields.iplists",
    "load_hosting_asns": "shields.iplists",
    "LIST_KINDS": "shields.lists",
    "LiveLists": "shields.lists",
    "build_matcher": "shields.lists",
    "parse_entries": "shields.lists",
    "PatternSet": "shields.patterns",
    "SpamReferrerShield": "shields.referrers",
    "SiteCountryShield": "shields.rules",
    "SiteHostnameShield": "shields.rules",
    "SiteIPShield": "shields.rules",
    "SitePageShield": "shields.rules",
    "parse_site_shields": "shields.rules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shields' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from shields.bots import VERIFICATION_AGENT_UA, BotMatcher, BotShield, VerificationAgentShield
    from shields.hosts import SpamReferrerList
    from shields.intervals import IntervalSet, parse_network
    from shields.iplists import DatacenterShield, ThreatShield, load_hosting_asns
    from shields.lists import LIST_KINDS, LiveLists, build_matcher, parse_entries
    from shields.patterns import PatternSet
    from shields.referrers import SpamReferrerShield
    from shields.rules import (
        SiteCountryShield,
        SiteHostnameShield,
        SiteIPShield,
        SitePageShield,
        parse_site_shields,
    )

__all__ = [
    "LIST_KINDS",
    "VERIFICATION_AGENT_UA",
    "BotMatcher",
    "BotShield",
    "ClientContext",
    "CompiledRules",
    "DatacenterShield",
    "DropReason",
    "Event",
    "IPAddress",
    "IntervalSet",
    "LiveLists",
    "PatternSet",
    "RateLimit",
    "RuleError",
    "Shield",
    "SiteConfig",
    "SiteCountryShield",
    "SiteHostnameShield",
    "SiteIPShield",
    "SitePageShield",
    "SiteShields",
    "SpamReferrerList",
    "SpamReferrerShield",
    "ThreatShield",
    "Verdict",
    "VerificationAgentShield",
    "build_matcher",
    "load_hosting_asns",
    "parse_entries",
    "parse_network",
    "parse_site_shields",
]
