"""The request path after parsing: one event at a time through named steps, in one place.

`Pipeline.process` takes the events of one request (already validated and fanned out per
domain) and the client context, and returns the rows to store and the drop reasons. The order
of the checks, and so the precedence of drop reasons, is the order of the code in `_check`:

    spam_referrer (global, before the site lookup) → unknown_site → rate_limited → site and
    global shields (see shields.chain) → velocity

Drops are values, not exceptions; every one is counted here, once, by site and reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import getrandbits
from time import time_ns
from typing import Any

from gateway.config import Sites
from gateway.metrics import Metrics
from gateway.state.salts import SaltStore
from gateway.ingest.visitor import visitor_id
from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict


@dataclass(slots=True)
class Location:
    country_code: str = ""
    subdivision1_code: str = ""
    subdivision2_code: str = ""
    city_geoname_id: int = 0


NO_LOCATION = Location()

# The columns of a stored row that come from the client alone: country_code, subdivision1_code,
# subdivision2_code, city_geoname_id, screen_size, operating_system, operating_system_version,
# browser, browser_version (see gateway.enrich.columns.RowColumns.for_client).
ClientColumns = tuple[str, str, str, int, str, str, str, str, str]
NO_CLIENT_COLUMNS: ClientColumns = ("", "", "", 0, "", "", "", "", "")
# The two runs of columns that come from the event alone: hostname … utm_term and
# meta.key … tracker_version (see gateway.enrich.columns.RowColumns.for_event).
EventColumns = tuple[tuple[Any, ...], tuple[Any, ...]]


@dataclass(slots=True)
class Outcome:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    dropped: list[tuple[str, DropReason]] = field(default_factory=list)
    retry_after: float = 0.0  # longest wait asked by a rate-limited site

    @property
    def all_rate_limited(self) -> bool:
        return not self.rows and bool(self.dropped) and all(r is DropReason.RATE_LIMITED for _, r in self.dropped)

    @property
    def accepted(self) -> int:
        return len(self.rows)


ChainRunner = Callable[[Event, ClientContext, SiteConfig], tuple[Verdict | None, Sequence[Verdict]]]
GlobalCheck = Callable[[Event, ClientContext], Verdict | None]
EventColumnsOf = Callable[[Event], EventColumns]


def _no_chain(event: Event, client: ClientContext, site: SiteConfig) -> tuple[Verdict | None, Sequence[Verdict]]:
    return None, ()


# Entries a reused client context keeps (client-only verdicts and visitor ids) before its memo
# starts afresh: a few are enough for one visitor, and a client cannot grow it without bound.
MAX_CLIENT_MEMO = 32


class _Clock:
    """UTC timestamp text, truncated to the second, formatted once per second."""

    __slots__ = ("_sec", "_text")

    def __init__(self) -> None:
        self._sec = -1
        self._text = ""

    def now(self) -> str:
        sec = int(time.time())
        if sec != self._sec:
            self._sec = sec
            self._text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return self._text


class Pipeline:
    def __init__(
        self,
        *,
        sites: Callable[[], Sites],
        salts: SaltStore,
        metrics: Metrics,
        chain: ChainRunner = _no_chain,
        pre_site: GlobalCheck | None = None,
        event_columns: EventColumnsOf,
        rate_limit: Callable[[SiteConfig], float | None] | None = None,
        velocity: Callable[[SiteConfig, int], bool] | None = None,
        on_new_salt: Callable[[], None] | None = None,
    ) -> None:
        self._sites = sites
        self._salts = salts
        self._metrics = metrics
        self._chain = chain
        self._pre_site = pre_site
        self._event_columns = event_columns
        self._rate_limit = rate_limit
        self._velocity = velocity
        # Called when the salt changes, so that whoever keeps client contexts drops the visitor
        # ids in their memos (gateway/ingest/clients.py); the contexts must not outlive the salt.
        self._on_new_salt = on_new_salt
        self._salt = b""
        self._clock = _Clock()

    def process(self, events: Sequence[Event], client: ClientContext,
                client_columns: ClientColumns = NO_CLIENT_COLUMNS) -> Outcome:
        """Check, count and build the rows of one request's events. `client_columns` are the
        geo and User-Agent columns of this client's rows."""
        out = Outcome()
        if not events:
            return out
        timestamp = self._clock.now()
        sites = self._sites()
        salt, _previous = self._salts.salts()
        ids = client.memo
        if salt != self._salt:
            self._salt = salt
            if ids:
                ids.clear()  # this client's context was looked up before the news
            if self._on_new_salt is not None:
                self._on_new_salt()
        metrics = self._metrics
        for event in events:
            site = sites.get(event.domain)
            verdict, would = self._check(event, client, site, out)
            key = site.domain if site is not None else event.domain
            for w in would:
                metrics.would_drop[(key, w.reason.value)] += 1
            if verdict is not None:
                # Unknown domains are client-controlled: count them under one label, so a
                # flood of made-up domains cannot grow the metrics without bound.
                label = key if site is not None else "(unknown)"
                metrics.dropped[(label, verdict.reason.value)] += 1
                out.dropped.append((label, verdict.reason))
                continue
            assert site is not None
            if ids is None:
                user_id = visitor_id(salt, client.user_agent, client.ip, site.domain, event.hostname)
            else:  # a reused client context: its visitor id per site and hostname is kept in it
                id_key = (site.domain, event.hostname)
                kept: int | None = ids.get(id_key)
                if kept is None:
                    user_id = visitor_id(salt, client.user_agent, client.ip, site.domain, event.hostname)
                    if len(ids) >= MAX_CLIENT_MEMO:
                        ids.clear()  # one client on many sites or hostnames: start afresh
                    ids[id_key] = user_id
                else:
                    user_id = kept
            if self._velocity is not None and not self._velocity(site, user_id):
                metrics.dropped[(key, DropReason.VELOCITY.value)] += 1
                out.dropped.append((key, DropReason.VELOCITY))
                continue
            out.rows.append(self._row(event, site, user_id, timestamp, client_columns))
            metrics.accepted[key] += 1
        return out

    def _check(self, event: Event, client: ClientContext, site: SiteConfig | None,
               out: Outcome) -> tuple[Verdict | None, Sequence[Verdict]]:
        pre: tuple[Verdict, ...] = ()
        if self._pre_site is not None:
            v = self._pre_site(event, client)
            if v is not None:
                # Checked before the site lookup (so spam on an unknown domain counts as spam),
                # yet a known site's own switches for it still apply.
                rules = site.shields if site is not None else None
                if rules is None or (v.reason.value not in rules.disabled and v.reason.value not in rules.report_only):
                    return v, ()
                if v.reason.value in rules.report_only:
                    pre = (v,)
        if site is None:
            return Verdict(DropReason.UNKNOWN_SITE), ()
        if self._rate_limit is not None:
            wait = self._rate_limit(site)
            if wait is not None:
                out.retry_after = max(out.retry_after, wait)
                return Verdict(DropReason.RATE_LIMITED), ()
        verdict, would = self._chain(event, client, site)
        return verdict, (*pre, *would) if pre else would

    def _row(self, event: Event, site: SiteConfig, user_id: int, timestamp: str,
             client_columns: ClientColumns) -> tuple[Any, ...]:
        head, tail = self._event_columns(event)
        # 32 hex digits: the time in milliseconds, then 80 random bits. Unique in practice (it
        # collapses re-sent copies), and in arrival order: a sink's index on it grows at one end
        # instead of at random places, and ClickHouse's sessions break ties within a second by
        # it. The random module's generator is seeded from the OS and reseeded in a forked
        # child; it is cheaper than a getrandom call per row.
        event_id = "%012x%020x" % (time_ns() // 1_000_000, getrandbits(80))
        # In gateway.schema's column order: five columns of this row, then the event's first
        # run, the client's, the event's second.
        return (event_id, timestamp, event.name, site.domain, user_id) + head + client_columns + tail
