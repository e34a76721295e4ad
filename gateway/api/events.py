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

Each event's visitor, and the steps and rows: gateway/ingest/server_batch.py.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from gateway.api.auth import authenticate
from gateway.api.common import json, runtime
from gateway.ingest.server_batch import decide_and_build
from gateway.ingest.server_events import normalise_batch

__all__ = ["PATH", "ingest", "too_large"]

PATH = "/api/v1/events"

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

    rows, dropped = decide_and_build(rt, valid)
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
