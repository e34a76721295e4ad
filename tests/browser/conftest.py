"""Real-browser tests for tracker_js/: Debian's Chromium, driven by Playwright, against the real gateway.

Pages are served from loopback as `http://site.test:PORT/...` and load the tracker from the
gateway at `http://collector.test:PORT/js/script.js`; Chromium maps every `*.test` name to
127.0.0.1, so nothing leaves the machine. Events are read back from the gateway's SQLite sink.

Chromium is never downloaded: it comes from $CHROMIUM_PATH or the `chromium` on PATH (Debian's
package, installed by `make test`). Without it the tests are skipped with a loud reason when
pytest is run by hand; under `make test` or CI a missing browser is a failure
(tests/prerequisites.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prerequisites import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP *.test 127.0.0.1, EXCLUDE localhost",
    # Besides each context's user_agent: keepalive requests that outlive their page are sent by
    # the browser process without the per-page override, as "HeadlessChrome", which the
    # gateway's bot shield drops.
    f"--user-agent={CHROME_UA}",
]
ALIAS_PATH = "/js/app.js"
SITE_DOMAIN = "site.test"
EVENT_COLUMNS = (
    "name", "domain", "hostname", "pathname", "referrer", "meta.key", "meta.value",
    "scroll_depth", "engagement_time", "interactive", "revenue_source_amount",
    "revenue_source_currency", "tracker_version",
)


def _unavailable(reason: str) -> None:
    unavailable(f"BROWSER TESTS CANNOT RUN: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    port: int
    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def origin(self) -> str:
        """The gateway as the browser sees it: a cross-site collector host."""
        return f"http://collector.test:{self.port}"

    @property
    def local(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sqlite_path(self) -> Path:
        return self.base / "data" / "events.sqlite3"

    def log(self) -> str:
        try:
            return (self.base / "gateway.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def rows(self, pathname_prefix: str) -> list[dict[str, Any]]:
        """Stored events whose pathname starts with the prefix, oldest first."""
        if not self.sqlite_path.exists():
            return []
        cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        try:
            con = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=5)
            try:
                cur = con.execute(
                    f"SELECT {cols} FROM events WHERE substr(pathname, 1, ?) = ? ORDER BY timestamp, rowid",
                    (len(pathname_prefix), pathname_prefix),
                )
                found = [dict(zip(EVENT_COLUMNS, r)) for r in cur.fetchall()]
            finally:
                con.close()
        except sqlite3.OperationalError:  # table not created yet, or a writer holds a lock
            return []
        for row in found:
            row["props"] = dict(zip(json.loads(row["meta.key"] or "[]"), json.loads(row["meta.value"] or "[]")))
        return found


def _write_gateway_config(base: Path) -> Path:
    (base / "sites").mkdir(parents=True, exist_ok=True)
    (base / "sites" / "site.toml").write_text(f'domain = "{SITE_DOMAIN}"\n')
    cfg = base / "gateway.toml"
    cfg.write_text(
        'data_dir = "data"\n'
        'sites_dir = "sites"\n'
        'trusted_proxies = ["127.0.0.1/32", "::1/128"]\n'
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 8000\n"
        "workers = 1\n"
        "[sink]\n"
        'type = "sqlite"\n'
        "batch_size = 1000\n"
        "flush_interval = 0.1\n"
        "[tracker]\n"
        f'alias_path = "{ALIAS_PATH}"\n'
    )
    return cfg


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("gateway")
    cfg = _write_gateway_config(base)
    port = _free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (base / "gateway.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gw = Gateway(port=port, base=base, proc=proc)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.log()}")
            try:
                with urllib.request.urlopen(f"{gw.local}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not answer /health:\n{gw.log()}")
            time.sleep(0.1)
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


# --------------------------------------------------------------------------- the website


class _SiteHandler(BaseHTTPRequestHandler):
    server: "_SiteServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if "Cache-Control" not in (headers or {}):
            self.send_header("Cache-Control", "no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        """The site's own domain proxying the gateway, as an operator's nginx would."""
        self.server.seen.append((self.command, self.headers.get("Host", ""), self.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        # Every request header but the hop-by-hop ones, as nginx's proxy_pass forwards them (the
        # gateway judges a browser by them), and the client and scheme for the gateway.
        hop = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host",
               "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Proto"] = "http"
        req = urllib.request.Request(self.server.gateway_url + self.path, data=data, method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, body, rh = e.code, e.read(), e.headers
        passed = {k: v for k, v in rh.items() if k.lower().startswith("access-control-") or k.lower() in ("etag", "cache-control")}
        self._reply(status, body, rh.get("Content-Type", "application/octet-stream"), passed)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/js/"):
            return self._proxy()
        page = self.server.pages.get(path)
        if page is not None:
            return self._reply(200, page.encode(), "text/html; charset=utf-8")
        if path.lower().endswith((".pdf", ".txt", ".zip")):
            return self._reply(200, b"file body", "application/octet-stream",
                               {"Content-Disposition": 'attachment; filename="' + path.rsplit("/", 1)[1] + '"'})
        self._reply(200, b"<!doctype html><title>landing</title><p>landing", "text/html; charset=utf-8")

    do_HEAD = do_GET

    def do_OPTIONS(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] == "/api/event":
            return self._proxy()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._reply(200, b"<!doctype html><title>posted</title><p>posted", "text/html; charset=utf-8")


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, gateway_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _SiteHandler)
        self.gateway_url = gateway_url
        self.pages: dict[str, str] = {}
        # (method, Host, path, headers) of every request proxied to the gateway
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []


@pytest.fixture(scope="session")
def site_server(gateway: Gateway) -> Iterator[_SiteServer]:
    server = _SiteServer(gateway.local)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Site:
    """One test's corner of the website: every path is under a unique prefix, and so are its events."""

    server: _SiteServer
    gateway: Gateway
    prefix: str = field(default_factory=lambda: "/" + uuid.uuid4().hex[:12])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/", host: str = "site.test") -> str:
        return f"http://{host}:{self.port}{self.prefix}{path}"

    @property
    def script_src(self) -> str:
        return f"{self.gateway.origin}/js/script.js"

    def add(self, path: str = "/", *, attrs: str = 'data-domain="site.test" data-allow-automation',
            body: str = "", head: str = "", after: str = "", src: str | None = None, script: bool = True) -> str:
        """Serve a page that embeds the tracker; return its URL on site.test."""
        tag = f'<script defer src="{src or self.script_src}" {attrs}></script>' if script else ""
        self.server.pages[self.prefix + path] = (
            "<!doctype html><html><head><meta charset=utf-8><title>fixture</title>"
            f"{head}{tag}{after}</head><body>{body}</body></html>"
        )
        return self.url(path)

    def events(self, count: int = 1, *, name: str | None = None, timeout: float = 8.0) -> list[dict[str, Any]]:
        """Poll the sink until at least `count` matching rows are stored; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.gateway.rows(self.prefix) if name is None or r["name"] == name]
            if len(rows) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(rows) >= count, f"expected {count} {name or 'event'} row(s), got {rows}\n{self.gateway.log()}"
        return rows

    def no_events(self, *, name: str | None = None, settle: float = 0.6) -> None:
        """Nothing (of that name) is stored, after giving the sink time to flush."""
        time.sleep(settle)
        rows = [r for r in self.gateway.rows(self.prefix) if name is None or r["name"] == name]
        assert rows == [], rows


@pytest.fixture
def site(site_server: _SiteServer, gateway: Gateway) -> Site:
    return Site(site_server, gateway)


# --------------------------------------------------------------------------- the browser


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in the
# test thread while it is open, which would break later tests that start their own loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not executable:
        _unavailable("no Chromium: install Debian's `chromium` package or set CHROMIUM_PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package `playwright` is not installed (pip install '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Sent:
    """What the page sent to the event endpoint, as the network saw it."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any
    resource_type: str


