"""The Sanic application: HTTP in, events to the pipeline, JSON out.

`create_app(config_path)` is the factory every worker process calls. Everything a worker needs
hangs off `app.ctx.state` (a `WorkerState`), created when the worker starts and closed, after
flushing every buffered event, when it stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sanic import Request, Sanic
from sanic.exceptions import NotFound, PayloadTooLarge, SanicException
from sanic.helpers import has_message_body
from sanic.response import HTTPResponse

from gateway.ingest import body as parsing
from gateway.ingest.client_ip import ClientIPResolver
from gateway.ingest.clients import ClientMemo
from gateway.config import GatewayConfig, Sites, load_gateway_config, load_sites, sites_fingerprint
from gateway.enrich.columns import RowColumns
from gateway.errors import ConfigError
from gateway.metrics import Metrics, render
from gateway.ingest.pipeline import Pipeline
from gateway.enrich.geo import GeoEnricher, open_reader
from gateway.state.limits import LocalRateLimiter, VelocityTable
from gateway.state.salts import FileSaltStore, SaltStore
from gateway.state.shared import open_shared
from gateway.store.sinks import open_sink
from gateway.store.shipper import STALE_SECONDS, is_stale, status_path
from gateway.store.spool import MemoryBuffer, Spool, read_status
from shields.model import SiteConfig

# Lists older than this since a failed background refresh are tried again (not every second).
LIST_RETRY_SECONDS = 3600.0

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
TRACKER_SCRIPT = Path(__file__).resolve().parent.parent / "tracker_js" / "dist" / "script.js"


# Encoded header lines per distinct set of response headers. The gateway answers with a handful
# of header sets (the 202s differ only in content-length and keep-alive), and Sanic otherwise
# cleans and encodes every header of every response again. Bounded: past the limit, unusual
# sets (a 429's retry-after, an error body's length) are encoded as usual, not remembered.
_HEADER_LINES: dict[tuple[tuple[str, Any], ...], tuple[tuple[bytes, bytes], ...]] = {}
_MAX_HEADER_SETS = 256


class Response(HTTPResponse):
    """Sanic's `HTTPResponse`, with the encoded header lines remembered per header set."""

    __slots__ = ()

    @property
    def processed_headers(self) -> Any:
        # Called once, by Sanic, after it has set content-length, connection and alt-svc.
        if has_message_body(self.status):
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


@dataclass(slots=True)
class Script:
    body: bytes
    etag: str


