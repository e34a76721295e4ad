"""The chain: precedence of drop reasons, report-only, switches and the IP allowlist."""

from __future__ import annotations

import ipaddress

import pytest

from shields import (
    VERIFICATION_AGENT_UA,
    BotMatcher,
    ClientContext,
    DropReason,
    Event,
    IntervalSet,
    LiveLists,
    ShieldChain,
    SiteConfig,
    SpamReferrerList,
    default_chain,
    explain,
    parse_site_shields,
    run_chain,
)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


@pytest.fixture(scope="module")
def chain() -> tuple:
    lists = LiveLists(
        referrer_spam=SpamReferrerList(["spam.example"]),
        datacenter_ips=IntervalSet.from_lines(["203.0.113.0/24"]),
        threat_ips=IntervalSet.from_lines(["198.51.100.66"]),
        hosting_asns=frozenset({64500}),
    )
    return default_chain(lists, BotMatcher.default())


def site(**table: object) -> SiteConfig:
    return SiteConfig(domain="shop.example", source="shop.toml", shields=parse_site_shields(table, "shop.toml"))


def event(**kw: object) -> Event:
    base: dict[str, object] = dict(name="pageview", domain="shop.example", url="https://shop.example/",
                                   hostname="shop.example", pathname="/")
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def client(ip: str | None = "192.0.2.10", ua: str = BROWSER, **kw: object) -> ClientContext:
    return ClientContext(ip=ipaddress.ip_address(ip) if ip else None, user_agent=ua, **kw)  # type: ignore[arg-type]


def reason(result: tuple) -> str | None:
    dropped, _ = result
    return None if dropped is None else dropped.reason.value


def test_the_default_order_is_the_documented_precedence(chain: tuple) -> None:
    assert [s.reason.value for s in chain] == [
        "spam_referrer", "verification_agent", "dc_ip", "threat_ip", "site_hostname_allowlist",
        "site_page_blocklist", "site_ip_blocklist", "site_country_blocklist", "bot",
    ]


def test_a_human_passes(chain: tuple) -> None:
    assert run_chain(chain, event(), client(), site()) == (None, ())


def test_bot_on_blocked_ip_counts_as_site_ip_blocklist(chain: tuple) -> None:
    s = site(ip_blocklist=["192.0.2.10"])
    assert reason(run_chain(chain, event(), client(ua="curl/8.0"), s)) == "site_ip_blocklist"


def test_spam_referrer_beats_everything(chain: tuple) -> None:
    result = run_chain(chain, event(referrer="https://x.spam.example/"), client("203.0.113.1", ua=""), site())
    assert reason(result) == "spam_referrer"


def test_verification_agent_beats_datacenter(chain: tuple) -> None:
    result = run_chain(chain, event(), client("203.0.113.1", ua=VERIFICATION_AGENT_UA), site())
    assert reason(result) == "verification_agent"


def test_datacenter_beats_threat_and_site_rules(chain: tuple) -> None:
    s = site(page_blocklist=["/*"], country_blocklist=["DE"])
    assert reason(run_chain(chain, event(), client("203.0.113.1", ip_type="threat_ip", country_code="DE"), s)) == "dc_ip"


def test_hostname_allowlist_beats_page_blocklist(chain: tuple) -> None:
    s = site(hostname_allowlist=["shop.example"], page_blocklist=["/admin*"])
    assert reason(run_chain(chain, event(hostname="evil.example", pathname="/admin"), client(), s)) == "site_hostname_allowlist"
    assert reason(run_chain(chain, event(pathname="/admin"), client(), s)) == "site_page_blocklist"


def test_country_beats_bot(chain: tuple) -> None:
    s = site(country_blocklist=["KP"])
    assert reason(run_chain(chain, event(), client(ua="curl/8", country_code="KP"), s)) == "site_country_blocklist"


def test_empty_user_agent_and_automation_are_bots(chain: tuple) -> None:
    assert reason(run_chain(chain, event(), client(ua=""), site())) == "bot"
    assert reason(run_chain(chain, event(automation=True), client(), site())) == "bot"


def test_report_only_shield_counts_would_drop_and_lets_the_event_through(chain: tuple) -> None:
    dropped, would = run_chain(chain, event(), client(ua="curl/8"), site(report_only=["bot"]))
    assert dropped is None
    assert [w.reason for w in would] == [DropReason.BOT] and would[0].report_only


def test_report_only_rule_then_enforced_shield_reports_both(chain: tuple) -> None:
    s = site(page_blocklist=[{"value": "/beta/*", "report_only": True}])
    dropped, would = run_chain(chain, event(pathname="/beta/x"), client(ua="curl/8"), s)
    assert dropped is not None and dropped.reason is DropReason.BOT
    assert [w.reason for w in would] == [DropReason.SITE_PAGE_BLOCKLIST]


