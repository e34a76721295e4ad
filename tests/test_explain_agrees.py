"""`edge-gateway explain` and the running server decide the same, for every step the site can
switch, enforced, disabled and report-only in turn: explain runs the server's steps with the
same executor, and these tests hold it to that through the real server on loopback."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from browser_headers import browser_headers, claims_a_browser
from gatewayproc import Gateway, metric_value, write_config
from gateway.cli import main as cli
from gateway.ingest.steps import STEPS, SWITCHABLE
from geo.testdb import nested_city_record, write_db
from shields.bots import VERIFICATION_AGENT_UA

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
HUMAN_IP = "203.0.113.50"


@dataclass(frozen=True)
class Trigger:
    """What makes one step object: the site's rules, and the event and client that meet them."""

    rules: str = ""  # lines of the site's [shields] table
    tables: str = ""  # other tables of the site file
    ua: str = CHROME
    ip: str = HUMAN_IP
    host: str = ""  # the page's host, when not the site's own
    path: str = "/"
    extra: dict[str, Any] = field(default_factory=dict)
    primer: bool = False  # a first event the site accepts, so that the second one objects
    bare: bool = False  # a browser's User-Agent without the headers that browser sends


TRIGGERS: dict[str, Trigger] = {
    "spam_referrer": Trigger(extra={"r": "https://www.spam-seo.example/page"}),
    "rate_limited": Trigger(tables="[rate_limit]\nevents_per_minute = 1\nburst = 1\n", primer=True),
    "spoofed_agent": Trigger(bare=True),
    "verification_agent": Trigger(ua=VERIFICATION_AGENT_UA + "/1.0"),
    "dc_ip": Trigger(ip="198.18.0.9"),
    "threat_ip": Trigger(ip="198.51.100.66"),
    "site_hostname_allowlist": Trigger(rules='hostname_allowlist = ["{domain}"]', host="elsewhere.test"),
    "site_page_blocklist": Trigger(rules='page_blocklist = ["/private/*"]', path="/private/report"),
    "site_ip_blocklist": Trigger(rules='ip_blocklist = ["192.0.2.77"]', ip="192.0.2.77"),
    "site_country_blocklist": Trigger(rules='country_blocklist = ["KP"]', ip="175.45.176.9"),
    "bot": Trigger(ua="curl/8.5.0"),
    "velocity": Trigger(tables="[velocity]\nmax_events_per_visit = 1\n", primer=True),
}
MODES = ("enforced", "disabled", "report_only")


def domain_of(reason: str, mode: str) -> str:
    return f"{reason.replace('_', '-')}.{mode.replace('_', '-')}.test"


def site_file(reason: str, mode: str) -> str:
    t = TRIGGERS[reason]
    domain = domain_of(reason, mode)
    shields = [t.rules.format(domain=domain)] if t.rules else []
    if mode != "enforced":
        shields.append(f'{mode} = ["{reason}"]')
    text = f'domain = "{domain}"\n{t.tables}'
    if shields:
        text += "[shields]\n" + "\n".join(shields) + "\n"
    return text


def body(reason: str, domain: str) -> dict[str, Any]:
    t = TRIGGERS.get(reason, Trigger())
    return {"n": "pageview", "u": f"https://{t.host or domain}{t.path}", "d": domain, **t.extra}


def would_drops_before_the_drop(steps: list[dict[str, str]]) -> set[str]:
    """The report-only objections the server counts: those met before the first drop."""
    met = set()
    for s in steps:
        if s["outcome"] == "drop":
            break
        if s["outcome"] == "would_drop":
            met.add(s["reason"])
    return met


def sent_headers(gateway: Gateway, event: dict[str, Any], t: Trigger) -> dict[str, str]:
    """The headers `Gateway.post` sends for this trigger, as explain's --header lines take them."""
    headers = {} if t.bare or not claims_a_browser(t.ua) else browser_headers(t.ua, event["u"])
    return {**headers, "host": f"127.0.0.1:{gateway.port}"}