class WorkerState:
    """Per-process state: config, sites, salts, pipeline, buffer, metrics."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.sites: Sites = load_sites(config.sites_dir)
        self.sites_error: str | None = None
        self.resolver = ClientIPResolver(config.trusted_proxies)
        self.shared = open_shared(config.sections.get("shared", {}), str(config.source))
        self.salts: SaltStore = self.shared.salts if self.shared else FileSaltStore(config.data_dir)
        state_dir = config.data_dir / "state"
        self.limiter = self.shared.limiter if self.shared else LocalRateLimiter(state_dir / "ratelimit.bin")
        self.velocity_table = VelocityTable(state_dir / "velocity.bin")
        self.metrics = Metrics(config.data_dir)
        self.sink = open_sink(config)
        spool = config.spool
        self.spool: Spool | MemoryBuffer
        if spool.mode == "memory":
            self.spool = MemoryBuffer(self.sink, flush_seconds=config.sink.flush_interval,
                                      batch_rows=config.sink.batch_size, max_bytes=spool.max_disk_bytes)
        else:
            self.spool = Spool(
                config.data_dir / "spool",
                self.sink,
                segment_seconds=config.sink.flush_interval,
                ship_batch_rows=config.sink.batch_size,
                segment_bytes=spool.segment_bytes,
                fsync=spool.fsync,
                fsync_interval=spool.fsync_interval,
                max_disk_bytes=spool.max_disk_bytes,
                ship_in_background=spool.shipper == "worker",
            )
        self.geo = GeoEnricher(open_reader(config.sections.get("geo", {}), config.source.parent,
                                           config.data_dir, str(config.source)))
        self.columns = RowColumns()
        self.clients = ClientMemo(self.resolver, self.geo, self.columns)
        self.lists, self.chain, self.spam = build_shields(config)
        self._list_refresh_enabled = "lists" in config.sections and self.lists.settings.refresh_seconds > 0
        self._next_list_refresh = 0.0
        self._refreshing = False
        self.pipeline = Pipeline(sites=lambda: self.sites, salts=self.salts, metrics=self.metrics,
                                 chain=self.chain, pre_site=self.spam.check_any_site,
                                 event_columns=self.columns.for_event,
                                 rate_limit=self._rate_limit, velocity=self._velocity,
                                 on_new_salt=self.clients.clear)
        self.script = self._load_script()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.time()

    def _load_script(self) -> Script | None:
        path = Path(self.config.sections.get("tracker", {}).get("script_path", TRACKER_SCRIPT))
        try:
            body = path.read_bytes()
        except OSError:
            log.warning("tracker script not found at %s: /js/script.js will answer 404", path)
            return None
        return Script(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    def _rate_limit(self, site: SiteConfig) -> float | None:
        """None when the site may take one more event, else seconds to wait."""
        rl = site.rate_limit
        if rl.events_per_minute is None:
            return None
        ok, wait = self.limiter.allow(site.domain, rl.events_per_minute, rl.burst or rl.events_per_minute)
        return None if ok else max(wait, 0.001)

    def _velocity(self, site: SiteConfig, user_id: int) -> bool:
        if site.max_events_per_visit is None:
            return True
        return self.velocity_table.hit(site.domain, user_id, site.max_events_per_visit, site.velocity_window_seconds)

    def start(self) -> None:
        self.spool.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._housekeeping(), name="housekeeping"))

    async def _housekeeping(self) -> None:
        """Once a second: publish metrics, pick up edited site files and updated lists."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            try:
                self.reload_sites_if_changed()
                # Remembered clients carry geo answers: follow a replaced database even when
                # every request is answered from the memo, without a lookup to notice it.
                self.geo.refresh_if_due()
                self.clients.follow(self.geo.generation)
                reloaded = self.lists.maybe_reload()
                for kind in reloaded:
                    log.info("shield list %s reloaded", kind)
                if reloaded:  # remembered clients carry verdicts from the old lists
                    self.clients.clear()
                if self._list_refresh_enabled and not self._refreshing and time.time() >= self._next_list_refresh:
                    self._refreshing = True
                    loop.run_in_executor(None, self._refresh_lists)
                sp = self.spool
                if isinstance(sp, Spool) and not sp.ship_in_background:
                    status = read_status(status_path(self.config.data_dir))
                    sp.refresh(status)
                    if is_stale(status, self._started, time.time()):
                        log.warning("the shipper process has not reported for %.0f s: this worker ships "
                                    "spool segments itself from now on", STALE_SECONDS)
                        sp.start_shipping()
                self.metrics.gauges.update(spool_segments=sp.backlog_segments, spool_bytes=sp.disk_bytes,
                                           spool_oldest_seconds=round(sp.backlog_age, 1),
                                           sink_failures=sp.failures, spool_torn_segments=sp.torn_segments)
                self.metrics.publish()
            except Exception:  # housekeeping must never stop the worker
                log.exception("housekeeping failed")

    def _refresh_lists(self) -> None:
        """Background list refresh, in a thread; a file lock keeps workers from fetching twice."""
        try:
            for result in self.lists.refresh_due():
                if result.ok:
                    log.info("shield list %s updated: %s", result.kind, result.message)
                elif "another update" not in result.message:
                    log.warning("shield list %s not updated, keeping the stored one: %s%s", result.kind,
                                result.message, "".join(f"; {e}" for e in result.errors))
        except Exception:
            log.exception("shield list refresh failed")
        finally:
            self._next_list_refresh = time.time() + min(LIST_RETRY_SECONDS, self.lists.settings.refresh_seconds)
            self._refreshing = False

    def list_metrics(self) -> list[str]:
        """Per-list gauges from this worker's view (every worker loads the same files)."""
        lines = ["# HELP gateway_shield_list_entries Entries in each downloaded shield list.",
                 "# TYPE gateway_shield_list_entries gauge"]
        status = self.lists.status()
        lines += [f'gateway_shield_list_entries{{list="{st.kind}"}} {st.count if st.loaded else 0}' for st in status]
        lines += ["# HELP gateway_shield_list_stale 1 when a list is missing or older than its max_age.",
                  "# TYPE gateway_shield_list_stale gauge"]
        lines += [f'gateway_shield_list_stale{{list="{st.kind}"}} {int(st.stale)}' for st in status]
        lines += ["# HELP gateway_shield_list_age_seconds Time since each list was fetched.",
                  "# TYPE gateway_shield_list_age_seconds gauge"]
        lines += [f'gateway_shield_list_age_seconds{{list="{st.kind}"}} {round(st.age_seconds, 1)}'
                  for st in status if st.age_seconds is not None]
        return lines

    def reload_sites_if_changed(self) -> None:
        fp = sites_fingerprint(self.config.sites_dir)
        if fp == self.sites.fingerprint:
            return
        try:
            new = load_sites(self.config.sites_dir)
        except ConfigError as exc:
            if str(exc) != self.sites_error:
                log.error("site config rejected, keeping the last good one: %s", exc)
            self.sites_error = str(exc)
            # Remember the bad fingerprint so the same bad edit is not re-parsed every second.
            self.sites = Sites(self.sites.by_domain, self.sites.sites, fp)
            return
        self.sites = new
        self.sites_error = None
        log.info("site config reloaded: %d sites", len(new.sites))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.spool.close()
        self.metrics.publish()
        if self.shared is not None:
            self.shared.close()


