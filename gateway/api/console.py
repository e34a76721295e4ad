"""The site console API: `/api/v1/sites/{domain}/...` (docs/console.md, the OpenAPI document).

Each handler authenticates first (gateway/api/auth.py: `read` for GETs and the dry run,
`manage` for changes), then reads the sink in a thread (gateway/store/queries.py). Times are
ISO 8601 UTC in answers; `from`/`to` accept ISO 8601 or Unix seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from gateway.api.auth import authenticate
from gateway.api.common import BadRequest, api_time, db_time, json, parse_time, query_int, query_text, runtime
from gateway.api.dryrun import DryRun, dry_run
from gateway.api.site_files import SiteFiles, VersionConflict
from gateway.errors import ConfigError
from gateway.ingest.sites import parse_site
from gateway.store.queries import INTERVALS, TOP_FIELDS, Bucket
from shields.model import DropReason, SiteConfig

__all__ = ["drops", "events", "me", "shields_dry_run", "shields_get", "shields_history", "shields_put",
           "summary", "top"]

MAX_BUCKETS = 1500
_STEP = {"minute": 60, "hour": 3600, "day": 86400}
_DEFAULT_SPAN = 86400.0
_REASONS = frozenset(r.value for r in DropReason)
T = TypeVar("T")


async def _read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def _window(request: Request, default_interval: str | None = "hour") -> tuple[float, float, str]:
    interval = query_text(request, "interval") or default_interval or "hour"
    if interval not in INTERVALS:
        raise BadRequest("interval", f"must be one of {', '.join(INTERVALS)}")
    now = time.time() + 1  # the current second's records included
    end = parse_time(request, "to", now)
    start = parse_time(request, "from", end - _DEFAULT_SPAN)
    if start >= end:
        raise BadRequest("from", "must be before to")
    step = _STEP[interval]
    start = math.floor(start / step) * step
    if (end - start) / step > MAX_BUCKETS:
        raise BadRequest("interval", f"from..to would be more than {MAX_BUCKETS} {interval}s: take a longer interval")
    return start, end, interval


async def me(request: Request) -> HTTPResponse:
    """`GET /api/v1/me`: the key's id, site and scope (what the web console signs in with)."""
    auth = await authenticate(request, None, "read")
    if isinstance(auth, HTTPResponse):
        auth = await authenticate(request, None, "ingest") if auth.status == 403 else auth
        if isinstance(auth, HTTPResponse):
            return auth
    key, _ = auth
    return json({"key": key.id, "site": key.site, "scope": key.scope, "label": key.label})


def _series(rows: list[Bucket], start: float, end: float, interval: str) -> dict[str, Any]:
    step = _STEP[interval]
    n = max(1, math.ceil((end - start) / step))
    starts = [db_time(start + i * step) for i in range(n)]
    index = {s: i for i, s in enumerate(starts)}
    buckets: list[dict[str, Any]] = [{"start": api_time(s), "accepted": 0, "dropped": {}, "would_drop": {}}
                                     for s in starts]
    totals: dict[str, Any] = {"accepted": 0, "dropped": {}, "would_drop": {}}
    for row in rows:
        i = index.get(row.start)
        if i is None:
            continue
        b = buckets[i]
        if row.outcome == "accepted":
            b["accepted"] += row.events
            totals["accepted"] += row.events
        elif row.outcome in ("dropped", "would_drop"):
            b[row.outcome][row.reason] = b[row.outcome].get(row.reason, 0) + row.events
            totals[row.outcome][row.reason] = totals[row.outcome].get(row.reason, 0) + row.events
    return {"buckets": buckets, "totals": totals}


async def summary(request: Request, domain: str) -> HTTPResponse:
    """`GET .../summary?from=&to=&interval=`: accepted, dropped and would-drop per reason per bucket."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    try:
        start, end, interval = _window(request)
    except BadRequest as exc:
        return exc.response()
    rt = runtime(request)
    rows = await _read(rt.reader.summary, site.domain, db_time(start), db_time(end), interval)
    return json({"site": site.domain, "from": api_time(db_time(start)), "to": api_time(db_time(end)),
                 "interval": interval, **_series(rows, start, end, interval)})


async def top(request: Request, domain: str) -> HTTPResponse:
    """`GET .../top?from=&to=`: the most frequent pages, referrer hosts, countries, evidence
    labels, hostnames and browsers among the drop records."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    try:
        start, end, _ = _window(request, "day")
        limit = query_int(request, "limit", 10, 1, 100)
    except BadRequest as exc:
        return exc.response()
    rt = runtime(request)
    out: dict[str, Any] = {"site": site.domain, "from": api_time(db_time(start)), "to": api_time(db_time(end))}
    for field in TOP_FIELDS:
        values = await _read(rt.reader.top, site.domain, db_time(start), db_time(end), field, limit)
        out[field] = [{"value": v, "records": n} for v, n in values]
    return json(out)


def _drop_out(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["drop_id"], "timestamp": api_time(str(r["timestamp"])), "reason": r["reason"],
            "evidence": r["evidence"], "detail": r["detail"], "name": r["name"], "hostname": r["hostname"],
            "pathname": r["pathname"], "referrer_host": r["referrer_host"], "country": r["country_code"],
            "browser": r["browser"], "device": r["screen_size"]}


