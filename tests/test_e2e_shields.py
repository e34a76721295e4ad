"""The shield chain through the real server: drops, counts, site switches, list reloads, explain."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gatewayproc import ROOT, Gateway, metric_value, write_config

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
SITES = {
    "site": 'domain = "site.test"\n',
    "lenient": 'domain = "lenient.test"\n[shields]\ndisabled = ["spam_referrer", "dc_ip"]\n',
}


def _lists(base: Path, spam: str = "spam-seo.example\n", dc: str = "198.18.0.0/15\n") -> None:
    d = base / "data" / "lists"
    d.mkdir(parents=True, exist_ok=True)
    (d / "referrer_spam.txt").write_text(spam)
    (d / "datacenter_ips.txt").write_text(dc)


def _event(domain: str = "site.test", **extra: object) -> dict[str, object]:
    return {"n": "pageview", "u": f"https://{domain}/", "d": domain, **extra}


def _gateway(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    _lists(tmp_path / "gw")
    return start_gateway(base=tmp_path / "gw", sites=SITES)


def test_bots_spam_and_datacenter_clients_are_dropped_and_counted(start_gateway: Callable[..., Gateway],
                                                                   tmp_path: Path) -> None:
    gw = _gateway(start_gateway, tmp_path)
    cases = [
        ("bot", dict(ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")),
        ("bot", dict(ua="python-requests/2.32.3")),
        ("bot", dict(ua="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "HeadlessChrome/131.0.0.0 Safari/537.36")),
        ("bot", dict(ua="")),
        ("dc_ip", dict(ip="198.18.3.4", ua=CHROME)),
    ]
    for reason, kw in cases:
        r = gw.post(_event(), **kw)  # type: ignore[arg-type]
        assert r.status_code == 202 and r.json() == {"accepted": 0, "dropped": 1}, (reason, kw, r.text)
    r = gw.post(_event(r="https://www.spam-seo.example/page"), ua=CHROME)
    assert r.json() == {"accepted": 0, "dropped": 1}
    # The tracker's own automation flag drops an otherwise ordinary browser.
    assert gw.post(_event(b=1), ua=CHROME).json() == {"accepted": 0, "dropped": 1}
    assert gw.post(_event(), ip="203.0.113.50", ua=CHROME).json() == {"accepted": 1}
    metrics = gw.client.get("/metrics").text
    assert metric_value(metrics, "gateway_events_dropped_total", site="site.test", reason="bot") == 5
    assert metric_value(metrics, "gateway_events_dropped_total", site="site.test", reason="dc_ip") == 1
    assert metric_value(metrics, "gateway_events_dropped_total", site="site.test", reason="spam_referrer") == 1
    assert metric_value(metrics, "gateway_shield_list_entries", list="referrer_spam") is not None
    assert len(gw.wait_rows(1)) == 1


def test_a_site_can_switch_off_the_spam_and_datacenter_shields(start_gateway: Callable[..., Gateway],
                                                               tmp_path: Path) -> None:
    gw = _gateway(start_gateway, tmp_path)
    r = gw.post(_event("lenient.test", r="https://spam-seo.example/"), ip="198.18.0.9", ua=CHROME)
    assert r.json() == {"accepted": 1}
    r = gw.post(_event("site.test", r="https://spam-seo.example/"), ip="198.18.0.9", ua=CHROME)
    assert r.json() == {"accepted": 0, "dropped": 1}
    # Spam on a domain no site declares is spam first (checked before the site lookup).
    gw.post(_event("nobody.test", r="https://spam-seo.example/"), ua=CHROME)
    assert gw.metric("gateway_events_dropped_total", site="(unknown)", reason="spam_referrer") == 1


def test_an_updated_list_file_is_picked_up_without_a_restart(start_gateway: Callable[..., Gateway],
                                                              tmp_path: Path) -> None:
    gw = _gateway(start_gateway, tmp_path)
    referrer = "https://fresh-spam.example/"
    assert gw.post(_event(r=referrer), ua=CHROME).json() == {"accepted": 1}
    _lists(tmp_path / "gw", spam="spam-seo.example\nfresh-spam.example\n")
    deadline = time.monotonic() + 15
    while gw.post(_event(r=referrer), ua=CHROME).json() != {"accepted": 0, "dropped": 1}:
        assert time.monotonic() < deadline, "the new list was not loaded"
        time.sleep(0.5)


def test_a_remembered_client_meets_an_updated_datacenter_list(start_gateway: Callable[..., Gateway],
                                                               tmp_path: Path) -> None:
    # The worker keeps a client's datacenter verdict with the client: a reloaded list must
    # still reach a client it has already seen.
    gw = _gateway(start_gateway, tmp_path)
    assert gw.post(_event(), ip="203.0.113.77", ua=CHROME).json() == {"accepted": 1}
    assert gw.post(_event(), ip="203.0.113.77", ua=CHROME).json() == {"accepted": 1}
    _lists(tmp_path / "gw", dc="198.18.0.0/15\n203.0.113.0/24\n")
    deadline = time.monotonic() + 15
    while gw.post(_event(), ip="203.0.113.77", ua=CHROME).json() != {"accepted": 0, "dropped": 1}:
        assert time.monotonic() < deadline, "the remembered client kept its old verdict"
        time.sleep(0.5)


def test_explain_prints_every_shields_decision(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw", sites=SITES)
    _lists(tmp_path / "gw")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "explain", "--config", str(cfg), "--domain", "site.test",
         "--url", "https://site.test/", "--ip", "198.18.1.1", "--ua", "curl/8.5.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dc_ip: drop" in out.stdout
    assert "bot: drop" in out.stdout  # every shield is shown, also after the first drop
    assert "=> dropped" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "explain", "--config", str(cfg), "--domain", "site.test",
         "--url", "https://site.test/", "--ip", "203.0.113.9", "--ua", CHROME],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "=> kept" in out.stdout, out.stdout
