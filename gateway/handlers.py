"""The HTTP handlers, one module-level function per endpoint. Each reads the worker's
`Runtime` from `request.app.ctx.runtime`; routes are attached in gateway/app.py.

`POST /api/event`, in the order its answers are decided:

    body unusable → 400 · single event invalid → 400 · spool full → 503 ·
    the steps (gateway/ingest/steps.py, run by the executor) · every event of a single-event
    request rate limited → 429 · rows to the spool (a failed write → 503) · 202 with counts
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import orjson
from sanic import Request
from sanic.exceptions import NotFound, SanicException
from sanic.helpers import has_message_body
from sanic.response import HTTPResponse

from gateway.metrics import CONTENT_TYPE, render
from gateway.runtime import Runtime

__all__ = ["event", "health", "http_error", "metrics", "preflight", "ready", "script", "too_large"]

log = logging.getLogger("gateway")

_JSON = "application/json"
_CORS = {"access-control-allow-origin": "*"}
_PREFLIGHT = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "POST, OPTIONS",
    "access-control-allow-headers": "Content-Type",
    "access-control-max-age": "86400",
}
_ONE_ACCEPTED = orjson.dumps({"accepted": 1})
_ONE_DROPPED = orjson.dumps({"accepted": 0, "dropped": 1})
_NO_ROOM = {"errors": {"request": ["temporarily unable to accept events"]}}
_RETRY_LATER = {**_CORS, "retry-after": "5"}

# Encoded header lines per distinct set of response headers. The gateway answers with a handful
# of header sets (the 202s differ only in content-length and keep-alive), and Sanic otherwise
# cleans and encodes every header of every response again: remembering them saves a few µs per
# answer. Bounded: past the limit, unusual sets (a 429's retry-after, an error body's length)
# are encoded as usual, not remembered. Pure: the lines are a function of the headers.
_HEADER_LINES: dict[tuple[tuple[str, Any], ...], tuple[tuple[bytes, bytes], ...]] = {}
_MAX_HEADER_SETS = 256


class Response(HTTPResponse):
    """Sanic's `HTTPResponse`, with the encoded header lines remembered per header set."""

    __slots__ = ()

    @property
    def processed_headers(self) -> Any:
        # Called once, by Sanic, after it has set content-length, connection and alt-svc.
        if has_message_body(self.status):  # type: ignore[no-untyped-call]
            self.headers.setdefault("content-type", self.content_type)
        key = (*self.headers.items(),)
        try:
            return _HEADER_LINES[key]
        except KeyError:
            lines = (*super().processed_headers,)
            if len(_HEADER_LINES) < _MAX_HEADER_SETS:
                _HEADER_LINES[key] = lines
            return lines
        except TypeError:  # an unhashable header value: nothing to remember it by
            return super().processed_headers


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    return Response(orjson.dumps(body), status=status, headers=headers, content_type=_JSON)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.ctx.runtime
    return runtime


