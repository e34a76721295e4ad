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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shields.errors import RuleError
from shields.iplists import IntervalSet, parse_network
from shields.model import ClientContext, DropReason, Event, SiteConfig, SiteShields, Verdict

__all__ = [
    "CHAIN_REASONS",
    "CompiledRules",
    "PatternSet",
    "RuleError",
    "SiteCountryShield",
    "SiteHostnameShield",
    "SiteIPShield",
    "SitePageShield",
    "compiled_rules",
    "ip_allowlisted",
    "parse_site_shields",
]

COUNTRY_FILE = Path(__file__).parent / "data" / "iso3166_alpha2.txt"
MAX_RULES = 10_000  # per list: bounds memory and compile time, far above any real need
MAX_PATTERN_CHARS = 250

#: Shield names that `disabled` and `report_only` accept: the chain's drop reasons.
CHAIN_REASONS: tuple[str, ...] = (
    DropReason.SPAM_REFERRER.value,
    DropReason.VERIFICATION_AGENT.value,
    DropReason.DC_IP.value,
    DropReason.THREAT_IP.value,
    DropReason.SITE_HOSTNAME_ALLOWLIST.value,
    DropReason.SITE_PAGE_BLOCKLIST.value,
    DropReason.SITE_IP_BLOCKLIST.value,
    DropReason.SITE_COUNTRY_BLOCKLIST.value,
    DropReason.BOT.value,
)

_LIST_KEYS = ("ip_blocklist", "ip_allowlist", "country_blocklist", "page_blocklist", "hostname_allowlist")
_KEYS = frozenset(_LIST_KEYS) | {"disabled", "report_only"}
_ALLOWLISTS = frozenset({"ip_allowlist", "hostname_allowlist"})


def _load_countries() -> frozenset[str]:
    codes: set[str] = set()
    for line in COUNTRY_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            codes.update(line.split())
    return frozenset(codes)


COUNTRY_CODES = _load_countries()


# --- wildcard patterns -------------------------------------------------------------------------


class PatternSet:
    """Anchored `*` patterns compiled into one matcher: a set for exact values plus one regex
    built from a trie of the wildcard patterns."""

    __slots__ = ("exact", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.exact = frozenset(p for p in self.patterns if "*" not in p)
        wild = sorted({p for p in self.patterns if "*" in p})
        self._regex = re.compile(_trie_regex(wild), re.DOTALL) if wild else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, value: str) -> bool:
        if value in self.exact:
            return True
        return self._regex is not None and self._regex.fullmatch(value) is not None

    def which(self, value: str) -> str | None:
        """The first pattern that matches (for explanations; not on the hot path)."""
        for pattern in self.patterns:
            if pattern == value or ("*" in pattern and wildcard_regex(pattern).fullmatch(value)):
                return pattern
        return None


def _tokens(pattern: str) -> list[str]:
    # `**` is the same as `*` (reference semantics), so runs of stars collapse to one token.
    out: list[str] = []
    for char in pattern:
        if char == "*":
            if not out or out[-1] != "*":
                out.append("*")
        else:
            out.append(char)
    return out


_END = ""


def _trie_regex(patterns: Sequence[str]) -> str:
    trie: dict[str, Any] = {}
    for pattern in patterns:
        node = trie
        for token in _tokens(pattern):
            node = node.setdefault(token, {})
        node[_END] = {}
    return _node_regex(trie)


def _node_regex(node: dict[str, Any]) -> str:
    ends_here = _END in node
    branches = [
        (".*" if token == "*" else re.escape(token)) + _node_regex(child)
        for token, child in sorted(node.items())
        if token != _END
    ]
    if not branches:
        return ""
    if len(branches) == 1 and not ends_here:
        return branches[0]
    alternation = "(?:" + "|".join(branches) + ")"
    return alternation + "?" if ends_here else alternation


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """The reference's translation of one pattern: escape, `**`/`*` → `.*`, anchored."""
    return re.compile("".join(".*" if t == "*" else re.escape(t) for t in _tokens(pattern)), re.DOTALL)


# --- compiled rules ----------------------------------------------------------------------------


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


_EMPTY = CompiledRules()


def compiled_rules(site: SiteConfig) -> CompiledRules:
    """The site's compiled rules (an empty set for a SiteConfig built without the parser)."""
    compiled = site.shields.compiled
    return compiled if isinstance(compiled, CompiledRules) else _EMPTY


