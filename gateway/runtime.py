"""What a worker process needs, built once at its start: `Runtime`, which handlers read from
`app.ctx.runtime`.

`RequestPath` is the part that `edge-gateway explain` builds too: the config, the sites, the
shield lists, the steps and their executor, the client memo and the row builder. `Runtime` adds
what serving needs: the metrics, the sink and the durable spool, the tracker script, and the
once-a-second housekeeping that picks up edited site files, reloaded lists and geo databases
(each bumps the worker's `Generation`, which the memos follow) and publishes the metrics.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from gateway.errors import ConfigError
from gateway.ingest.body import BodyParser, ParsedEvent
from gateway.ingest.client_ip import ClientIPResolver
from gateway.ingest.clients import Client, ClientMemo
from gateway.ingest.executor import Executor
from gateway.ingest.records import DropRecorder, count_rows
from gateway.ingest.row import RowBuilder
from gateway.ingest.sites import Sites, load_sites, sites_fingerprint
from gateway.ingest.steps import StepParts, build_steps
from gateway.ingest.visitor import Visitors
from gateway.lists import ListStore
from gateway.metrics import ListGauge, Metrics
from gateway.state.generation import Generation
from gateway.state.keys import KeyRing, open_key_store
from gateway.state.limits import LocalRateLimiter, MinuteQuota, RateLimiter, VelocityTable
from gateway.state.salts import FileSaltStore, SaltStore
from gateway.state.shared import SharedRedis, open_shared
from gateway.store.queries import ConsoleReader, open_reader
from gateway.store.shipper import STALE_SECONDS, is_stale, status_path
from gateway.store.sinks import open_sink
from gateway.store.spool import MemoryBuffer, Spool, read_status
from shields.bots import BotMatcher
from shields.lists import LiveLists
from shields.model import SiteConfig, Verdict

__all__ = ["RequestPath", "Runtime", "Script", "offline_executor", "tune_collector"]

log = logging.getLogger("gateway")

# Lists older than this since a failed background refresh are tried again (not every second).
LIST_RETRY_SECONDS = 3600.0


class RequestPath:
    """The request path of one process, from headers and parsed events to rows."""

    def __init__(self, config: GatewayConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.generation = Generation()
        self.sites: Sites = load_sites(config.sites_dir)
        self.sites_error: str | None = None
        self.shared: SharedRedis | None = open_shared(config.shared)
        self.salts: SaltStore = self.shared.salts if self.shared else FileSaltStore(config.data_dir)
        self.limiter: RateLimiter = (self.shared.limiter if self.shared
                                     else LocalRateLimiter(config.state_dir / "ratelimit.bin"))
        self.velocity = VelocityTable(config.state_dir / "velocity.bin")
        self.lists = ListStore(config.data_dir, config.lists)
        self.lists.load_all()
        self.geo = GeoEnricher.open(config.geo, config.data_dir)
        self._geo_generation = self.geo.generation
        self.columns = RowColumns()
        self.clients = ClientMemo(ClientIPResolver(config.trusted_proxies), self.geo, self.columns, self.generation)
        self.visitors = Visitors(self.salts, self.generation)
        self.steps = build_steps(StepParts(lists=self.lists.lists, bots=BotMatcher.default(), limiter=self.limiter,
                                           velocity=self.velocity, visitors=self.visitors))
        self.executor = Executor(self.steps, metrics, self.generation)
        self.executor.use(self.sites)
        self.rows = RowBuilder(self.columns, self.visitors)

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
        self.executor.use(new)
        self.generation.bump()
        log.info("site config reloaded: %d sites", len(new.sites))

    def follow_data(self) -> None:
        """Pick up replaced shield lists and geo databases; remembered answers follow."""
        self.geo.refresh_if_due()
        if self.geo.generation != self._geo_generation:
            self._geo_generation = self.geo.generation
            self.generation.bump()
        reloaded = self.lists.maybe_reload()
        for kind in reloaded:
            log.info("shield list %s reloaded", kind)
        if reloaded:
            self.generation.bump()

    def release(self) -> None:
        """Let go of the shared store's connection (the only thing held outside the process)."""
        if self.shared is not None:
            self.shared.close()


