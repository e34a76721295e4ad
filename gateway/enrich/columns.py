"""Enrichment: the stored columns an event brings, and those its client brings.

`RowColumns.for_event` works out an event's `SourceColumns` (page, referrer source, UTM) and
`DetailColumns` (props, engagement, revenue); `RowColumns.for_client` a client's `ClientColumns`
(location and the parsed User-Agent). Each is a pure function of its input, so callers work
them out once and keep them with what they belong to: the client's with the remembered client
(gateway/ingest/clients.py), the event's with the parsed event, which the body memo hands out
again for a repeated body (gateway/ingest/body.py). Only kept events are enriched.
"""

from __future__ import annotations

import functools
from typing import Final

import orjson

from gateway.enrich.referrer import KnownSources, ReferrerClassifier
from gateway.enrich.useragent import UAParser
from gateway.schema import ClientColumns, DetailColumns, SourceColumns
from geo import Location
from shields.model import Event

__all__ = ["EventColumns", "RowColumns"]

EventColumns = tuple[SourceColumns, DetailColumns]

_new: Final = tuple.__new__


class RowColumns:
    """The per-event and per-client parts of a stored row. `cache_size` bounds the User-Agent
    and referrer caches; build one per worker (the parsers load in well under a second)."""

    __slots__ = ("_referrers", "_agents", "_sources")

    def __init__(self, cache_size: int = 10000, *, sources: KnownSources | None = None) -> None:
        self._referrers = ReferrerClassifier(sources, cache_size=cache_size)
        self._agents = UAParser(cache_size)
        # The page and referrer columns are a pure function of nine event fields. An event of a
        # repeated body is enriched once anyway (`ParsedEvent.columns`), but a new body of a
        # known page and referrer is common: engagement events (their own engagement time) and
        # server-side batches (their own ids and times). A hit saves the referrer parse and
        # classification (about 3 µs of the 4 the event's columns cost). Pure: nothing to follow.
        self._sources = functools.lru_cache(maxsize=cache_size)(self._source_columns) if cache_size else None

    def for_client(self, user_agent: str, location: Location | None) -> ClientColumns:
        """The geo and User-Agent columns of every row from this client. Never raises."""
        ua = self._agents.parse(user_agent)
        # The columns' tuples are built with `tuple.__new__`, which is all a NamedTuple's own
        # `__new__` does, from C: that one is a Python-level function, an interpreted call per
        # client and per event enriched (about 2,900 instructions each, callgrind).
        if location is None or location.country_code is None:
            return _new(ClientColumns, ("", "", "", 0, ua.screen_size, ua.operating_system,
                                        ua.operating_system_version, ua.browser, ua.browser_version))
        return _new(ClientColumns, (location.country_code, location.subdivision1_code or "",
                                    location.subdivision2_code or "", location.city_geoname_id or 0, ua.screen_size,
                                    ua.operating_system, ua.operating_system_version, ua.browser,
                                    ua.browser_version))

    def for_event(self, event: Event) -> EventColumns:
        """The columns that come from the event alone. Never raises."""
        key = (event.hostname, event.pathname, event.referrer, event.click_id_param, event.utm_source,
               event.utm_medium, event.utm_campaign, event.utm_content, event.utm_term)
        source = self._source_columns(*key) if self._sources is None else self._sources(*key)
        props = event.props
        if props:
            keys = orjson.dumps([k for k, _ in props]).decode()
            values = orjson.dumps([v for _, v in props]).decode()
        else:
            keys = values = "[]"
        version = event.tracker_version
        return (
            source,
            _new(DetailColumns, (keys, values, event.scroll_depth, event.engagement_time, 1 if event.interactive else 0,
                                 event.revenue_amount, event.revenue_currency or "",
                                 version if 0 <= version < 65536 else 0)),
        )

    def _source_columns(self, hostname: str, pathname: str, referrer: str | None, click_id: str | None,
                        utm_source: str | None, utm_medium: str | None, utm_campaign: str | None,
                        utm_content: str | None, utm_term: str | None) -> SourceColumns:
        ref = self._referrers.classify_fields(referrer, hostname, utm_source, utm_medium, click_id)
        return _new(SourceColumns, (hostname, pathname, ref.referrer, ref.referrer_source, click_id or "",
                                    ref.utm_medium, utm_source or "", utm_campaign or "", utm_content or "",
                                    utm_term or ""))

    def cache_info(self) -> dict[str, int]:
        """Entries in each cache, for tests and metrics."""
        return {"user_agents": self._agents.cache_info()[0], "referrers": self._referrers.cache_info()[0],
                "sources": self._sources.cache_info().currsize if self._sources is not None else 0}
