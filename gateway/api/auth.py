"""Who is asking: the bearer key (or the web console's cookie holding one), its scope and site.

Answers, in this order: too many failed attempts from this client → 429 with `Retry-After`;
no key, a malformed, unknown or revoked key → 401; a key of another site, or a site that does
not exist → 404 (the same answer, so a key cannot probe which sites exist); the right site but
not the scope → 403, or 401 where the caller asks for it (`/api/v1/events`: an ingest endpoint
has nothing to show any other key, so a key of another scope is simply not a key for it). Every
401 takes a token from the client's failure bucket (10 a minute, 20 at once, shared by the
workers, and by the nodes with `[shared]` Redis); its key is a keyed hash of the address with
the day's salt, never the address.

The console's cookie holds one key per site the browser signed in to (at most
`COOKIE_MAX_KEYS`), each with the site it was signed in for: `site:key|site:key`. A request
about a site uses that site's key and no other, so each request checks exactly one key, as a
Bearer request does (a cookie full of guesses gets no more tries than a header). A key sent as
the cookie is accepted for unsafe methods only from the console's own pages
(`Sec-Fetch-Site: same-origin`, or an `Origin` naming this host): with SameSite=Strict that is
belt and braces against cross-site requests riding the cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from urllib.parse import urlsplit

from sanic import Request
from sanic.response import HTTPResponse

from gateway.api.common import json, runtime
from gateway.ingest.sites import normalise_domain
from gateway.runtime import Runtime
from gateway.state.keys import KeyRecord
from shields.model import SiteConfig

__all__ = ["COOKIE", "COOKIE_MAX_KEYS", "FAILURES_BURST", "FAILURES_PER_MINUTE", "authenticate", "client_ip_key",
           "cookie_keys", "cookie_value", "failure_key"]

COOKIE = "egw_console"
# Sites one browser may be signed in to at once: ten (site, key) pairs of the longest domains
# still fit the 4096 bytes a browser keeps for a cookie.
COOKIE_MAX_KEYS = 10
FAILURES_PER_MINUTE = 10
FAILURES_BURST = 20
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

log = logging.getLogger("gateway.api")


def cookie_keys(request: Request) -> list[tuple[str, str]]:
    """The console cookie's (site, key) pairs, the latest sign-in first, one per site, at most
    `COOKIE_MAX_KEYS`. The sites are what the browser says: each key is checked against its own."""
    raw = request.cookies.get(COOKIE) or ""
    pairs: list[tuple[str, str]] = []
    for part in raw.split("|"):
        site, _, token = part.rpartition(":")
        if token and all(site != s for s, _ in pairs):
            pairs.append((site, token))
            if len(pairs) == COOKIE_MAX_KEYS:
                break
    return pairs


def cookie_value(pairs: list[tuple[str, str]]) -> str:
    """The console cookie's value for these (site, key) pairs."""
    return "|".join(f"{site}:{token}" for site, token in pairs[:COOKIE_MAX_KEYS])


def _token(request: Request, rt: Runtime, domain: str | None) -> tuple[str | None, bool]:
    """(token, from the cookie): the Authorization header's, else the cookie's key for `domain`
    (or, for none of its sites, its first key, which then answers as a key of another site)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        return (value.strip() if scheme.lower() == "bearer" else "", False)
    pairs = cookie_keys(request)
    if not pairs:
        return None, False
    if domain is not None:
        site = rt.sites.get(normalise_domain(domain))
        if site is not None:
            for name, token in pairs:
                if name == site.domain:
                    return token, True
    return pairs[0][1], True


def client_ip_key(rt: Runtime, request: Request) -> str:
    """A keyed hash of the client's address (as the trusted-proxy rule resolves it)."""
    conn = request.conn_info
    client = rt.clients(request.ip, request.headers, conn is not None and conn.ssl)
    address = str(client.ip) if client.ip is not None else request.ip or ""
    return hashlib.blake2b(address.encode(), key=rt.visitors.salt()[:64], digest_size=12).hexdigest()


def failure_key(rt: Runtime, request: Request) -> str:
    return "authfail:" + client_ip_key(rt, request)


def _same_origin(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    if not origin:
        return False
    try:
        return bool(urlsplit(origin).netloc == request.headers.get("host", ""))
    except ValueError:
        return False


def _unauthorized(rt: Runtime, bucket: str, message: str) -> HTTPResponse:
    rt.limiter.allow(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
    return json({"error": message}, 401, {"www-authenticate": 'Bearer realm="edge-gateway"'})


async def authenticate(request: Request, domain: str | None, scope: str, *,
                       wrong_scope: int = 403) -> tuple[KeyRecord, SiteConfig | None] | HTTPResponse:
    """The key and its site for a request about `domain` (None: any site, the key's own), or the
    answer to send instead. `wrong_scope`: the status for a valid key of another scope, 403, or
    401 (then counted as a failed attempt, like any other 401)."""
    rt = runtime(request)
    bucket = failure_key(rt, request)
    ok, wait = rt.limiter.peek(bucket, FAILURES_PER_MINUTE, FAILURES_BURST)
    if not ok:
        return json({"error": "too many failed attempts; try again later"}, 429,
                    {"retry-after": str(max(1, math.ceil(wait)))})
    token, from_cookie = _token(request, rt, domain)
    record = None
    if token:
        try:
            record = await asyncio.get_running_loop().run_in_executor(None, rt.keys.verify, token)
        except Exception:  # the key store cannot be read: refuse, never guess
            return json({"error": "keys cannot be checked right now"}, 503, {"retry-after": "5"})
    if record is None:
        what = "missing" if token is None else "invalid, unknown or revoked"
        return _unauthorized(rt, bucket, f"API key {what}: send Authorization: Bearer <key>")
    if from_cookie and request.method in _UNSAFE and not _same_origin(request):
        return json({"error": "cross-site request refused"}, 403)
    site = None
    if domain is not None:
        site = rt.sites.get(normalise_domain(domain))
        if site is None or site.domain != record.site:
            return json({"error": "no such site"}, 404)
    if not record.allows(scope):
        refusal = f"this key's scope ({record.scope}) does not allow this; it needs {scope}"
        if wrong_scope == 401:
            return _unauthorized(rt, bucket, refusal)
        return json({"error": refusal}, 403)
    touched = asyncio.get_running_loop().run_in_executor(None, rt.keys.touch, record)
    touched.add_done_callback(lambda f: _touch_failed(f, record.id))
    return record, site


def _touch_failed(done: asyncio.Future[None], key_id: str) -> None:
    """Log a failed `last_used` write: nothing awaits it, so its error would go unseen. The
    request is answered all the same (it only feeds `keys list`); the next try is a minute on."""
    if done.cancelled() or (exc := done.exception()) is None:
        return
    log.warning("key %s: its last use could not be recorded: %s: %s", key_id, type(exc).__name__, exc)