def tune_collector() -> None:
    """The garbage collector, for a worker that builds thousands of short-lived containers per
    request (a 1000-event batch: its decoded objects, events and rows). Call once start-up is
    done. What start-up built (modules, the lists, the geo reader, the site plans) lives as long
    as the worker: frozen, a collection never walks it again. The youngest generation is
    collected every 10,000 allocations instead of 700, so a batch triggers one or two
    collections, not twenty (docs/performance.md has the figures). Garbage without cycles is
    still freed at once by reference counting; only cycles wait a little longer."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def offline_executor(lists: LiveLists, state_dir: Path, *, bots: BotMatcher | None = None,
                     generation: Generation | None = None) -> Executor:
    """The steps over the given lists with their own salts, rate limits and counters in
    `state_dir`, and no sites yet (`executor.use(...)`): for benchmarks and tests of the steps."""
    generation = generation or Generation()
    parts = StepParts(lists=lists, bots=bots or BotMatcher.default(),
                      limiter=LocalRateLimiter(state_dir / "ratelimit.bin"),
                      velocity=VelocityTable(state_dir / "velocity.bin"),
                      visitors=Visitors(FileSaltStore(state_dir), generation))
    return Executor(build_steps(parts), Metrics(state_dir), generation)


@dataclass(slots=True)
class Script:
    body: bytes
    etag: str


def load_script(config: GatewayConfig) -> Script | None:
    """The tracker script: `[tracker] script_path`, else the build shipped in the package."""
    try:
        if config.tracker.script_path is not None:
            body = config.tracker.script_path.read_bytes()
        else:
            body = resources.files("gateway").joinpath("static/script.js").read_bytes()
    except OSError:
        log.warning("tracker script not found at %s: /js/script.js will answer 404",
                    config.tracker.script_path or "gateway/static/script.js")
        return None
    return Script(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class Runtime(RequestPath):
    """Everything one worker serves with. Built in the worker (Sanic's before_server_start)."""

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config, Metrics(config.data_dir))
        self.parse = BodyParser(config.limits.max_batch_events)
        self.max_body_bytes = config.limits.max_body_bytes
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
                retention_days=config.retention_days,
            )
        # The cap holds for the machine's workers together; with [shared] Redis, for each node.
        self.drop_records = DropRecorder(config.retention.drop_records_per_minute,
                                         MinuteQuota(config.state_dir / "droprecords.bin"))
        # The server-side events API's steps: the same tuple without what the ingest key vouches
        # for (spoofed_agent) or what has its own per-key bucket (rate_limited); with no
        # forwarded User-Agent, without the steps that judge one, nor velocity (no visitor to count).
        self.server_executor = self.executor.without(frozenset({"spoofed_agent", "rate_limited"}))
        self.server_executor_no_ua = self.executor.without(frozenset(
            {"spoofed_agent", "rate_limited", "bot", "verification_agent", "velocity"}))
        self.keys = KeyRing(open_key_store(config.data_dir, self.shared.client if self.shared else None,
                                          config.shared.key_prefix if config.shared else "gw:"))
        self.reader: ConsoleReader = open_reader(config)
        self.script = load_script(config)
        self._list_refresh = config.lists.background
        self._next_list_refresh = 0.0
        self._refreshing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.time()

    def start(self) -> None:
        self.spool.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._housekeeping(), name="housekeeping"))

    async def _housekeeping(self) -> None:
        """Once a second: pick up edited site files and replaced data, publish metrics."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            try:
                self.write_counts()
                self.reload_sites_if_changed()
                self.follow_data()
                self.visitors.salt()  # a new day's salt bumps the generation even between requests
                if self._list_refresh and not self._refreshing and time.time() >= self._next_list_refresh:
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

    def list_gauges(self) -> list[ListGauge]:
        """Per-list gauges from this worker's view (every worker loads the same files)."""
        status = self.lists.status()
        return [
            ("gateway_shield_list_entries", "Entries in each downloaded shield list.",
             {st.kind: st.count if st.loaded else 0 for st in status}),
            ("gateway_shield_list_stale", "1 when a list is missing or older than its max_age.",
             {st.kind: int(st.stale) for st in status}),
            ("gateway_shield_list_age_seconds", "Time since each list was fetched.",
             {st.kind: round(st.age_seconds, 1) for st in status if st.age_seconds is not None}),
        ]

    def write_counts(self) -> None:
        """The executor's per-minute counts since the last call, to the spool."""
        minutes = self.executor.take_minutes()
        if minutes:
            try:
                self.spool.append(count_rows(minutes), "counts")
            except OSError as exc:
                log.error("spool write failed, per-minute counts lost: %s", exc)

    def record_drops(self, drops: Sequence[tuple[ParsedEvent, SiteConfig, Verdict, Client]]) -> None:
        """Drop records for dropped events of declared sites, of one client or several (a
        server-side batch): one quota request per site and one spool write for them all."""
        rows = self.drop_records.records(drops)
        if rows:
            try:
                self.spool.append(rows, "drops")
            except OSError as exc:  # the events' answer does not depend on it
                log.error("spool write failed, drop records lost: %s", exc)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        self.write_counts()
        await self.spool.close()
        self.metrics.publish()
        self.reader.close()
        self.keys.store.close()
        self.release()
