"""The steps and their executor: precedence of drop reasons, report-only, switches, the IP
allowlist, the verdicts a remembered client keeps, and tracing for explain."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.executor import Executor
from gateway.ingest.sites import Sites
from gateway.ingest.steps import _BUILD, STEPS, SWITCHABLE, UNKNOWN
from gateway.runtime import offline_executor
from gateway.state.generation import Generation
from shields import (
    VERIFICATION_AGENT_UA,
    BotMatcher,
    DropReason,
    IntervalSet,
    LiveLists,
    SiteConfig,
    SpamReferrerList,
    parse_site_shields,
)

ROOT = Path(__file__).resolve().parent.parent
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
BOTS = BotMatcher.default()


def make_executor(lists: LiveLists, tmp: Path, generation: Generation | None = None) -> Executor:
    return offline_executor(lists, tmp, bots=BOTS, generation=generation)


@pytest.fixture(scope="module")
def lists() -> LiveLists:
    return LiveLists(
        referrer_spam=SpamReferrerList(["spam.example"]),
        datacenter_ips=IntervalSet.from_lines(["203.0.113.0/24"]),
        threat_ips=IntervalSet.from_lines(["198.51.100.66"]),
        hosting_asns=frozenset({64500}),
    )


@pytest.fixture(scope="module")
def ex(lists: LiveLists, tmp_path_factory: pytest.TempPathFactory) -> Executor:
    return make_executor(lists, tmp_path_factory.mktemp("steps"))


def site(**table: object) -> SiteConfig:
    return SiteConfig(domain="shop.example", source="shop.toml",
                      shields=parse_site_shields(table, "shop.toml", switchable=SWITCHABLE))


def event(**kw: object) -> ParsedEvent:
    base: dict[str, object] = dict(name="pageview", domain="shop.example", url="https://shop.example/",
                                   hostname="shop.example", pathname="/")
    base.update(kw)
    return ParsedEvent(**base)  # type: ignore[arg-type]


def client(ip: str | None = "192.0.2.10", ua: str = BROWSER, kept: bool = False, **kw: object) -> Client:
    return Client(ip=ipaddress.ip_address(ip) if ip else None, user_agent=ua,  # type: ignore[arg-type]
                  verdicts={} if kept else None, visitor_ids={} if kept else None, **kw)


def run_chain(ex: Executor, e: ParsedEvent, c: Client, s: SiteConfig) -> tuple:
    """What the executor decides for one event of site `s`."""
    ex.use(Sites({s.domain: s}, (s,)))
    return ex.decide(e, c)


def reason(result: tuple) -> str | None:
    dropped, _ = result
    return None if dropped is None else dropped.reason.value


# --- the one order ---------------------------------------------------------------------------


def test_the_steps_are_the_documented_precedence() -> None:
    assert [s.reason.value for s in STEPS] == [
        "spam_referrer", "unknown_site", "rate_limited", "spoofed_agent", "verification_agent", "dc_ip", "threat_ip",
        "site_hostname_allowlist", "site_page_blocklist", "site_ip_blocklist", "site_country_blocklist", "bot",
        "velocity",
    ]


def test_drop_reasons_are_declared_in_the_order_of_the_steps_then_the_rest() -> None:
    declared = [r.value for r in DropReason]
    steps = [s.reason.value for s in STEPS]
    assert declared[: len(steps)] == steps
    assert declared[len(steps):] == ["invalid", "no_consent"]  # given by the parsers, not by a step


def test_switchable_reasons_are_the_steps_that_run_for_a_known_site() -> None:
    assert SWITCHABLE == tuple(s.reason.value for s in STEPS if s.reason is not DropReason.UNKNOWN_SITE)


def test_every_step_is_built_once_in_order(ex: Executor) -> None:
    assert set(_BUILD) == set(STEPS)
    assert [type(s) for s in ex.steps] == list(STEPS)


def test_the_shield_reference_table_lists_the_reasons_in_step_order() -> None:
    text = (ROOT / "docs" / "shields.md").read_text()
    table = text.split("## Order and drop reasons", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *(\d+) *\| *`([a-z_]+)`", table, re.M)
    assert [name for _, name in rows] == [s.reason.value for s in STEPS]
    assert [int(n) for n, _ in rows] == list(range(1, len(STEPS) + 1))


def test_every_arrow_list_of_the_steps_in_the_docs_follows_the_tuple() -> None:
    # Docs that draw the order as "a → b → c" (architecture map, README-level overviews) must
    # not drift from STEPS: any run of step names joined by arrows is checked, wherever it is.
    names = {s.reason.value for s in STEPS}
    order = [s.reason.value for s in STEPS]
    found = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = " ".join(doc.read_text().split())  # arrow lists may wrap across lines
        for run in re.findall(r"[a-z_]+(?: → [a-z_]+)+", text):
            chain = run.split(" → ")
            if not set(chain) <= names:
                continue
            found += 1
            positions = [order.index(n) for n in chain]
            assert positions == sorted(positions), f"{doc.name}: {run}"
    assert found, "no arrow list of the steps found in the docs"


# --- precedence ------------------------------------------------------------------------------


def test_a_human_passes(ex: Executor) -> None:
    assert run_chain(ex, event(), client(), site()) == (None, ())


def test_bot_on_blocked_ip_counts_as_site_ip_blocklist(ex: Executor) -> None:
    s = site(ip_blocklist=["192.0.2.10"])
    assert reason(run_chain(ex, event(), client(ua="curl/8.0"), s)) == "site_ip_blocklist"


def test_spam_referrer_beats_everything(ex: Executor) -> None:
    result = run_chain(ex, event(referrer="https://x.spam.example/"), client("203.0.113.1", ua=""), site())
    assert reason(result) == "spam_referrer"


def test_spam_referrer_on_an_unknown_domain_is_spam_and_otherwise_unknown_site(ex: Executor) -> None:
    ex.use(Sites({}, ()))
    assert reason(ex.decide(event(referrer="https://spam.example/"), client())) == "spam_referrer"
    assert reason(ex.decide(event(), client(ua="curl/8"))) == "unknown_site"
    assert ex.site_of("shop.example") is UNKNOWN


def test_verification_agent_beats_datacenter(ex: Executor) -> None:
    result = run_chain(ex, event(), client("203.0.113.1", ua=VERIFICATION_AGENT_UA), site())
    assert reason(result) == "verification_agent"


def test_datacenter_beats_threat_and_site_rules(ex: Executor) -> None:
    s = site(page_blocklist=["/*"], country_blocklist=["DE"])
    assert reason(run_chain(ex, event(), client("203.0.113.1", ip_type="threat_ip", country_code="DE"), s)) == "dc_ip"


def test_hostname_allowlist_beats_page_blocklist(ex: Executor) -> None:
    s = site(hostname_allowlist=["shop.example"], page_blocklist=["/admin*"])
    assert reason(run_chain(ex, event(hostname="evil.example", pathname="/admin"), client(), s)) == "site_hostname_allowlist"
    assert reason(run_chain(ex, event(pathname="/admin"), client(), s)) == "site_page_blocklist"


def test_country_beats_bot(ex: Executor) -> None:
    s = site(country_blocklist=["KP"])
    assert reason(run_chain(ex, event(), client(ua="curl/8", country_code="KP"), s)) == "site_country_blocklist"


def test_empty_user_agent_and_automation_are_bots(ex: Executor) -> None:
    assert reason(run_chain(ex, event(), client(ua=""), site())) == "bot"
    assert reason(run_chain(ex, event(automation=True), client(), site())) == "bot"


# --- switches --------------------------------------------------------------------------------


def test_report_only_shield_counts_would_drop_and_lets_the_event_through(ex: Executor) -> None:
    dropped, would = run_chain(ex, event(), client(ua="curl/8"), site(report_only=["bot"]))
    assert dropped is None
    assert [w.reason for w in would] == [DropReason.BOT] and would[0].report_only


def test_report_only_rule_then_enforced_shield_reports_both(ex: Executor) -> None:
    s = site(page_blocklist=[{"value": "/beta/*", "report_only": True}])
    dropped, would = run_chain(ex, event(pathname="/beta/x"), client(ua="curl/8"), s)
    assert dropped is not None and dropped.reason is DropReason.BOT
    assert [w.reason for w in would] == [DropReason.SITE_PAGE_BLOCKLIST]


def test_disabled_global_shield_is_skipped(ex: Executor) -> None:
    assert reason(run_chain(ex, event(), client("203.0.113.1"), site(disabled=["dc_ip"]))) is None
    assert reason(run_chain(ex, event(), client(ua="curl/8"), site(disabled=["bot"]))) is None


def test_a_site_switches_the_steps_before_the_site_lookup_too(ex: Executor) -> None:
    spam = event(referrer="https://spam.example/")
    assert reason(run_chain(ex, spam, client(), site(disabled=["spam_referrer"]))) is None
    dropped, would = run_chain(ex, spam, client(), site(report_only=["spam_referrer"]))
    assert dropped is None and [w.reason for w in would] == [DropReason.SPAM_REFERRER]


def test_ip_allowlist_exempts_from_every_ip_based_shield(ex: Executor) -> None:
    s = site(ip_allowlist=["203.0.113.0/24", "198.51.100.66"], ip_blocklist=["203.0.113.5"])
    assert reason(run_chain(ex, event(), client("203.0.113.5"), s)) is None  # dc_ip and site_ip_blocklist
    assert reason(run_chain(ex, event(), client("198.51.100.66"), s)) is None  # threat_ip
    assert reason(run_chain(ex, event(), client("203.0.113.5", ip_type="dc_ip"), s)) is None  # header too


def test_ip_allowlist_does_not_exempt_from_bot_or_page_rules(ex: Executor) -> None:
    s = site(ip_allowlist=["192.0.2.10"], page_blocklist=["/admin"])
    assert reason(run_chain(ex, event(), client(ua="curl/8"), s)) == "bot"
    assert reason(run_chain(ex, event(pathname="/admin"), client(), s)) == "site_page_blocklist"


def test_the_executor_is_what_the_server_runs(ex: Executor) -> None:
    s = site()
    ex.use(Sites({s.domain: s}, (s,)))
    out = ex.run([event(), event(), event(domain="nobody.example")], client(ua="curl/8"))
    assert out.kept == [] and out.dropped == [("shop.example", DropReason.BOT), ("shop.example", DropReason.BOT),
                                               ("(unknown)", DropReason.UNKNOWN_SITE)]
    dropped, would = ex.decide(event(), client(ua="curl/8"))
    assert dropped is not None and dropped.reason is DropReason.BOT and would == ()


def test_plans_follow_reloaded_sites(lists: LiveLists, tmp_path: Path) -> None:
    # The executor works out one plan per site when the sites are loaded; a reload builds new
    # site objects and so new plans, each as a fresh executor would.
    runner = make_executor(lists, tmp_path)
    cases = [
        (site(disabled=["bot"]), client(ua="curl/8"), event(), None),
        (site(), client(ua="curl/8"), event(), "bot"),
        (site(page_blocklist=["/admin"]), client(), event(pathname="/admin"), "site_page_blocklist"),
        (site(), client(), event(pathname="/admin"), None),
        (site(country_blocklist=["DE"]), client(country_code="DE"), event(), "site_country_blocklist"),
        (site(ip_allowlist=["203.0.113.0/24"]), client("203.0.113.1"), event(), None),
        (site(), client("203.0.113.1"), event(), "dc_ip"),
    ]
    for i in range(2):
        for s, c, e, expected in cases:
            fresh = make_executor(lists, tmp_path / f"fresh{i}")
            assert reason(run_chain(runner, e, c, s)) == expected == reason(run_chain(fresh, e, c, s))


def test_a_remembered_client_keeps_its_client_only_verdicts_and_each_site_still_applies_its_switches(
        tmp_path: Path) -> None:
    lists = LiveLists(datacenter_ips=IntervalSet.from_lines(["203.0.113.0/24"]))
    generation = Generation()
    runner = make_executor(lists, tmp_path, generation)
    kept = client("203.0.113.1", kept=True)
    plain = client("203.0.113.1")
    assert reason(run_chain(runner, event(), kept, site())) == "dc_ip"
    assert [k.reason for k in kept.verdicts] == [DropReason.VERIFICATION_AGENT, DropReason.DC_IP]  # type: ignore[union-attr]
    # the kept verdict still meets each site's allowlist, report-only and switches
    assert reason(run_chain(runner, event(), kept, site(ip_allowlist=["203.0.113.1"]))) is None
    dropped, would = run_chain(runner, event(), kept, site(report_only=["dc_ip"]))
    assert dropped is None and [w.reason for w in would] == [DropReason.DC_IP]
    assert reason(run_chain(runner, event(), kept, site(disabled=["dc_ip"]))) is None
    # a reloaded list reaches a one-off client at once, a remembered one once its generation moved
    lists.datacenter_ips = IntervalSet()
    assert reason(run_chain(runner, event(), plain, site())) is None
    assert reason(run_chain(runner, event(), kept, site())) == "dc_ip"
    generation.bump()  # what the worker does when it reloads a list
    assert reason(run_chain(runner, event(), kept, site())) is None
    kept.verdicts.clear()  # type: ignore[union-attr]
    kept.generation = generation.value
    assert reason(run_chain(runner, event(), kept, site())) is None
    # the event-dependent shields are never kept: automation still makes the same client a bot
    assert reason(run_chain(runner, event(automation=True), kept, site())) == "bot"


# --- tracing (explain) -----------------------------------------------------------------------


def test_trace_lists_every_step_with_its_outcome(ex: Executor) -> None:
    s = site(ip_allowlist=["203.0.113.5"], disabled=["threat_ip"], report_only=["site_page_blocklist"],
             page_blocklist=["/admin"])
    ex.use(Sites({s.domain: s}, (s,)))
    trace = ex.trace(event(pathname="/admin"), client("203.0.113.5", ua="curl/8.0"))
    outcomes = {r.reason: r.outcome for r in trace.steps}
    assert len(trace.steps) == len(STEPS)
    assert outcomes["dc_ip"] == "exempt" and outcomes["threat_ip"] == "disabled"
    assert outcomes["site_page_blocklist"] == "would_drop" and outcomes["bot"] == "drop"
    assert outcomes["spam_referrer"] == "pass"
    assert outcomes["unknown_site"] == outcomes["rate_limited"] == outcomes["velocity"] == "not_applicable"
    bot = next(r for r in trace.steps if r.reason == "bot")
    assert "curl" in bot.detail
    assert trace.dropped is not None and trace.dropped.reason is DropReason.BOT


def test_trace_and_decide_agree_on_every_switch_of_every_reason(ex: Executor) -> None:
    """For each step that can object here, with the site enforcing, disabling and reporting it."""
    triggers = {
        "spam_referrer": (event(referrer="https://spam.example/"), client(), {}),
        "verification_agent": (event(), client(ua=VERIFICATION_AGENT_UA), {}),
        "dc_ip": (event(), client("203.0.113.9"), {}),
        "threat_ip": (event(), client("198.51.100.66"), {}),
        "site_hostname_allowlist": (event(hostname="other.example"), client(), {"hostname_allowlist": ["shop.example"]}),
        "site_page_blocklist": (event(pathname="/admin"), client(), {"page_blocklist": ["/admin"]}),
        "site_ip_blocklist": (event(), client("192.0.2.99"), {"ip_blocklist": ["192.0.2.99"]}),
        "site_country_blocklist": (event(), client(country_code="KP"), {"country_blocklist": ["KP"]}),
        "bot": (event(), client(ua="curl/8"), {}),
    }
    for name, (e, c, rules) in triggers.items():
        for switch in (None, "disabled", "report_only"):
            s = site(**rules, **({switch: [name]} if switch else {}))
            dropped, would = run_chain(ex, e, c, s)
            trace = ex.trace(e, c)
            assert (trace.dropped is None) == (dropped is None), (name, switch)
            step = next(r for r in trace.steps if r.reason == name)
            expected = {None: "drop", "disabled": "disabled", "report_only": "would_drop"}[switch]
            assert step.outcome == expected, (name, switch, step)
            assert (name in [w.reason.value for w in would]) == (switch == "report_only"), (name, switch)
