"""`POST /api/v1/events`: server-side events in batches, with an ingest key (docs/server-api.md).

In the order its answers are decided: too many failed key attempts → 429 · no key, a malformed,
unknown or revoked one, or a key of another scope → 401 (an ingest key's site that is no longer
configured too) · body over `[server_api] max_body_bytes`, as sent or once gzip is undone, or
inflating more than `max_inflation_ratio` → 413 · not `{"events": [1..max_events objects]}` →
400 · spool full → 503 · each event validated (gateway/ingest/server_events.py); none valid →
400 with per-event errors and `details` lines · more valid events than the key's bucket holds
(`burst`) → 413, since they could never fit · the bucket, one token per valid event → 429 (a
503 below gives the tokens back) · the steps, minus `spoofed_agent` (the key vouches for the
sender; with no forwarded User-Agent, minus the User-Agent steps too) · rows at the events' own
times to the spool · 202, or 207 when some events were invalid.

The visitor: with `ip` and `userAgent`, the same keyed daily hash as a browser event of that
visitor, so the two join; with an `anonymousId`, a keyed daily hash of it; with neither, one
random id shared by those events of the request.
"""

from __future__ import annotations

import math
import time
import zlib
from random import getrandbits
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from gateway.api.auth import authenticate
from gateway.api.common import json, runtime
from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.executor import Outcome
from gateway.ingest.row import new_event_id
from gateway.ingest.server_events import ServerEvent, normalise_batch, stored_event_id
from gateway.ingest.visitor import visitor_id
from gateway.runtime import Runtime
from shields.model import DropReason, SiteConfig, Verdict

__all__ = ["PATH", "ingest", "too_large"]

PATH = "/api/v1/events"

_NO_CONSENT = Verdict(DropReason.NO_CONSENT, detail="consentGiven: false", evidence="")


class _TooLarge(Exception):
    pass


def _inflate(body: bytes, limit: int, ratio: int) -> bytes:
    """A gzip body inflated at most to `limit` bytes (and `ratio` times its size): never more
    is decompressed than the answer needs, so a bomb costs a bounded amount of work."""
    d = zlib.decompressobj(wbits=31)
    cap = min(limit, max(1024, len(body) * ratio))
    try:
        out = d.decompress(body, cap + 1)
    except zlib.error as exc:
        raise ValueError(f"the gzip body cannot be decoded: {exc}") from None
    if len(out) > cap or d.unconsumed_tail:
        raise _TooLarge
    if not d.eof:
        raise ValueError("the gzip body is truncated")
    return out


def _details(errors: list[dict[str, Any]]) -> list[str]:
    return [f"Event {e['index']}: {field} {message}" for e in errors for field, messages in e["errors"].items()
            for message in messages]


def too_large(request: Request) -> HTTPResponse:
    """413: the body, as sent or once gzip is undone, is over `[server_api] max_body_bytes` (also
    the answer to a body over Sanic's own limit, refused before `ingest` runs)."""
    limit = runtime(request).config.server_api.max_body_bytes
    return json({"error": f"the body is larger than {limit} bytes (after gzip is undone)"}, 413)