def test_disabled_global_shield_is_skipped(chain: tuple) -> None:
    assert reason(run_chain(chain, event(), client("203.0.113.1"), site(disabled=["dc_ip"]))) is None
    assert reason(run_chain(chain, event(), client(ua="curl/8"), site(disabled=["bot"]))) is None


def test_ip_allowlist_exempts_from_every_ip_based_shield(chain: tuple) -> None:
    s = site(ip_allowlist=["203.0.113.0/24", "198.51.100.66"], ip_blocklist=["203.0.113.5"])
    assert reason(run_chain(chain, event(), client("203.0.113.5"), s)) is None  # dc_ip and site_ip_blocklist
    assert reason(run_chain(chain, event(), client("198.51.100.66"), s)) is None  # threat_ip
    assert reason(run_chain(chain, event(), client("203.0.113.5", ip_type="dc_ip"), s)) is None  # header too


def test_ip_allowlist_does_not_exempt_from_bot_or_page_rules(chain: tuple) -> None:
    s = site(ip_allowlist=["192.0.2.10"], page_blocklist=["/admin"])
    assert reason(run_chain(chain, event(), client(ua="curl/8"), s)) == "bot"
    assert reason(run_chain(chain, event(pathname="/admin"), client(), s)) == "site_page_blocklist"


def test_shield_chain_is_the_pipeline_callable(chain: tuple) -> None:
    runner = ShieldChain(chain)
    dropped, would = runner(event(), client(ua="curl/8"), site())
    assert dropped is not None and dropped.reason is DropReason.BOT and would == ()


def test_shield_chain_plans_per_site_object_and_follows_a_reloaded_site(chain: tuple) -> None:
    # ShieldChain keeps one plan per site object; a reload builds new objects and so new plans.
    runner = ShieldChain(chain)
    cases = [
        (site(disabled=["bot"]), client(ua="curl/8"), event(), None),
        (site(), client(ua="curl/8"), event(), "bot"),
        (site(page_blocklist=["/admin"]), client(), event(pathname="/admin"), "site_page_blocklist"),
        (site(), client(), event(pathname="/admin"), None),
        (site(country_blocklist=["DE"]), client(country_code="DE"), event(), "site_country_blocklist"),
        (site(ip_allowlist=["203.0.113.0/24"]), client("203.0.113.1"), event(), None),
        (site(), client("203.0.113.1"), event(), "dc_ip"),
    ]
    for _ in range(2):  # the second time round every plan comes from the cache
        for s, c, e, expected in cases:
            assert reason(runner(e, c, s)) == expected == reason(run_chain(chain, e, c, s))


def test_a_reused_client_keeps_its_client_only_verdicts_and_each_site_still_applies_its_switches() -> None:
    lists = LiveLists(datacenter_ips=IntervalSet.from_lines(["203.0.113.0/24"]))
    runner = ShieldChain(default_chain(lists, BotMatcher.default()))
    kept = client("203.0.113.1", memo={})
    plain = client("203.0.113.1")
    assert reason(runner(event(), kept, site())) == "dc_ip"
    assert [k.reason for k in kept.memo] == [DropReason.VERIFICATION_AGENT, DropReason.DC_IP]  # type: ignore[union-attr]
    # the kept verdict still meets each site's allowlist, report-only and switches
    assert reason(runner(event(), kept, site(ip_allowlist=["203.0.113.1"]))) is None
    dropped, would = runner(event(), kept, site(report_only=["dc_ip"]))
    assert dropped is None and [w.reason for w in would] == [DropReason.DC_IP]
    assert reason(runner(event(), kept, site(disabled=["dc_ip"]))) is None
    # a reloaded list reaches a one-off context at once, a reused one once its memo is emptied
    lists.datacenter_ips = IntervalSet()
    assert reason(runner(event(), plain, site())) is None
    assert reason(runner(event(), kept, site())) == "dc_ip"
    kept.memo.clear()  # type: ignore[union-attr]
    assert reason(runner(event(), kept, site())) is None
    # the event-dependent shields are never kept: automation still makes the same client a bot
    assert reason(runner(event(automation=True), kept, site())) == "bot"


def test_explain_lists_every_shield_with_its_outcome(chain: tuple) -> None:
    s = site(ip_allowlist=["203.0.113.5"], disabled=["threat_ip"], report_only=["site_page_blocklist"],
             page_blocklist=["/admin"])
    reports = explain(chain, event(pathname="/admin"), client("203.0.113.5", ua="curl/8.0"), s)
    outcomes = {r.reason: r.outcome for r in reports}
    assert len(reports) == len(chain)
    assert outcomes["dc_ip"] == "exempt" and outcomes["threat_ip"] == "disabled"
    assert outcomes["site_page_blocklist"] == "would_drop" and outcomes["bot"] == "drop"
    assert outcomes["spam_referrer"] == "pass"
    bot = next(r for r in reports if r.reason == "bot")
    assert "curl" in bot.detail