def ip_allowlisted(client: ClientContext, site: SiteConfig) -> bool:
    """True when the site exempts this client from IP-based shields."""
    if client.ip is None:
        return False
    allow = compiled_rules(site).ip_allow
    return bool(allow) and allow.contains(client.ip)


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
    _no_duplicates(rules, ["".join(_tokens(r.value)) for r in rules], source, "pattern")
    return (PatternSet(r.value for r in rules if not r.report_only),
            PatternSet(r.value for r in rules if r.report_only))


_HOST_PATTERN = re.compile(r"^[a-z0-9*_.-]+$")


def _host_rules(rules: list[_Rule], source: str) -> PatternSet:
    values = []
    for rule in rules:
        _pattern_checks(rule, source)
        value = rule.value.lower().rstrip(".")
        # Events carry hostnames without a leading "www.", so rules are compared the same way.
        value = value.removeprefix("www.")
        if not _HOST_PATTERN.match(value) and value != "(none)":
            raise RuleError(source, rule.key, f"{rule.value!r} is not a host name pattern (e.g. *.example.com)")
        values.append(value)
    _no_duplicates(rules, ["".join(_tokens(v)) for v in values], source, "pattern")
    return PatternSet(values)


def _names(table: Mapping[str, Any], name: str, source: str) -> frozenset[str]:
    raw = table.get(name, [])
    key = f"shields.{name}"
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RuleError(source, key, f"must be a list of shield names ({', '.join(CHAIN_REASONS)})")
    for i, item in enumerate(raw):
        if item not in CHAIN_REASONS:
            raise RuleError(source, f"{key}[{i}]", f"{item!r} is not a shield (expected one of {', '.join(CHAIN_REASONS)})")
    return frozenset(raw)


def parse_site_shields(table: Mapping[str, Any], source: str) -> SiteShields:
    """Validate a site file's `[shields]` table and compile it.

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
    disabled = _names(table, "disabled", source)
    report_only = _names(table, "report_only", source)
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
        compiled=compiled,
    )


# --- the site-rule shields ---------------------------------------------------------------------


class SiteHostnameShield:
    """With a hostname allowlist, only events for a matching hostname are kept."""

    reason = DropReason.SITE_HOSTNAME_ALLOWLIST

    def applies(self, site: SiteConfig) -> bool:
        return bool(compiled_rules(site).hostnames)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        hostnames = compiled_rules(site).hostnames
        if not hostnames or hostnames.match(event.hostname):
            return None
        return Verdict(self.reason, detail="hostname not on the site's allowlist")


class SitePageShield:
    """Drops events for pages on the site's page blocklist."""

    reason = DropReason.SITE_PAGE_BLOCKLIST

    def applies(self, site: SiteConfig) -> bool:
        rules = compiled_rules(site)
        return bool(rules.pages or rules.pages_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        rules = compiled_rules(site)
        if rules.pages and rules.pages.match(event.pathname):
            return Verdict(self.reason, detail="page on the site's blocklist")
        if rules.pages_report and rules.pages_report.match(event.pathname):
            return Verdict(self.reason, report_only=True, detail="page on the site's blocklist (report-only rule)")
        return None


class SiteIPShield:
    """Drops events from addresses on the site's IP blocklist. IP-based: the allowlist exempts."""

    reason = DropReason.SITE_IP_BLOCKLIST
    ip_based = True

    def applies(self, site: SiteConfig) -> bool:
        rules = compiled_rules(site)
        return bool(rules.ip_block or rules.ip_block_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip is None:
            return None
        rules = compiled_rules(site)
        if rules.ip_block and rules.ip_block.contains(client.ip):
            return Verdict(self.reason, detail="address on the site's blocklist")
        if rules.ip_block_report and rules.ip_block_report.contains(client.ip):
            return Verdict(self.reason, report_only=True, detail="address on the site's blocklist (report-only rule)")
        return None


class SiteCountryShield:
    """Drops events from countries on the site's blocklist (only when geo/ found a country)."""

    reason = DropReason.SITE_COUNTRY_BLOCKLIST

    def applies(self, site: SiteConfig) -> bool:
        rules = compiled_rules(site)
        return bool(rules.countries or rules.countries_report)

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        code = client.country_code
        if not code:
            return None
        rules = compiled_rules(site)
        code = code.upper()
        if code in rules.countries:
            return Verdict(self.reason, detail=f"country {code} on the site's blocklist")
        if code in rules.countries_report:
            return Verdict(self.reason, report_only=True, detail=f"country {code} on the site's blocklist (report-only rule)")
        return None