@dataclass
class Tab:
    page: Any
    sent: list[Sent]
    responses: list[Any]

    def payloads(self, name: str | None = None) -> list[dict[str, Any]]:
        return [s.body for s in self.sent if s.method == "POST" and (name is None or s.body.get("n") == name)]

    def wait_sent(self, count: int = 1, name: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.payloads(name)) < count and time.monotonic() < deadline:
            self.page.wait_for_timeout(50)
        found = self.payloads(name)
        assert len(found) >= count, f"expected {count} {name or 'event'} request(s), saw {found}"
        return found


@pytest.fixture
def new_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    """Factory for a page in a fresh context (clean storage) that records event requests."""
    contexts: list[Any] = []

    def make(*, user_agent: str = CHROME_UA, init_script: str | None = None, **context_kw: Any) -> Tab:
        ctx = browser.new_context(user_agent=user_agent, **context_kw)
        contexts.append(ctx)
        if init_script:
            ctx.add_init_script(init_script)
        page = ctx.new_page()
        sent: list[Sent] = []
        responses: list[Any] = []

        def on_request(req: Any) -> None:
            if req.url.split("?", 1)[0].endswith("/api/event"):
                try:
                    body = json.loads(req.post_data or "null")
                except ValueError:
                    body = req.post_data
                sent.append(Sent(req.method, req.url, dict(req.headers), body, req.resource_type))

        def on_response(resp: Any) -> None:
            if resp.url.split("?", 1)[0].endswith("/api/event") and resp.request.method == "POST":
                try:
                    responses.append(resp.json())
                except Exception:  # noqa: BLE001 - an opaque or empty body is still a response
                    responses.append(None)

        page.on("request", on_request)
        page.on("response", on_response)
        return Tab(page, sent, responses)

    yield make
    for ctx in contexts:
        ctx.close()
