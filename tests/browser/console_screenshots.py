"""Screenshots of the web console for docs/console.md, from a real gateway fed real events:
`make console-screenshots` (about five minutes: the events are spread over several minutes so
the minute chart has more than one bar)."""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from conftest import CHROMIUM_ARGS  # noqa: E402
from gatewayproc import ROOT, Gateway, write_config  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SITE = ('domain = "shop.example"\n[shields]\npage_blocklist = ["/admin/*", { value = "/preview/*", '
        'report_only = true }]\ncountry_blocklist = []\n')
OUT = ROOT / "docs" / "img"


def feed(gw: Gateway, minutes: int) -> None:
    rnd = random.Random(7)
    pages = ["/", "/pricing", "/blog/launch", "/docs/start", "/signup", "/preview/new-home"]
    for minute in range(minutes):
        for i in range(rnd.randint(25, 45)):
            ip = f"203.0.113.{rnd.randint(1, 250)}"
            gw.post({"n": "pageview", "u": f"https://shop.example{rnd.choice(pages)}", "d": "shop.example",
                     "r": rnd.choice(["https://news.example/", "https://search.example/?q=shop", None])},
                    ip=ip, ua=rnd.choice([CHROME, FIREFOX]))
        for i in range(rnd.randint(5, 15)):
            gw.post({"n": "pageview", "u": f"https://shop.example/p/{i}", "d": "shop.example"},
                    ip="198.51.100.7", ua=rnd.choice(["curl/8.5.0", "python-requests/2.32.3",
                                                      "Mozilla/5.0 (compatible; Googlebot/2.1)"]))
        for i in range(rnd.randint(3, 10)):
            gw.post({"n": "pageview", "u": "https://shop.example/", "d": "shop.example"}, ip="198.51.100.8",
                    ua=CHROME, browser=False)  # a library with a browser's User-Agent
        for i in range(rnd.randint(1, 4)):
            gw.post({"n": "pageview", "u": "https://shop.example/admin/orders", "d": "shop.example"},
                    ip="203.0.113.99", ua=CHROME)
        if minute < minutes - 1:
            time.sleep(60)


def main() -> int:
    minutes = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    base = Path(tempfile.mkdtemp(prefix="console-shots-"))
    gw = Gateway(write_config(base, sites={"shop": SITE}))
    gw.start()
    try:
        feed(gw, minutes)
        manage = gw.key("shop.example", "manage", "docs")
        time.sleep(3)
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{gw.url}/console/")
            page.screenshot(path=str(OUT / "console-sign-in.png"))
            page.fill("#key", manage)
            page.click("button[type=submit]")
            page.wait_for_selector("main[data-site]")
            page.click("button[data-range='3600']")
            deadline = time.monotonic() + 10
            while not page.evaluate("document.querySelectorAll('#drops tbody tr').length") and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)
            page.screenshot(path=str(OUT / "console-dashboard.png"), full_page=True)
            page.fill("#rules", '{\n  "page_blocklist": ["/admin/*", "/pricing"],\n  "report_only": ["spoofed_agent"],\n'
                                '  "ip_blocklist": ["198.51.100.0/24"]\n}')
            page.click("#dry-run")
            page.wait_for_selector("#dry-result .tally")
            time.sleep(0.5)
            page.locator("#editor").screenshot(path=str(OUT / "console-editor.png"))
            browser.close()
    finally:
        gw.close()
        shutil.rmtree(base, ignore_errors=True)
    for name in ("console-sign-in.png", "console-dashboard.png", "console-editor.png"):
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