async def drops(request: Request, domain: str) -> HTTPResponse:
    """`GET .../drops?reason=&evidence=&limit=&before=`: drop records, newest first."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    try:
        reason = query_text(request, "reason", max_chars=40)
        if reason is not None and reason not in _REASONS:
            raise BadRequest("reason", f"{reason!r} is not a drop reason")
        evidence = query_text(request, "evidence", max_chars=60)
        limit = query_int(request, "limit", 50, 1, 200)
        before = query_text(request, "before", max_chars=64)
    except BadRequest as exc:
        return exc.response()
    rt = runtime(request)
    rows = await _read(rt.reader.drops, site.domain, reason=reason, evidence=evidence, limit=limit, before=before)
    return json({"site": site.domain, "drops": [_drop_out(r) for r in rows],
                 "next": rows[-1]["drop_id"] if len(rows) == limit else None})


def _event_cursor(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    when, sep, event_id = text.partition("~")
    if not sep or len(when) != 20 or not when.endswith("Z"):
        raise BadRequest("before", "must be the `next` value of an earlier answer")
    return when[:-1].replace("T", " "), event_id


async def events(request: Request, domain: str) -> HTTPResponse:
    """`GET .../events?name=&limit=&before=`: accepted events, newest first."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    try:
        name = query_text(request, "name", max_chars=120)
        limit = query_int(request, "limit", 50, 1, 200)
        before = _event_cursor(query_text(request, "before", max_chars=120))
    except BadRequest as exc:
        return exc.response()
    rt = runtime(request)
    rows = await _read(rt.reader.events, site.domain, name=name, limit=limit, before=before)
    items = [{"id": e.event_id, "name": e.name, "timestamp": api_time(e.timestamp),
              "page": f"https://{e.hostname}{e.pathname}" if e.hostname and e.hostname != "(none)" else e.pathname,
              "hostname": e.hostname, "pathname": e.pathname, "referrer": e.referrer or None, "props": e.props,
              "revenue": e.revenue} for e in rows]
    nxt = f"{items[-1]['timestamp']}~{items[-1]['id']}" if len(items) == limit else None
    return json({"site": site.domain, "events": items, "next": nxt})


async def shields_get(request: Request, domain: str) -> HTTPResponse:
    """`GET .../shields`: the site's `[shields]` table as JSON, with its version."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    rt = runtime(request)
    try:
        return json(await _read(SiteFiles(rt.config.data_dir).read, site))
    except (OSError, ValueError) as exc:
        return json({"error": f"the site file cannot be read: {exc}"}, 503, {"retry-after": "5"})


async def shields_history(request: Request, domain: str) -> HTTPResponse:
    """`GET .../shields/history`: the last versions saved, newest first."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    rt = runtime(request)
    entries = await _read(SiteFiles(rt.config.data_dir).history, site)
    return json({"site": site.domain, "versions": [
        {"version": e["version"], "saved_at": api_time(db_time(e["saved_at"])), "saved_by": e["saved_by"],
         "shields": e["shields"]} for e in reversed(entries)]})


def _body(request: Request) -> Any:
    try:
        return orjson.loads(request.body or b"")
    except orjson.JSONDecodeError:
        raise BadRequest("body", "must be a JSON object") from None


def _proposed(body: Any) -> tuple[Any, str | None]:
    if not isinstance(body, dict) or "shields" not in body:
        raise BadRequest("shields", "is required: the [shields] table as a JSON object")
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequest("version", "must be a string")
    return body["shields"], version


async def shields_put(request: Request, domain: str) -> HTTPResponse:
    """`PUT .../shields` (manage): validate, write atomically, keep in the history, reload."""
    auth = await authenticate(request, domain, "manage")
    if isinstance(auth, HTTPResponse):
        return auth
    key, site = auth
    assert site is not None
    try:
        shields, version = _proposed(_body(request))
    except BadRequest as exc:
        return exc.response()
    rt = runtime(request)
    try:
        saved = await _read(SiteFiles(rt.config.data_dir).write, site, shields, key_id=key.id, expect_version=version)
    except ConfigError as exc:
        return json({"errors": {exc.key or "shields": [exc.reason]}}, 400)
    except VersionConflict as exc:
        return json({"error": str(exc)}, 409)
    rt.reload_sites_if_changed()  # this worker at once; the others within a second
    return json(saved)


async def shields_dry_run(request: Request, domain: str) -> HTTPResponse:
    """`POST .../shields/dry-run` (read): what the proposed rules would have done."""
    auth = await authenticate(request, domain, "read")
    if isinstance(auth, HTTPResponse):
        return auth
    _, site = auth
    assert site is not None
    rt = runtime(request)
    max_days = max(1, rt.config.retention.drops_days)
    try:
        body = _body(request)
        shields, _ = _proposed(body)
        days = body.get("days", max_days)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= max_days:
            raise BadRequest("days", f"must be an integer from 1 to {max_days} (drop records are kept {max_days} days)")
    except BadRequest as exc:
        return exc.response()
    try:
        proposed = _proposed_site(site, shields)
    except ConfigError as exc:
        return json({"errors": {exc.key or "shields": [exc.reason]}}, 400)
    now = time.time()
    run = DryRun(current=site, proposed=proposed, start=db_time(now - days * 86400), end=db_time(now + 60))
    answer = await _read(dry_run, run, rt.reader)
    answer["from"], answer["to"] = api_time(answer["from"]), api_time(answer["to"])
    return json({"site": site.domain, "days": days, **answer})


def _proposed_site(site: SiteConfig, shields: Any) -> SiteConfig:
    """The site as it would be with `shields`, validated as a file edit is."""
    if not isinstance(shields, dict):
        raise ConfigError("request", "shields", "must be an object with the keys of a site file's [shields] table")
    return parse_site({"domain": site.domain, "aliases": list(site.aliases), "shields": shields}, "request")
