"""A site owner's shield rules: parse and validate `[shields]`, compile matchers, and the
four site-rule shields.

```toml
[shields]
ip_blocklist = ["203.0.113.7", "198.51.100.0/24", "2001:db8::/32",
                { value = "192.0.2.0/24", report_only = true }]
ip_allowlist = ["10.1.2.3"]            # your own server-side senders: exempt from IP shields
country_blocklist = ["KP", { value = "RU", report_only = true }]
page_blocklist = ["/admin/*", "/preview/*/draft"]
hostname_allowlist = ["example.com", "*.example.com"]
disabled = ["dc_ip"]                   # global shields switched off for this site
report_only = ["bot"]                  # shields that only count would-drops for this site
ignore = ["dc_ip:vpn_asn"]             # one signal of a shield let through (here: VPN visitors)
```

Every rule list is compiled once, at config load, into one structure whatever its length: IP
rules into interval sets, countries into sets, page and hostname patterns into one regex each
built from a trie of the patterns (shared prefixes are matched once), with exact paths in a set.
So a site with five hundred rules costs about what a site with five costs.

Wildcards follow the reference: `*` (and `**`, the same thing) matches any run of characters,
`/` and `.` included; patterns are anchored at both ends; page patterns are case-sensitive,
hostname patterns are compared lower-case, without a leading `www.`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from shields.errors import RuleError
from shields.hosts import strip_www
from shields.intervals import IntervalSet, parse_network
from shields.model import ClientContext, CompiledRules, DropReason, Event, SiteConfig, SiteShields, Verdict
from shields.patterns import PatternSet, canonical_pattern

__all__ = [
    "RuleError",
    "SiteCountryShield",
    "SiteHostnameShield",
    "SiteIPShield",
    "SitePageShield",
    "parse_site_shields",
]

COUNTRY_FILE = Path(__file__).parent / "data" / "iso3166_alpha2.txt"
MAX_RULES = 10_000  # per list: bounds memory and compile time, far above any real need
MAX_PATTERN_CHARS = 250

_LIST_KEYS = ("ip_blocklist", "ip_allowlist", "country_blocklist", "page_blocklist", "hostname_allowlist")
_KEYS = frozenset(_LIST_KEYS) | {"disabled", "report_only", "ignore"}
_ALLOWLISTS = frozenset({"ip_allowlist", "hostname_allowlist"})


def _load_countries() -> frozenset[str]:
    codes: set[str] = set()
    for line in COUNTRY_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            codes.update(line.split())
    return frozenset(codes)


COUNTRY_CODES = _load_countries()


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    value: str
    report_only: bool
    key: str  # "shields.page_blocklist[3]" for messages


def _rules(table: Mapping[str, Any], name: str, source: str) -> list[_Rule]:
    raw = table.get(name, [])
    key = f"shields.{name}"
    if not isinstance(raw, list):
        raise RuleError(source, key, "must be a list")
    if len(raw) > MAX_RULES:
        raise RuleError(source, key, f"has {len(raw)} rules; at most {MAX_RULES} are allowed")
    out = []
    for i, item in enumerate(raw):
        item_key = f"{key}[{i}]"
        report_only = False
        if isinstance(item, Mapping):
            unknown = set(item) - {"value", "report_only", "note"}
            if unknown:
                raise RuleError(source, f"{item_key}.{sorted(unknown)[0]}",
                                "unknown key (a rule table has value, report_only and note)")
            if "value" not in item:
                raise RuleError(source, item_key, "a rule table needs value = \"...\"")
            report_only = item.get("report_only", False)
            if not isinstance(report_only, bool):
                raise RuleError(source, f"{item_key}.report_only", "must be true or false")
            if report_only and name in _ALLOWLISTS:
                raise RuleError(source, f"{item_key}.report_only",
                                f"report_only applies to blocklist rules; to trial the whole allowlist "
                                f"use report_only = [\"{_allowlist_reason(name)}\"]")
            item = item["value"]
        if not isinstance(item, str):
            raise RuleError(source, item_key, "must be a string or a table { value = \"...\", report_only = true }")
        out.append(_Rule(item.strip(), report_only, item_key))
    return out


def _allowlist_reason(name: str) -> str:
    return DropReason.SITE_HOSTNAME_ALLOWLIST.value if name == "hostname_allowlist" else "dc_ip"


def _no_duplicates(rules: list[_Rule], canonical: list[str], source: str, what: str) -> None:
    first: dict[str, int] = {}
    for i, value in enumerate(canonical):
        if value in first:
            j = first[value]
            raise RuleError(source, rules[i].key, f"{rules[i].value!r} repeats {rules[j].key} "
                            f"({rules[j].value!r}): the same {what}")
        first[value] = i


def _ip_rules(rules: list[_Rule], source: str) -> tuple[IntervalSet, IntervalSet]:
    enforced: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    report: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    canonical = []
    for rule in rules:
        try:
            version, interval = parse_network(rule.value)
        except ValueError as exc:
            raise RuleError(source, rule.key, str(exc)) from None
        canonical.append(f"{version}:{interval}")
        target = report if rule.report_only else enforced
        target[0 if version == 4 else 1].append(interval)
    _no_duplicates(rules, canonical, source, "addresses")
    return IntervalSet(*enforced), IntervalSet(*report)


def _country_rules(rules: list[_Rule], source: str) -> tuple[frozenset[str], frozenset[str]]:
    enforced: set[str] = set()
    report: set[str] = set()
    canonical = []
    for rule in rules:
        code = rule.value.upper()
        if len(code) != 2 or code not in COUNTRY_CODES:
            raise RuleError(source, rule.key, f"{rule.value!r} is not an ISO 3166-1 alpha-2 country code")
        canonical.append(code)
        (report if rule.report_only else enforced).add(code)
    _no_duplicates(rules, canonical, source, "country")
    return frozenset(enforced), frozenset(report)


def _pattern_checks(rule: _Rule, source: str) -> None:
    if not rule.value:
        raise RuleError(source, rule.key, "is empty")
    if len(rule.value) > MAX_PATTERN_CHARS:
        raise RuleError(source, rule.key, f"is longer than {MAX_PATTERN_CHARS} characters")


def _page_rules(rules: list[_Rule], source: str) -> tuple[PatternSet, PatternSet]:
    for rule in rules:
        _pattern_checks(rule, source)
        if not rule.value.startswith(("/", "*")):
            raise RuleError(source, rule.key, f"{rule.value!r} must start with / (a path, as in /admin/*)")
    _no_duplicates(rules, [canonical_pattern(r.value) for r in rules], source, "pattern")
    return (PatternSet(r.value for r in rules if not r.report_only),
            PatternSet(r.value for r in rules if r.report_only))


_HOST_PATTERN = re.compile(r"^[a-z0-9*_.-]+$")


def _host_rules(rules: list[_Rule], source: str) -> PatternSet:
    values = []
    for rule in rules:
        _pattern_checks(rule, source)
        value = rule.value.lower().rstrip(".")
        # Events carry hostnames without a leading "www.", so rules are compared the same way.
        value = strip_www(value)
        if not _HOST_PATTERN.match(value) and value != "(none)":
            raise RuleError(source, rule.key, f"{rule.value!r} is not a host name pattern (e.g. *.example.com)")
        values.append(value)
    _no_duplicates(rules, [canonical_pattern(v) for v in values], source, "pattern")
    return PatternSet(values)


def _names(table: Mapping[str, Any], name: str, source: str, switchable: Collection[str]) -> frozenset[str]:
    raw = table.get(name, [])
    key = f"shields.{name}"
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RuleError(source, key, f"must be a list of shield names ({', '.join(switchable)})")
    for i, item in enumerate(raw):
        if item not in switchable:
            raise RuleError(source, f"{key}[{i}]", f"{item!r} is not a shield (expected one of {', '.join(switchable)})")
    return frozenset(raw)


def _ignored(table: Mapping[str, Any], source: str, evidence: Mapping[str, Collection[str]]) -> frozenset[tuple[str, str]]:
    raw = table.get("ignore", [])
    key = "shields.ignore"
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RuleError(source, key, "must be a list of '<shield>:<evidence>' strings, e.g. \"dc_ip:vpn_asn\"")
    out = set()
    for i, item in enumerate(raw):
        reason, _, label = item.partition(":")
        known = evidence.get(reason)
        if not known:
            raise RuleError(source, f"{key}[{i}]", f"{item!r}: {reason!r} is not a shield that names evidence "
                            f"(one of {', '.join(r for r, labels in evidence.items() if labels)})")
        if label not in known:
            raise RuleError(source, f"{key}[{i}]", f"{item!r}: {reason} names no evidence {label!r} "
                            f"(expected one of {', '.join(known)})")
        out.add((reason, label))
    return frozenset(out)


def parse_site_shields(table: Mapping[str, Any], source: str, *, switchable: Collection[str],
                       evidence: Mapping[str, Collection[str]] | None = None) -> SiteShields:
    """Validate a site file's `[shields]` table and compile it.

    `switchable` names what `disabled` and `report_only` accept: the drop reasons of the steps
    that run for a known site, in their order (the gateway's `gateway.ingest.steps.SWITCHABLE`);
    `evidence` the labels each may name, which `ignore = ["<reason>:<label>"]` accepts.
    Raises `RuleError(source, key, reason)`; the message names the file, the key with its index
    and what is wrong, e.g. `shop.toml: shields.ip_blocklist[3]: '10.0.0.0/33' is not a network`.
    """
    if not isinstance(table, Mapping):
        raise RuleError(source, "shields", "must be a table")
    for key in table:
        if key not in _KEYS:
            raise RuleError(source, f"shields.{key}", f"unknown key (expected one of {', '.join(sorted(_KEYS))})")
    lists = {name: _rules(table, name, source) for name in _LIST_KEYS}
    ip_block, ip_block_report = _ip_rules(lists["ip_blocklist"], source)
    ip_allow, _ = _ip_rules(lists["ip_allowlist"], source)
    countries, countries_report = _country_rules(lists["country_blocklist"], source)
    pages, pages_report = _page_rules(lists["page_blocklist"], source)
    hostnames = _host_rules(lists["hostname_allowlist"], source)
    disabled = _names(table, "disabled", source, switchable)
    report_only = _names(table, "report_only", source, switchable)
    ignored = _ignored(table, source, evidence or {})
    both = disabled & report_only
    if both:
        raise RuleError(source, "shields.report_only", f"{sorted(both)[0]!r} is also disabled; choose one")
    compiled = CompiledRules(
        ip_block=ip_block,
        ip_block_report=ip_block_report,
        ip_allow=ip_allow,
        countries=countries,
        countries_report=countries_report,
        pages=pages,
        pages_report=pages_report,
        hostnames=hostnames,
    )
    return SiteShields(
        ip_blocklist=tuple(r.value for r in lists["ip_blocklist"]),
        ip_allowlist=tuple(r.value for r in lists["ip_allowlist"]),
        country_blocklist=frozenset(r.value.upper() for r in lists["country_blocklist"]),
        page_blocklist=tuple(r.value for r in lists["page_blocklist"]),
        hostname_allowlist=tuple(r.value for r in lists["hostname_allowlist"]),
        disabled=disabled,
        report_only=report_only,
        ignored=ignored,
        compiled=compiled,
    )


# --- the site-rule shields ---------------------------------------------------------------------


class SiteHostnameShield:
    """With a hostname allowlist, only events for a matching hostname are kept."""

    reason: ClassVar[DropReason] = DropReason.SITE_HOSTNAME_ALLOWLIST

    def applies(self, site: SiteConfig) -> bool:
        return bool(site.shields.compiled.hostnames)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        hostnames = site.shields.compiled.hostnames
        if not hostnames or hostnames.match(event.hostname):
            return None
        return Verdict(self.reason, detail="hostname not on the site's allowlist")


class SitePageShield:
    """Drops events for pages on the site's page blocklist."""

    reason: ClassVar[DropReason] = DropReason.SITE_PAGE_BLOCKLIST

    def applies(self, site: SiteConfig) -> bool:
        rules = site.shields.compiled
        return bool(rules.pages or rules.pages_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        rules = site.shields.compiled
        if rules.pages and rules.pages.match(event.pathname):
            return Verdict(self.reason, detail="page on the site's blocklist")
        if rules.pages_report and rules.pages_report.match(event.pathname):
            return Verdict(self.reason, report_only=True, detail="page on the site's blocklist (report-only rule)")
        return None


class SiteIPShield:
    """Drops events from addresses on the site's IP blocklist. IP-based: the allowlist exempts."""

    reason: ClassVar[DropReason] = DropReason.SITE_IP_BLOCKLIST
    ip_based: ClassVar[bool] = True

    def applies(self, site: SiteConfig) -> bool:
        rules = site.shields.compiled
        return bool(rules.ip_block or rules.ip_block_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip is None:
            return None
        rules = site.shields.compiled
        if rules.ip_block and rules.ip_block.contains(client.ip):
            return Verdict(self.reason, detail="address on the site's blocklist")
        if rules.ip_block_report and rules.ip_block_report.contains(client.ip):
            return Verdict(self.reason, report_only=True, detail="address on the site's blocklist (report-only rule)")
        return None


class SiteCountryShield:
    """Drops events from countries on the site's blocklist (only when geo/ found a country)."""

    reason: ClassVar[DropReason] = DropReason.SITE_COUNTRY_BLOCKLIST

    def applies(self, site: SiteConfig) -> bool:
        rules = site.shields.compiled
        return bool(rules.countries or rules.countries_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        code = client.country_code
        if not code:
            return None
        rules = site.shields.compiled
        code = code.upper()
        if code in rules.countries:
            return Verdict(self.reason, detail=f"country {code} on the site's blocklist")
        if code in rules.countries_report:
            return Verdict(self.reason, report_only=True, detail=f"country {code} on the site's blocklist (report-only rule)")
        return None
