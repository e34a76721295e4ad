"""The `spoofed_agent` shield on the human corpus and on real clients: a section of `make shields-eval`.

- Every User-Agent of `humans.tsv` that claims a browser is sent with the headers that browser
  sends (tests/browser_headers.py, which tests/test_real_browsers.py holds against real Chromium
  and Firefox): the share dropped is the shield's false-positive rate.
- Real clients through Debian's nginx terminating TLS, as in production: Chromium (Playwright)
  and Firefox ESR load a page with our tracker, and requests, httpx, urllib, aiohttp, curl, wget
  and node's fetch post pageviews with browser User-Agents, bare and dressed with Origin, Referer
  and Accept-Language. nginx records each header set; each real browser's set must be kept, and
  each library's set is judged with its own User-Agent and with every 8th browser User-Agent of
  the human corpus in its place (a library sends the same headers whatever User-Agent it is
  given): the share dropped is the library-bot recall.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_headers import browser_headers, claims_a_browser  # noqa: E402
from gateway.ingest.clients import HEADERS, read_browser_headers  # noqa: E402
from shields.agents import TLS13_SINCE, SpoofedAgentShield  # noqa: E402
from shields.claims import claim_of  # noqa: E402
from shields.model import ClientContext, Event, SiteConfig  # noqa: E402

SITE = "site.test"
PAGE = f"https://{SITE}/pricing"
SHIELD = SpoofedAgentShield()
SITE_CONFIG = SiteConfig(domain=SITE)
CLAIMS = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "firefox": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
              "Safari/605.1.15",
    "android": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
               "Mobile Safari/537.36",
}
DRESSING = {"Origin": f"https://{SITE}", "Referer": f"https://{SITE}/pricing", "Accept-Language": "en-US,en;q=0.9"}


def judge(ua: str, headers: dict[str, str]) -> str | None:
    """The signal `spoofed_agent` drops this request for (None: kept), as the gateway judges a
    request that reached it through a TLS-terminating proxy (X-Forwarded-Proto: https)."""
    given = {"x-forwarded-proto": "https", "host": "collector.test",
             **{k.lower(): v for k, v in headers.items() if v}}
    client = ClientContext(ipaddress.ip_address("203.0.113.9"), ua,
                           headers=read_browser_headers(tuple(given.get(h) for h in HEADERS[5:]), True, False))
    event = Event(name="pageview", domain=SITE, url=PAGE, hostname=SITE, pathname="/pricing")
    verdict = SHIELD.check(event, client, SITE_CONFIG)
    return None if verdict is None else verdict.evidence


@contextmanager
def real_front(base: Path) -> Iterator[object]:
    from gatewayproc import Gateway, write_config
    from tls_front import tls_front

    gw = Gateway(write_config(base / "gw", sites={"site": f'domain = "{SITE}"\n'})).start()
    try:
        with tls_front(gw.port, base / "tls") as tls:
            yield tls
    finally:
        gw.close()


def capture(base: Path) -> tuple[list[dict[str, str]], list[tuple[str, bool, dict[str, str]]]]:
    """(header sets real browsers sent, (library, dressed, header set) for each library request)."""
    from playwright.sync_api import sync_playwright
    from tls_front import CHROMIUM_ARGS, LIBRARIES, TLSFront, chromium_path, chromium_user_agent, firefox, send_with

    with real_front(base) as front:
        tls: TLSFront = front  # type: ignore[assignment]
        script = tls.url("collector.test", "/js/script.js")

        def page(name: str) -> str:
            return tls.page(name, f'<!doctype html><title>{name}</title><script defer src="{script}" '
                                  f'data-domain="{SITE}" data-api="{tls.endpoint}"></script><p>{name}</p>')

        with sync_playwright() as p:
            probe = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            ua = chromium_user_agent(probe.version)
            probe.close()
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                        args=[*CHROMIUM_ARGS, f"--user-agent={ua}"])
            try:
                ctx = browser.new_context(user_agent=ua, ignore_https_errors=True)
                for i in range(3):
                    tab = ctx.new_page()
                    with tab.expect_response(lambda r: r.url.endswith("/api/event")):
                        tab.goto(page(f"chromium-{i}.html"))
                    tab.close()
            finally:
                browser.close()
        seen = len(tls.captured())
        with firefox(page("firefox.html"), tls.base, tls.ca_pem):
            import time

            deadline = time.monotonic() + 60
            while len(tls.captured()) == seen and time.monotonic() < deadline:
                time.sleep(0.2)
        browsers = tls.captured()
        url = f"https://127.0.0.1:{tls.port}/api/event"
        sent: list[tuple[str, bool]] = []
        for lib in LIBRARIES:
            for name, claim in CLAIMS.items():
                for dressed in (False, True):
                    body = json.dumps({"n": "pageview", "u": f"https://{SITE}/lib/{lib}/{name}", "d": SITE}).encode()
                    headers = {"User-Agent": claim, "Content-Type": "text/plain", **(DRESSING if dressed else {})}
                    send_with(lib, url, body, headers, tls.ca_pem)
                    sent.append((lib, dressed))
        libraries = tls.captured()[len(browsers):]
    if len(libraries) != len(sent):
        raise RuntimeError(f"nginx recorded {len(libraries)} library requests of {len(sent)}")
    return browsers, [(lib, dressed, h) for (lib, dressed), h in zip(sent, libraries)]


def eval_agents(eval_dir: Path, show_misses: bool) -> list[str]:
    import csv
    import tempfile

    from tls_front import missing_programs

    with (eval_dir / "humans.tsv").open(encoding="utf-8", newline="") as fh:
        humans = [row for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    claiming = [row for row in humans if claims_a_browser(row["user_agent"])]
    dropped: Counter[str] = Counter()
    total: Counter[str] = Counter()
    signals: Counter[str] = Counter()
    misses = []
    for row in claiming:
        ua = row["user_agent"]
        # Through a proxy that forwards the TLS version: what that browser negotiates with a
        # server offering TLS 1.2 and 1.3 (1.3 from the first version that had it).
        claim = claim_of(ua)
        tls = "TLSv1.3" if claim.version >= TLS13_SINCE[claim.engine] else "TLSv1.2"
        signal = judge(ua, {**browser_headers(ua, PAGE), "x-forwarded-tls-version": tls})
        total[row["browser"]] += 1
        if signal is not None:
            dropped[row["browser"]] += 1
            signals[signal] += 1
            misses.append(f"{signal}\t{ua}")
    fp = sum(dropped.values()) / len(claiming) if claiming else 0.0
    print(f"humans.tsv: {len(humans)} User-Agents, {len(claiming)} claim a browser the shield judges; each sent "
          f"with that browser's headers: {sum(dropped.values())} dropped = {fp * 100:.3f} %"
          + (f" by {dict(signals)}" if signals else ""))
    worst = sorted(total, key=lambda b: (-dropped[b], -total[b]))[:8]
    print("  per browser: " + ", ".join(f"{b} {dropped[b]}/{total[b]}" for b in worst))
    if show_misses:
        for line in misses:
            print(f"  dropped human\t{line}")
    failed = []
    if fp > 0.0005:
        failed.append(f"spoofed_agent drops {fp * 100:.3f} % of the human corpus > 0.05 %")

    missing = missing_programs()
    if missing:
        print(f"real clients: SKIPPED, {missing} not installed (make test installs them)")
        return [*failed, "real browsers and libraries not measured"]
    with tempfile.TemporaryDirectory(prefix="agents-eval-") as tmp:
        browsers, libraries = capture(Path(tmp))
    kept = [h for h in browsers if judge(h["user-agent"], h) is None]
    names = sorted({("Firefox" if "Firefox/" in h["user-agent"] else "Chromium") for h in browsers})
    print(f"real browsers ({', '.join(names)}) through nginx: {len(kept)}/{len(browsers)} events kept")
    for h in browsers:
        if h not in kept:
            print(f"  dropped real browser\t{judge(h['user-agent'], h)}\t{h}")
    if len(names) < 2 or len(kept) != len(browsers):
        failed.append(f"real browsers: {len(kept)}/{len(browsers)} kept ({names})")

    from shields.agents import HTTP2_SINCE

    own = sum(judge(h["user-agent"], h) is not None for _, _, h in libraries)
    sample = [row["user_agent"] for row in claiming[::8]]
    ancient = {ua for ua in sample if claim_of(ua).version < HTTP2_SINCE[claim_of(ua).engine]}
    old_total = old_hit = 0
    by_lib: Counter[str] = Counter()
    lib_total: Counter[str] = Counter()
    passed = []
    for lib, dressed, h in libraries:
        for ua in sample:
            key = f"{lib} {'dressed' if dressed else 'bare'}"
            lib_total[key] += 1
            signal = judge(ua, h)
            if ua in ancient:
                old_total += 1
                old_hit += signal is not None
            if signal is not None:
                by_lib[key] += 1
            elif len(passed) < 20:
                passed.append(f"{key}\t{ua}")
    recall = sum(by_lib.values()) / sum(lib_total.values())
    print(f"HTTP libraries through nginx: {own}/{len(libraries)} requests dropped with the User-Agents they sent; "
          f"with {len(sample)} corpus User-Agents each: {sum(by_lib.values())}/{sum(lib_total.values())} = {recall:.4f}")
    print("  per library: " + ", ".join(f"{k} {by_lib[k] / lib_total[k]:.4f}" for k in sorted(lib_total)))
    modern_total, modern_hit = sum(lib_total.values()) - old_total, sum(by_lib.values()) - old_hit
    print(f"  claiming browsers since HTTP/2 (Chrome 51, Firefox 36, Safari 9): {modern_hit}/{modern_total} = "
          f"{modern_hit / modern_total:.4f}; claiming older ones ({len(ancient)} of the {len(sample)} User-Agents): "
          f"{old_hit}/{old_total} = {old_hit / max(old_total, 1):.4f} (caught by the TLS version nginx forwards)")
    if show_misses:
        for line in passed:
            print(f"  library kept\t{line}")
    if own / len(libraries) < 0.99:
        failed.append(f"library-bot recall {own}/{len(libraries)} < 0.99")
    if recall < 0.99:
        failed.append(f"library-bot recall with the corpus User-Agents {recall:.4f} < 0.99")
    return failed
