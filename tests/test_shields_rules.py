"""Site owners' rules: parsing and validation messages, wildcard semantics, the site shields."""

from __future__ import annotations

import ipaddress
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.steps import SWITCHABLE
from shields.errors import RuleError
from shields.model import ClientContext, DropReason, Event, SiteConfig
from shields.patterns import PatternSet, wildcard_regex
from shields.rules import (
    SiteCountryShield,
    SiteHostnameShield,
    SiteIPShield,
    SitePageShield,
    parse_site_shields,
)

SRC = "config/sites/shop.toml"


def site(**table: object) -> SiteConfig:
    return SiteConfig(domain="shop.example", source=SRC, shields=parse_site_shields(table, SRC, switchable=SWITCHABLE))


def event(pathname: str = "/", hostname: str = "shop.example") -> Event:
    return Event(name="pageview", domain="shop.example", url=f"https://{hostname}{pathname}", hostname=hostname,
                 pathname=pathname)


def client(addr: str | None = None, country: str | None = None) -> ClientContext:
    return ClientContext(ip=ipaddress.ip_address(addr) if addr else None, user_agent="x", country_code=country)


# --- validation messages ---


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ip_blocklist": ["1.2.3.4", "10.0.0.0/8", "5.6.7.8", "10.0.0.0/33"]},
         "config/sites/shop.toml: shields.ip_blocklist[3]: '10.0.0.0/33' is not a network"),
        ({"ip_allowlist": ["nope"]}, "shields.ip_allowlist[0]: 'nope' is not an IP address"),
        ({"country_blocklist": ["XX"]}, "shields.country_blocklist[0]: 'XX' is not an ISO 3166-1 alpha-2 country code"),
        ({"country_blocklist": ["USA"]}, "'USA' is not an ISO 3166-1 alpha-2"),
        ({"page_blocklist": ["admin/*"]}, "shields.page_blocklist[0]: 'admin/*' must start with /"),
        ({"page_blocklist": ["/test/*", "/test/**"]}, "shields.page_blocklist[1]: '/test/**' repeats shields.page_blocklist[0]"),
        ({"hostname_allowlist": ["bad host"]}, "shields.hostname_allowlist[0]: 'bad host' is not a host name pattern"),
        ({"ip_blocklist": "1.2.3.4"}, "shields.ip_blocklist: must be a list"),
        ({"ip_blocklist": [{"value": "1.2.3.4", "reportonly": True}]}, "shields.ip_blocklist[0].reportonly: unknown key"),
        ({"hostname_allowlist": [{"value": "a.com", "report_only": True}]}, "report_only applies to blocklist rules"),
        ({"disabled": ["bots"]}, "shields.disabled[0]: 'bots' is not a shield"),
        ({"report_only": ["bot"], "disabled": ["bot"]}, "'bot' is also disabled"),
        ({"ip_blocklsit": []}, "shields.ip_blocklsit: unknown key"),
        ({"page_blocklist": [3]}, "shields.page_blocklist[0]: must be a string"),
    ],
)
def test_bad_rules_are_rejected_with_file_key_and_reason(table: dict, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_site_shields(table, SRC, switchable=SWITCHABLE)
    assert message in str(info.value)
    assert info.value.source == SRC and info.value.key.startswith("shields")


def test_empty_table_gives_no_rules() -> None:
    s = site()
    assert SitePageShield().check(event("/admin"), client(), s) is None
    assert SiteHostnameShield().check(event(hostname="other.example"), client(), s) is None


# --- pages ---


@pytest.mark.parametrize(
    ("pattern", "path", "blocked"),
    [
        ("/test/*", "/test/", True),
        ("/test/*", "/test/hello", True),
        ("/test/*", "/test/a/b", True),
        ("/test/*", "/test", False),
        ("/test/*", "/testing", False),
        ("/test/**", "/test/a/b", True),
        ("/blog/*/draft", "/blog/2024/05/draft", True),
        ("/blog/*/draft", "/blog/draft", False),
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("/Admin", "/admin", False),  # case-sensitive, as in the reference
        ("/a.b", "/aXb", False),  # dots are literal
        ("/#/settings*", "/#/settings/profile", True),  # hash-mode paths carry the fragment
    ],
)
def test_page_patterns_follow_the_reference_wildcards(pattern: str, path: str, blocked: bool) -> None:
    verdict = SitePageShield().check(event(path), client(), site(page_blocklist=[pattern]))
    assert (verdict is not None) is blocked
    if verdict:
        assert verdict.reason is DropReason.SITE_PAGE_BLOCKLIST and not verdict.report_only


path_chars = st.text(alphabet="/ab.*-", min_size=1, max_size=8)


@given(st.lists(path_chars.map(lambda s: "/" + s), min_size=1, max_size=8, unique=True), st.text(alphabet="/ab.-", max_size=10))
def test_one_compiled_matcher_agrees_with_rule_by_rule_matching(patterns: list[str], tail: str) -> None:
    ps = PatternSet(patterns)
    value = "/" + tail
    expected = any(wildcard_regex(p).fullmatch(value) for p in patterns)
    assert ps.match(value) is expected


def test_hundreds_of_page_rules_cost_about_what_a_handful_do() -> None:
    few = PatternSet([f"/section{i}/*" for i in range(5)])
    many = PatternSet([f"/section{i}/*/item{i % 7}*" for i in range(500)] + [f"/exact/{i}" for i in range(500)])
    paths = [f"/blog/post-{i}/comments" for i in range(2000)]

    def cost(ps: PatternSet) -> float:
        start = time.perf_counter()
        for _ in range(5):
            for p in paths:
                ps.match(p)
        return time.perf_counter() - start

    cost(few), cost(many)  # warm up
    assert cost(many) < 5 * cost(few) + 0.01


def test_report_only_page_rule_reports_without_dropping() -> None:
    s = site(page_blocklist=["/admin/*", {"value": "/preview/*", "report_only": True, "note": "trial"}])
    assert SitePageShield().check(event("/admin/x"), client(), s) == SitePageShield().check(event("/admin/y"), client(), s)
    verdict = SitePageShield().check(event("/preview/1"), client(), s)
    assert verdict is not None and verdict.report_only


# --- hostnames ---


@pytest.mark.parametrize(
    ("pattern", "hostname", "kept"),
    [
        ("*.example.com", "sub.example.com", True),
        ("*.example.com", "example.com", False),
        ("*example.com", "example.com", True),
        ("*example.com", "sub.example.com", True),
        ("example.com", "example.com", True),
        ("www.example.com", "example.com", True),  # events carry hostnames without www.
        ("Example.COM", "example.com", True),
        ("example.com", "evil-example.com", False),
    ],
)
def test_hostname_allowlist_keeps_only_matching_hostnames(pattern: str, hostname: str, kept: bool) -> None:
    verdict = SiteHostnameShield().check(event(hostname=hostname), client(), site(hostname_allowlist=[pattern]))
    assert (verdict is None) is kept


# --- IPs and countries ---


def test_ip_blocklist_takes_addresses_and_cidrs_v4_and_v6() -> None:
    s = site(ip_blocklist=["203.0.113.7", "198.51.100.0/24", "2001:db8::/32"])
    shield = SiteIPShield()
    for addr in ("203.0.113.7", "198.51.100.200", "2001:db8:abcd::1", "::ffff:203.0.113.7"):
        verdict = shield.check(event(), client(addr), s)
        assert verdict is not None and verdict.reason is DropReason.SITE_IP_BLOCKLIST, addr
    for addr in ("203.0.113.8", "2001:db9::1"):
        assert shield.check(event(), client(addr), s) is None
    assert shield.check(event(), client(None), s) is None


def test_report_only_ip_rule_reports() -> None:
    s = site(ip_blocklist=[{"value": "192.0.2.0/24", "report_only": True}])
    verdict = SiteIPShield().check(event(), client("192.0.2.9"), s)
    assert verdict is not None and verdict.report_only


def test_country_blocklist_is_case_insensitive_and_needs_a_known_country() -> None:
    s = site(country_blocklist=["kp", {"value": "RU", "report_only": True}])
    shield = SiteCountryShield()
    blocked = shield.check(event(), client(country="KP"), s)
    assert blocked is not None and not blocked.report_only
    reported = shield.check(event(), client(country="ru"), s)
    assert reported is not None and reported.report_only
    assert shield.check(event(), client(country=None), s) is None
    assert shield.check(event(), client(country="A1"), s) is None


def test_parsed_rules_keep_their_text_for_display() -> None:
    s = site(ip_blocklist=["10.0.0.0/8"], country_blocklist=["de"], disabled=["dc_ip"], report_only=["bot"])
    assert s.shields.ip_blocklist == ("10.0.0.0/8",)
    assert s.shields.country_blocklist == frozenset({"DE"})
    assert s.shields.disabled == frozenset({"dc_ip"}) and s.shields.report_only == frozenset({"bot"})
    assert re.search("CompiledRules", repr(s.shields.compiled))