async def event(request: Request) -> HTTPResponse:
    """`POST /api/event`: Plausible's Events API (docs/event-api.md)."""
    rt = _runtime(request)
    counts = rt.metrics.responses
    raw = request.body or b""
    if len(raw) > rt.max_body_bytes:  # Sanic's own limit is the largest route's
        counts[413] += 1
        return _json(_TOO_LARGE, 413, _CORS)
    result = rt.parse(raw)
    if result.error is not None:  # the body as a whole is unusable
        counts[400] += 1
        return _json({"errors": result.error}, 400, _CORS)
    if result.is_batch:
        events = [e for item in result.items for e in item.events]
    else:
        item = result.items[0]
        if item.errors:
            counts[400] += 1
            return _json({"errors": item.errors}, 400, _CORS)
        events = item.events
    conn = request.conn_info
    client = rt.clients(request.ip, request.headers, conn is not None and conn.ssl)
    if not rt.spool.has_room():
        counts[503] += 1
        return _json(_NO_ROOM, 503, _RETRY_LATER)
    outcome = rt.executor.run(events, client)
    if outcome.site_drops:
        rt.record_drops(outcome.site_drops)
    if outcome.all_rate_limited and not result.is_batch:
        counts[429] += 1
        return _json({"errors": {"request": ["rate limited"]}}, 429,
                     {**_CORS, "retry-after": str(max(1, math.ceil(outcome.retry_after)))})
    if outcome.kept:
        try:
            rt.spool.append(rt.rows.rows(outcome.kept, client))
        except OSError as exc:  # disk full or gone: the events are not kept, so say so
            log.error("spool write failed: %s", exc)
            counts[503] += 1
            return _json(_NO_ROOM, 503, _RETRY_LATER)
    dropped = len(outcome.dropped)
    if not result.is_batch and dropped + outcome.accepted == 1:  # the common answers, prebuilt
        counts[202] += 1
        return Response(_ONE_DROPPED if dropped else _ONE_ACCEPTED, 202, _CORS, _JSON)
    body: dict[str, Any] = {"accepted": outcome.accepted}
    if result.is_batch:
        invalid = [{"index": item.index, "errors": item.errors} for item in result.items if item.errors]
        rt.executor.count_invalid(len(invalid))
        dropped += len(invalid)
        if invalid:
            body["errors"] = invalid
    if dropped:
        body["dropped"] = dropped
    counts[202] += 1
    return _json(body, 202, _CORS)


async def preflight(request: Request) -> HTTPResponse:
    """`OPTIONS /api/event`: the CORS preflight, cached by browsers for a day."""
    return Response(status=204, headers=_PREFLIGHT)


async def health(request: Request) -> HTTPResponse:
    """`GET /health`: the process runs."""
    return _json({"status": "ok"}, 200, _CORS)


async def ready(request: Request) -> HTTPResponse:
    """`GET /ready`: 200 when the config and the sink are usable and the spool has room."""
    rt = _runtime(request)
    sink_ok = await asyncio.get_running_loop().run_in_executor(None, rt.sink.ping)
    room = rt.spool.has_room()
    body = {
        "ready": sink_ok and room,
        "accepting": room,
        "sink": "ok" if sink_ok else "unavailable",
        "sites": len(rt.sites.sites),
        "config": "ok" if rt.sites_error is None else f"last edit rejected: {rt.sites_error}",
        "spool_segments": rt.spool.backlog_segments,
        "sink_error": rt.spool.last_error,
    }
    return _json(body, 200 if sink_ok and room else 503, _CORS)


async def metrics(request: Request) -> HTTPResponse:
    """`GET /metrics`: Prometheus text, summed over every worker."""
    rt = _runtime(request)
    return HTTPResponse(render(rt.metrics.collect(), rt.list_gauges()), content_type=CONTENT_TYPE)


async def script(request: Request) -> HTTPResponse:
    """`GET /js/script.js` (and `[tracker] alias_path`): the tracker script, with an ETag."""
    s = _runtime(request).script
    if s is None:
        raise NotFound("tracker script is not built")
    headers = {
        "etag": s.etag,
        "cache-control": "public, max-age=3600, stale-while-revalidate=86400",
        "access-control-allow-origin": "*",
        "cross-origin-resource-policy": "cross-origin",
        "x-content-type-options": "nosniff",
    }
    if request.headers.get("if-none-match") == s.etag:
        return HTTPResponse(status=304, headers=headers)
    return HTTPResponse(s.body, headers=headers, content_type="application/javascript; charset=utf-8")


_TOO_LARGE = {"errors": {"request": ["request body is too large"]}}


async def too_large(request: Request, exc: Exception) -> HTTPResponse:
    return _json(_TOO_LARGE, 413, _CORS)


async def http_error(request: Request, exc: SanicException) -> HTTPResponse:
    status = getattr(exc, "status_code", 400) or 400
    return _json({"errors": {"request": [str(exc) or "bad request"]}}, status, _CORS)
