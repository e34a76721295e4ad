"""Shields: decide whether an event should be dropped, and why.

A plain library (no Sanic, no HTTP, no storage). Each shield family is one module with a small
class implementing `Shield.check(event, client, site) -> Verdict | None`:

* `bots` — bot User-Agents (`bot`) and the gateway's verification agent (`verification_agent`);
* `referrers` — spam referrers (`spam_referrer`);
* `iplists` — datacenter and threat addresses (`dc_ip`, `threat_ip`) and the interval set;
* `rules` — a site owner's rules (`site_*`), parsed from the site TOML's `[shields]` table;
* `lists` — downloaded lists: update, store, hot reload, status;
* `chain` — the default order (the precedence of drop reasons), report-only and switches.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from shields.base import Shield
from shields.errors import RuleError
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

# The matchers pull in compiled dependencies (regex, pyahocorasick) and data packages; they are
# imported on first use, so code that only needs the shared types (`shields.model`) does not pay
# for them or depend on them.
_LAZY = {
    "VERIFICATION_AGENT_UA": "shields.bots",
    "BotMatcher": "shields.bots",
    "BotShield": "shields.bots",
    "VerificationAgentShield": "shields.bots",
    "ChainResult": "shields.chain",
    "ShieldChain": "shields.chain",
    "ShieldReport": "shields.chain",
    "default_chain": "shields.chain",
    "explain": "shields.chain",
    "run_chain": "shields.chain",
    "DatacenterShield": "shields.iplists",
    "IntervalSet": "shields.iplists",
    "ThreatShield": "shields.iplists",
    "load_hosting_asns": "shields.iplists",
    "DEFAULT_SOURCES": "shields.lists",
    "LIST_KINDS": "shields.lists",
    "ListSettings": "shields.lists",
    "ListStatus": "shields.lists",
    "ListStore": "shields.lists",
    "LiveLists": "shields.lists",
    "UpdateResult": "shields.lists",
    "parse_lists_config": "shields.lists",
    "SpamReferrerList": "shields.referrers",
    "SpamReferrerShield": "shields.referrers",
    "CompiledRules": "shields.rules",
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
    from shields.chain import ChainResult, ShieldChain, ShieldReport, default_chain, explain, run_chain
    from shields.iplists import DatacenterShield, IntervalSet, ThreatShield, load_hosting_asns
    from shields.lists import (
        DEFAULT_SOURCES,
        LIST_KINDS,
        ListSettings,
        ListStatus,
        ListStore,
        LiveLists,
        UpdateResult,
        parse_lists_config,
    )
    from shields.referrers import SpamReferrerList, SpamReferrerShield
    from shields.rules import (
        CompiledRules,
        SiteCountryShield,
        SiteHostnameShield,
        SiteIPShield,
        SitePageShield,
        parse_site_shields,
    )

__all__ = [
    "DEFAULT_SOURCES",
    "LIST_KINDS",
    "VERIFICATION_AGENT_UA",
    "BotMatcher",
    "BotShield",
    "ChainResult",
    "ClientContext",
    "CompiledRules",
    "DatacenterShield",
    "DropReason",
    "Event",
    "IPAddress",
    "IntervalSet",
    "ListSettings",
    "ListStatus",
    "ListStore",
    "LiveLists",
    "RateLimit",
    "RuleError",
    "Shield",
    "ShieldChain",
    "ShieldReport",
    "SiteConfig",
    "SiteCountryShield",
    "SiteHostnameShield",
    "SiteIPShield",
    "SitePageShield",
    "SiteShields",
    "SpamReferrerList",
    "SpamReferrerShield",
    "ThreatShield",
    "UpdateResult",
    "Verdict",
    "VerificationAgentShield",
    "default_chain",
    "explain",
    "load_hosting_asns",
    "parse_lists_config",
    "parse_site_shields",
    "run_chain",
]