async def ingest(request: Request) -> HTTPResponse:
    auth = await authenticate(request, None, "ingest", wrong_scope=401)
    if isinstance(auth, HTTPResponse):
        return auth
    key, _ = auth
    rt = runtime(request)
    api = rt.config.server_api
    site = rt.sites.get(key.site)
    if site is None:
        return json({"error": f"the key's site {key.site} is not configured"}, 401,
                    {"www-authenticate": 'Bearer realm="edge-gateway"'})
    body = request.body or b""
    try:
        if request.headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip"):
            body = _inflate(body, api.max_body_bytes, api.max_inflation_ratio)
        elif len(body) > api.max_body_bytes:
            raise _TooLarge
        doc = orjson.loads(body)
    except _TooLarge:
        return too_large(request)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return json({"error": "the body must be JSON: {\"events\": [...]}", "details": [str(exc)[:200]]}, 400)
    items = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= api.max_events:
        return json({"error": f"the body must be {{\"events\": [...]}} with 1 to {api.max_events} events"}, 400)

    if not rt.spool.has_room():
        return json({"error": "temporarily unable to accept events"}, 503, {"retry-after": "5"})

    batch = normalise_batch(items, site.domain, time.time(), api.max_age_seconds)
    valid, errors, ignored = batch.valid, batch.errors, batch.ignored
    if not valid:
        rt.executor.count_invalid(len(errors))
        answer: dict[str, Any] = {"error": "no event in the batch is valid", "errors": errors,
                                  "details": _details(errors)}
        if ignored:
            answer["ignored"] = ignored
        return json(answer, 400)

    # One token per valid event (an invalid one costs the sender its error, not its quota).
    rate = site.server_api_rate.events_per_minute or api.events_per_minute
    burst = site.server_api_rate.burst or api.burst or max(rate, api.max_events)
    if len(valid) > burst:  # it would never fit: a 429 would promise a wait that cannot end
        return json({"error": f"this key's bucket holds {burst} events: send at most {burst} valid events "
                              "in one batch"}, 413)
    bucket = f"ingest:{key.id}"
    ok, wait = rt.limiter.take(bucket, len(valid), rate, burst)
    if not ok:
        return json({"error": f"this key may send {rate} events a minute"}, 429,
                    {"retry-after": str(max(1, math.ceil(wait)))})

    rows, dropped = _decide_and_build(rt, valid)
    if rows:
        try:
            rt.spool.append(rows)
        except OSError:
            rt.limiter.give_back(bucket, len(valid), rate, burst)  # nothing was kept: the retry pays once
            return json({"error": "temporarily unable to accept events"}, 503, {"retry-after": "5"})
    rt.executor.count_invalid(len(errors))
    answer = {"accepted": len(rows)}
    if dropped:
        answer["dropped"] = dropped
    if ignored:
        answer["ignored"] = ignored
    if errors:
        answer.update(errors=errors, details=_details(errors))
        return json(answer, 207)
    return json(answer, 202)


def _decide_and_build(rt: Runtime, events: list[ServerEvent]) -> tuple[list[tuple[Any, ...]], int]:
    """Run the steps for each forwarded visitor and build the rows of the kept events."""
    groups: dict[tuple[str | None, str | None], list[ServerEvent]] = {}
    for e in events:
        groups.setdefault((e.address, e.user_agent), []).append(e)
    request_visitor = getrandbits(63)
    salt = rt.visitors.salt()
    anonymous: dict[tuple[str, str, str], int] = {}  # an anonymousId's id, per site and hostname
    row = rt.rows.row
    rows: list[tuple[Any, ...]] = []
    dropped = 0
    id_of = rt.visitors.id_of
    drops: list[tuple[ParsedEvent, SiteConfig, Verdict, Client]] = []
    for (_, ua), group in groups.items():
        ip = group[0].ip
        # Kept for the group: its client-only verdicts and visitor ids are worked out once.
        client: Client = rt.clients.describe(ip, ua or "", keep=True)
        executor = rt.server_executor if ua else rt.server_executor_no_ua
        consenting = group
        refused: Outcome | None = None
        if not all(e.consent for e in group):
            refused = Outcome()
            consenting = []
            for e in group:
                if e.consent:
                    consenting.append(e)
                else:
                    executor.refuse(refused, e.event, _NO_CONSENT)
        decided = executor.run([e.event for e in consenting], client)
        if refused is not None:
            decided.dropped += refused.dropped
            decided.site_drops += refused.site_drops
        dropped += len(decided.dropped)
        for event, site, verdict in decided.site_drops:  # recorded at the end, for the batch at once
            drops.append((event, site, verdict, client))
        forwarded = bool(ua) and ip is not None
        seen: tuple[str, str] | None = None  # the visitor id of the group's last site and hostname
        user_id = request_visitor
        for at, (event, site) in zip(decided.kept_at, decided.kept):
            e = consenting[at]
            event_id = stored_event_id(site.domain, e.event_id) if e.event_id else new_event_id()
            if forwarded:  # the browser visitor's own id
                if seen != (site.domain, event.hostname):
                    seen = (site.domain, event.hostname)
                    user_id = id_of(client, site.domain, event.hostname)
            elif e.visitor is not None:
                key = (e.visitor, site.domain, event.hostname)
                found = anonymous.get(key)
                if found is None:
                    found = anonymous[key] = visitor_id(salt, "\x00anonymous\x00" + e.visitor, None, site.domain,
                                                        event.hostname)
                user_id = found
            else:  # an eventId does not name a visitor: a retry is found by its event_id instead
                user_id = request_visitor
            rows.append(row((event_id, e.timestamp, event.name, site.domain, user_id), event, client))
    if drops:
        rt.record_drops_of(drops)
    return rows, dropped
