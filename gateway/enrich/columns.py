"""The enrichment step: the stored columns an event brings, and those its client brings.

A stored row (gateway/schema.py) is the event's id, time, name, site and visitor id, then three
runs of columns that each depend on one thing only:

    hostname … utm_term            the event (with the referrer and tag classification)
    country_code … browser_version the client (geo answer and parsed User-Agent)
    meta.key … tracker_version     the event

`RowColumns` works each run out once and hands out the same tuple again: the client's run is kept
with the client in the worker's client memo (gateway/ingest/clients.py), and the event's two runs in a
bounded memo keyed by the event object, which the body memo (gateway/ingest/body.py) hands out again
for a repeated body. The pipeline then builds a row by joining tuples.
"""

from __future__ import annotations

import orjson

from gateway.ingest.pipeline import ClientColumns, EventColumns, Location
from gateway.enrich.referrer import KnownSources, ReferrerClassifier
from gateway.enrich.useragent import UAParser
from shields.model import Event

__all__ = ["RowColumns"]


class RowColumns:
    """The per-event and per-client runs of a stored row, with bounded caches.

    `cache_size` bounds the User-Agent and referrer caches; `event_memo` the number of events
    whose runs are kept (0: none). Build one per worker (the parsers load in well under a second). The
    event memo is not locked: call `for_event` from one thread (the event loop).
    """

    __slots__ = ("_referrers", "_agents", "_events", "_event_memo")

    def __init__(self, cache_size: int = 10000, *, sources: KnownSources | None = None,
                 event_memo: int = 4096) -> None:
        self._referrers = ReferrerClassifier(sources, cache_size=cache_size)
        self._agents = UAParser(cache_size)
        # id(event) -> (event, runs). Holding the event keeps its id from being reused while kept.
        self._events: dict[int, tuple[Event, EventColumns]] = {}
        self._event_memo = event_memo

    def for_client(self, user_agent: str, location: Location) -> ClientColumns:
        """The geo and User-Agent columns of every row from this client. Never raises."""
        ua = self._agents.parse(user_agent)
        return (location.country_code, location.subdivision1_code, location.subdivision2_code,
                location.city_geoname_id, ua.screen_size, ua.operating_system, ua.operating_system_version,
                ua.browser, ua.browser_version)

    def for_event(self, event: Event) -> EventColumns:
        """The two runs of columns that come from the event alone. Never raises."""
        kept = self._events.get(id(event))
        if kept is not None and kept[0] is event:
            return kept[1]
        runs = self._event_runs(event)
        events = self._events
        if len(events) >= self._event_memo:
            if not events:  # event_memo=0: keep nothing
                return runs
            del events[next(iter(events))]  # the oldest one in
        events[id(event)] = (event, runs)
        return runs

    def _event_runs(self, event: Event) -> EventColumns:
        ref = self._referrers.classify(event)
        props = event.props
        if props:
            keys = orjson.dumps([k for k, _ in props]).decode()
            values = orjson.dumps([v for _, v in props]).decode()
        else:
            keys = values = "[]"
        version = event.tracker_version
        return (
            (event.hostname, event.pathname, ref.referrer, ref.referrer_source, event.click_id_param or "",
             ref.utm_medium, event.utm_source or "", event.utm_campaign or "", event.utm_content or "",
             event.utm_term or ""),
            (keys, values, event.scroll_depth, event.engagement_time, 1 if event.interactive else 0,
             event.revenue_amount, event.revenue_currency or "", version if 0 <= version < 65536 else 0),
        )

    def cache_info(self) -> dict[str, int]:
        """Entries in each cache, for tests and metrics."""
        return {"events": len(self._events), "user_agents": self._agents.cache_info()[0],
                "referrers": self._referrers.cache_info()[0]}