def explain(gateway: Gateway, event: dict[str, Any], t: Trigger) -> dict[str, Any]:
    out = io.StringIO()
    lines = [f"--header={k}: {v}" for k, v in sent_headers(gateway, event, t).items() if k != "user-agent"]
    with contextlib.redirect_stdout(out):
        code = cli(["explain", "--config", str(gateway.config), "--ua", t.ua, "--ip", t.ip, "--event",
                    json.dumps(event), "--json", *lines])
    assert code == 0, out.getvalue()
    [decided] = json.loads(out.getvalue())["events"]
    return decided  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("agree")
    lists = base / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "referrer_spam.txt").write_text("spam-seo.example\n")
    (lists / "datacenter_ips.txt").write_text("198.18.0.0/15\n")
    (lists / "threat_ips.txt").write_text("198.51.100.66\n")
    geo_db = write_db(base / "geo.mmdb", [("175.45.176.0/22", nested_city_record("KP"))])
    sites = {domain_of(r, m): site_file(r, m) for r in SWITCHABLE for m in MODES}
    cfg = write_config(base, sites=sites, extra=f'[geo]\ndatabase = "{geo_db}"\n')
    gw = Gateway(cfg).start()
    try:
        yield gw
    finally:
        gw.close()


def test_every_step_of_the_server_is_covered_here() -> None:
    assert set(TRIGGERS) == set(SWITCHABLE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reason", SWITCHABLE)
def test_explain_and_the_server_agree(gateway: Gateway, reason: str, mode: str) -> None:
    t = TRIGGERS[reason]
    domain = domain_of(reason, mode)
    event = body(reason, domain)
    if t.primer:
        assert gateway.post(event, ip=t.ip, ua=t.ua).json() == {"accepted": 1}
    told = explain(gateway, event, t)
    answer = gateway.post(event, ip=t.ip, ua=t.ua, browser=not t.bare).json()
    metrics = gateway.client.get("/metrics").text
    reasons = [s.reason.value for s in STEPS]
    dropped = {r for r in reasons if metric_value(metrics, "gateway_events_dropped_total", site=domain, reason=r)}
    would = {r for r in reasons if metric_value(metrics, "gateway_events_would_drop_total", site=domain, reason=r)}

    # the step itself, as the site switched it
    step = next(s for s in told["steps"] if s["reason"] == reason)
    assert step["outcome"] == {"enforced": "drop", "disabled": "disabled", "report_only": "would_drop"}[mode], told
    # the decision: explain's is the server's answer and what the server counted
    assert told["kept"] == (answer == {"accepted": 1}), (told, answer)
    assert {told["reason"]} - {None} == dropped, (told, dropped)
    assert would_drops_before_the_drop(told["steps"]) == would, (told, would)
    assert (reason in dropped, reason in would) == {"enforced": (True, False), "disabled": (False, False),
                                                    "report_only": (False, True)}[mode]
    if mode == "enforced":
        # a single event refused by the rate limit is answered 429 (with Retry-After), any other drop 202
        refused = {"errors": {"request": ["rate limited"]}} if reason == "rate_limited" else {"accepted": 0, "dropped": 1}
        assert answer == refused


def test_explain_and_the_server_agree_on_an_unknown_site(gateway: Gateway) -> None:
    event = body("", "nobody.test")
    told = explain(gateway, event, Trigger())
    assert gateway.post(event, ip=HUMAN_IP, ua=CHROME).json() == {"accepted": 0, "dropped": 1}
    assert told["kept"] is False and told["reason"] == "unknown_site" and told["site"] == "(unknown)"
    assert gateway.metric("gateway_events_dropped_total", site="(unknown)", reason="unknown_site") == 1
    spam = body("spam_referrer", "nobody.test")
    told = explain(gateway, spam, Trigger())
    assert gateway.post(spam, ip=HUMAN_IP, ua=CHROME).json() == {"accepted": 0, "dropped": 1}
    assert told["reason"] == "spam_referrer"
    assert gateway.metric("gateway_events_dropped_total", site="(unknown)", reason="spam_referrer") == 1


def test_explain_prints_each_step_in_order(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["explain", "--config", str(gateway.config), "--ua", "curl/8.5.0", "--ip", "198.18.0.9",
                "--domain", domain_of("bot", "enforced"), "--url", f"https://{domain_of('bot', 'enforced')}/"])
    out = capsys.readouterr().out
    assert code == 0
    lines = [line.strip().split(":", 1)[0] for line in out.splitlines() if line.startswith("  ") and "=>" not in line]
    assert lines == [s.reason.value for s in STEPS]
    assert "dc_ip: drop" in out and "bot: drop" in out and "=> dropped (dc_ip)" in out