def list_settings(config: GatewayConfig) -> Any:
    """The validated `[lists]` table; ConfigError names the file and key."""
    from shields import parse_lists_config
    from shields.errors import RuleError

    try:
        return parse_lists_config(config.sections.get("lists", {}), str(config.source), config.source.parent)
    except RuleError as exc:
        raise ConfigError(str(config.source), exc.key, exc.reason) from None


def build_shields(config: GatewayConfig) -> tuple[Any, Any, Any]:
    """The list store (loaded from disk), the site-level chain, and the spam-referrer shield that
    runs before the site lookup. Shared by the workers and `edge-gateway explain`."""
    from shields import BotMatcher, ListStore, ShieldChain, SpamReferrerShield, default_chain

    store = ListStore(config.data_dir, list_settings(config))
    store.load_all()
    chain = ShieldChain(default_chain(store.lists, BotMatcher.default(), include_spam_referrer=False))
    return store, chain, SpamReferrerShield(store.lists)


def create_app(config_path: str) -> Sanic:
    config = load_gateway_config(config_path)
    app = Sanic("edge_gateway")
    app.config.REQUEST_MAX_SIZE = config.limits.max_body_bytes
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    app.config.REQUEST_TIMEOUT = 10
    app.config.KEEP_ALIVE_TIMEOUT = 30
    parse = parsing.BodyParser(config.limits.max_batch_events)

    @app.before_server_start
    async def _start(app: Sanic) -> None:
        state = WorkerState(config)
        app.ctx.state = state
        state.start()

    @app.before_server_stop
    async def _stop(app: Sanic) -> None:
        state: WorkerState | None = getattr(app.ctx, "state", None)
        if state is not None:
            await state.close()

    @app.post("/api/event")
    async def event(request: Request) -> HTTPResponse:
        state: WorkerState = request.app.ctx.state
        result = parse(request.body or b"")
        if result.error is not None:  # the body as a whole is unusable
            state.metrics.responses[400] += 1
            return _json({"errors": result.error}, 400, _CORS)
        if result.is_batch:
            events = [e for item in result.items for e in item.events]
        else:
            item = result.items[0]
            if item.errors:
                state.metrics.responses[400] += 1
                return _json({"errors": item.errors}, 400, _CORS)
            events = item.events
        client, client_columns = state.clients(request.ip, request.headers)
        if not state.spool.has_room():
            state.metrics.responses[503] += 1
            return _json({"errors": {"request": ["temporarily unable to accept events"]}}, 503,
                         {**_CORS, "retry-after": "5"})
        outcome = state.pipeline.process(events, client, client_columns)
        if outcome.all_rate_limited and not result.is_batch:
            state.metrics.responses[429] += 1
            return _json({"errors": {"request": ["rate limited"]}}, 429,
                         {**_CORS, "retry-after": str(max(1, math.ceil(outcome.retry_after)))})
        if outcome.rows:
            try:
                state.spool.append(outcome.rows)
            except OSError as exc:  # disk full or gone: the events are not kept, so say so
                log.error("spool write failed: %s", exc)
                state.metrics.responses[503] += 1
                return _json({"errors": {"request": ["temporarily unable to accept events"]}}, 503,
                             {**_CORS, "retry-after": "5"})
        dropped = len(outcome.dropped)
        if not result.is_batch and dropped + outcome.accepted == 1:  # the common answers, prebuilt
            state.metrics.responses[202] += 1
            return Response(_ONE_DROPPED if dropped else _ONE_ACCEPTED, 202, _CORS, _JSON)
        body: dict[str, Any] = {"accepted": outcome.accepted}
        if result.is_batch:
            invalid = [{"index": item.index, "errors": item.errors} for item in result.items if item.errors]
            dropped += len(invalid)
            for _ in invalid:
                state.metrics.dropped[("(batch)", "invalid")] += 1
            if invalid:
                body["errors"] = invalid
        if dropped:
            body["dropped"] = dropped
        state.metrics.responses[202] += 1
        return _json(body, 202, _CORS)

    @app.options("/api/event")
    async def preflight(request: Request) -> HTTPResponse:
        return Response(status=204, headers=_PREFLIGHT)

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return _json({"status": "ok"}, 200, _CORS)

    @app.get("/ready")
    async def ready(request: Request) -> HTTPResponse:
        state: WorkerState = request.app.ctx.state
        sink_ok = await asyncio.get_running_loop().run_in_executor(None, state.sink.ping)
        room = state.spool.has_room()
        body = {
            "ready": sink_ok and room,
            "accepting": room,
            "sink": "ok" if sink_ok else "unavailable",
            "sites": len(state.sites.sites),
            "config": "ok" if state.sites_error is None else f"last edit rejected: {state.sites_error}",
            "spool_segments": state.spool.backlog_segments,
            "sink_error": state.spool.last_error,
        }
        return _json(body, 200 if sink_ok and room else 503, _CORS)

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        state: WorkerState = request.app.ctx.state
        text = render(state.metrics.collect(), state.list_metrics())
        return HTTPResponse(text, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def script(request: Request) -> HTTPResponse:
        state: WorkerState = request.app.ctx.state
        s = state.script
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

    app.add_route(script, "/js/script.js", methods=["GET", "HEAD"], name="script")
    alias = config.sections.get("tracker", {}).get("alias_path")
    if isinstance(alias, str) and alias.startswith("/") and alias != "/js/script.js":
        app.add_route(script, alias, methods=["GET", "HEAD"], name="script_alias")

    @app.exception(PayloadTooLarge)
    async def too_large(request: Request, exc: Exception) -> HTTPResponse:
        return _json({"errors": {"request": ["request body is too large"]}}, 413, _CORS)

    @app.exception(SanicException)
    async def http_error(request: Request, exc: SanicException) -> HTTPResponse:
        status = getattr(exc, "status_code", 400) or 400
        return _json({"errors": {"request": [str(exc) or "bad request"]}}, status, _CORS)

    return app
