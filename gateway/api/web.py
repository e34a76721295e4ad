"""The web console at `/console/`: server-rendered pages for site owners (docs/console.md).

`GET /console/` is the sign-in form, or, with valid keys in the `egw_console` cookie, the
dashboard of one of their sites (`?site=`, else the latest signed in), with a switch to the
others. A key belongs to one site: an owner of several signs in with each, and the cookie keeps
one key per site (at most ten, gateway/api/auth.py); signing out forgets them all. The
dashboard's script (gateway/static/console/console.js) reads the console API same-origin with
that cookie and draws with the vendored chart library (console_js/, `make console-js`); nothing
is loaded from elsewhere. The rule editor is only in the page of a `manage` key (and the API
refuses a `read` key's PUT anyway).

The cookie is HttpOnly and SameSite=Strict, Secure when the request came over https (the socket,
or `X-Forwarded-Proto` from a trusted proxy). Every key the page or the sign-in form finds
invalid takes a token from the same per-client failure bucket as the API's, so neither can be
used to guess keys faster; an empty bucket answers 429. Keys that are no longer valid are
dropped from the cookie. When the key store cannot be read the page answers 503, never a guess.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
from importlib import resources
from urllib.parse import quote

from sanic import Request
from sanic.exceptions import NotFound
from sanic.response import HTTPResponse

from gateway.api.auth import COOKIE, FAILURES_BURST, FAILURES_PER_MINUTE, cookie_keys, cookie_value, failure_key
from gateway.api.common import runtime
from gateway.ingest.sites import normalise_domain
from gateway.state.keys import KeyRecord

__all__ = ["asset", "dashboard", "sign_in", "sign_out"]

_HTML = "text/html; charset=utf-8"
_SECURITY = {
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
_ASSETS = {"console.js": "application/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
           "chart.umd.min.js": "application/javascript; charset=utf-8"}
_COOKIE_DAYS = 7

log = logging.getLogger("gateway.api")


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    doc = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
           "<meta name=viewport content='width=device-width, initial-scale=1'>"
           f"<title>{html.escape(title)} · edge gateway console</title>"
           "<link rel=icon href='data:,'><link rel=stylesheet href='/console/static/console.css'></head>"
           f"<body>{body}</body></html>")
    return HTTPResponse(doc, status=status, headers={**_SECURITY, **(headers or {})}, content_type=_HTML)


def _sign_in_page(message: str = "", status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    note = f"<p class=error role=alert>{html.escape(message)}</p>" if message else ""
    body = ("<main class=narrow><h1>Site console</h1>"
            "<p>Sign in with a key made by <code>edge-gateway keys create --scope read</code> (or "
            "<code>manage</code> to edit the shield rules).</p>"
            f"{note}<form method=post action='/console/sign-in' class=signin>"
            "<label for=key>API key</label>"
            "<input id=key name=key type=password autocomplete=off required maxlength=200 spellcheck=false>"
            "<button type=submit>Sign in</button></form></main>")
    return _page("Sign in", body, status, headers)


def _secure(request: Request) -> bool:
    rt = runtime(request)
    conn = request.conn_info
    client = rt.clients(request.ip, request.headers, conn is not None and conn.ssl)
    return client.headers is not None and client.headers.transport == "https"


def _cookie(request: Request, pairs: list[tuple[str, str]]) -> str:
    """The Set-Cookie value holding these (site, key) pairs; none clears the cookie."""
    max_age = _COOKIE_DAYS * 86400 if pairs else 0
    flags = f"{COOKIE}={cookie_value(pairs)}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return flags + ("; Secure" if _secure(request) else "")


def _too_many(wait: float) -> HTTPResponse:
    return _sign_in_page("Too many failed attempts: wait a minute and try again.", 429,
                         {"retry-after": str(max(1, math.ceil(wait)))})


def _unavailable() -> HTTPResponse:
    """The key store cannot be read: neither a sign-in form (the keys may be fine) nor a guess."""
    body = ("<main class=narrow><h1>Site console</h1><p class=error role=alert>Keys cannot be checked "
            "right now: reload this page in a few seconds.</p></main>")
    return _page("Unavailable", body, 503, {"retry-after": "5"})


async def _verify(request: Request, tokens: list[str]) -> list[KeyRecord | None]:
    """Each token's live key, in one trip to a worker thread. Raises the key store's errors."""
    verify = runtime(request).keys.verify
    return await asyncio.get_running_loop().run_in_executor(None, lambda: [verify(t) for t in tokens])


async def dashboard(request: Request) -> HTTPResponse:
    """`GET /console/?site=`: the dashboard of a signed-in site, else the sign-in form."""
    rt = runtime(request)
    pairs = cookie_keys(request)
    if not pairs:
        return _sign_in_page()
    bucket = failure_key(rt, request)
    ok, wait = rt.limiter.peek(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
    if not ok:
        return _too_many(wait)
    try:
        records = await _verify(request, [token for _, token in pairs])
    except Exception as exc:  # the key store cannot be read: refuse, never guess
        log.warning("console: keys cannot be checked: %s: %s", type(exc).__name__, exc)
        return _unavailable()
    live: list[tuple[str, KeyRecord]] = []
    for (_, token), record in zip(pairs, records):
        if record is None:
            # Each invalid key costs a token, as a Bearer one does; one that cannot be paid for
            # answers 429, so a cookie of many guesses says no more than a single one.
            paid, wait = rt.limiter.allow(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
            if not paid:
                return _too_many(wait)
        elif record.scope != "ingest" and all(r.site != record.site for _, r in live):
            live.append((token, record))
    kept = [(r.site, token) for token, r in live]
    headers = {"set-cookie": _cookie(request, kept)} if kept != pairs else {}
    if not live:
        return _sign_in_page("Your key is no longer valid: sign in again.", headers=headers)
    wanted = request.args.get("site")
    current = live[0][1]
    if wanted:
        domain = normalise_domain(wanted)[:253]
        found = rt.sites.get(domain)
        chosen = [r for _, r in live if found is not None and r.site == found.domain]
        if not chosen:  # the same answer whether the site exists or not
            return _sign_in_page(f"This browser holds no key for {domain}: sign in with one.", 404, headers)
        current = chosen[0]
    site = rt.sites.get(current.site)
    if site is None:
        return _sign_in_page(f"The site {current.site} is no longer configured.", headers=headers)
    return _dashboard_page(site.domain, current, [r.site for _, r in live], headers)


def _site_switch(current: str, sites: list[str]) -> str:
    links = "".join(
        f"<a href='/console/?site={html.escape(quote(s, safe=''), quote=True)}'"
        f"{' aria-current=page' if s == current else ''}>{html.escape(s)}</a>" for s in sites)
    return ("<nav class=sites aria-label='sites'>" + links +
            "<details class=add-site><summary>Add a site</summary>"
            "<form method=post action='/console/sign-in' class=signin>"
            "<label for=add-key>A key for another site</label>"
            "<input id=add-key name=key type=password autocomplete=off required maxlength=200 spellcheck=false>"
            "<button type=submit id=add-site>Sign in</button></form></details></nav>")


def _dashboard_page(domain: str, record: KeyRecord, sites: list[str], headers: dict[str, str]) -> HTTPResponse:
    manage = record.scope == "manage"
    editor = ("<section id=editor class=card><h2>Shield rules</h2>"
              "<p class=hint>The site file's <code>[shields]</code> table as JSON. Preview what it would "
              "have done with a dry run before you save.</p>"
              "<textarea id=rules rows=14 spellcheck=false aria-label='shield rules'></textarea>"
              "<div class=row><label>Look back <select id=days><option value=1>1 day</option>"
              "<option value=7 selected>7 days</option></select></label>"
              "<button id=dry-run type=button>Dry run</button>"
              "<button id=save type=button class=primary>Save</button>"
              "<span id=saved class=ok role=status></span></div>"
              "<ul id=rule-errors class=error role=alert></ul>"
              "<div id=dry-result></div>"
              "<details><summary>History</summary><ul id=history></ul></details></section>") if manage else ""
    reasons = "".join(f"<option>{html.escape(r)}</option>" for r in _reason_names())
    body = (
        f"<header><h1>{html.escape(domain)}</h1>"
        f"<span class=who>key {html.escape(record.id)} · {html.escape(record.scope)}</span>"
        f"{_site_switch(domain, sites)}"
        "<form method=post action='/console/sign-out'><button type=submit id=sign-out>Sign out</button></form>"
        "</header>"
        f"<main data-site='{html.escape(domain, quote=True)}' data-scope='{html.escape(record.scope)}'>"
        "<nav class=ranges aria-label='time range'>"
        "<button data-range=3600 data-interval=minute>1 hour</button>"
        "<button data-range=86400 data-interval=hour class=active>24 hours</button>"
        "<button data-range=604800 data-interval=day>7 days</button></nav>"
        "<section class=card><h2>Accepted and dropped events</h2>"
        "<div class=totals id=totals></div><div class=chart><canvas id=chart aria-label='events by outcome'>"
        "</canvas></div></section>"
        "<section class=card><h2>Report-only: would have been dropped</h2>"
        "<div class='chart small'><canvas id=would-chart></canvas></div><p id=would-none class=hint></p></section>"
        "<section class='card tops'><h2>Among the drop records</h2><div class=grid>"
        "<div><h3>Pages</h3><ol id=top-pages></ol></div><div><h3>Referrer hosts</h3><ol id=top-referrers></ol></div>"
        "<div><h3>Countries</h3><ol id=top-countries></ol></div><div><h3>Evidence</h3><ol id=top-evidence></ol></div>"
        "</div></section>"
        "<section class=card><h2>Recent drops</h2><div class=row>"
        f"<label>Reason <select id=f-reason><option value=''>any</option>{reasons}</select></label>"
        "<label>Evidence <input id=f-evidence maxlength=60 placeholder='any'></label>"
        "<button id=f-apply type=button>Filter</button></div>"
        "<table id=drops><thead><tr><th>time (UTC)</th><th>reason</th><th>evidence</th><th>page</th>"
        "<th>referrer</th><th>country</th><th>browser</th><th>detail</th></tr></thead><tbody></tbody></table>"
        "<button id=more type=button hidden>Older</button></section>"
        f"{editor}</main><script src='/console/static/chart.umd.min.js'></script>"
        "<script src='/console/static/console.js'></script>")
    return _page(domain, body, headers=headers)


def _reason_names() -> list[str]:
    from gateway.api.openapi import REASONS

    return REASONS


async def sign_in(request: Request) -> HTTPResponse:
    """`POST /console/sign-in` (form field `key`): check the key, then set the cookie."""
    rt = runtime(request)
    if request.headers.get("sec-fetch-site") == "cross-site":
        return _sign_in_page("Sign in from this page.", 403)
    bucket = failure_key(rt, request)
    ok, wait = rt.limiter.peek(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
    if not ok:
        return _too_many(wait)
    token = (request.form.get("key") or "").strip() if request.form else ""
    try:
        record = (await _verify(request, [token]))[0] if token else None
    except Exception as exc:
        log.warning("console: keys cannot be checked: %s: %s", type(exc).__name__, exc)
        return _sign_in_page("Keys cannot be checked right now: try again shortly.", 503, {"retry-after": "5"})
    if record is None or record.scope == "ingest":
        if record is None:
            rt.limiter.allow(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
            return _sign_in_page("That key is not valid (unknown, revoked or mistyped).", 401)
        return _sign_in_page("An ingest key cannot open the console: use a read or manage key.", 403)
    # The new key first, replacing any other key of its site; the oldest falls off past the bound.
    pairs = [(record.site, token), *(p for p in cookie_keys(request) if p[0] != record.site)]
    response = HTTPResponse(status=303, headers={"location": f"/console/?site={quote(record.site, safe='')}",
                                                 **_SECURITY})
    response.headers["set-cookie"] = _cookie(request, pairs)
    return response


async def sign_out(request: Request) -> HTTPResponse:
    """`POST /console/sign-out`: forget every key the cookie holds."""
    response = HTTPResponse(status=303, headers={"location": "/console/", **_SECURITY})
    response.headers["set-cookie"] = _cookie(request, [])
    return response


async def asset(request: Request, name: str) -> HTTPResponse:
    """`GET /console/static/<name>`: the console's script, style sheet and chart library."""
    ctype = _ASSETS.get(name)
    if ctype is None:
        raise NotFound("no such file")
    body = resources.files("gateway").joinpath(f"static/console/{name}").read_bytes()
    return HTTPResponse(body, content_type=ctype, headers={"cache-control": "public, max-age=300",
                                                           "x-content-type-options": "nosniff"})
