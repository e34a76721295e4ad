"""The enrichment step: referrer fields and User-Agent fields for an accepted event.

`make_enricher()` builds the parsers once (the regexes and the public suffix list load in well under
a second) and returns the `Enricher` the pipeline calls for every row it stores. Both halves keep a
bounded LRU cache, so a returning visitor's User-Agent or a popular referrer host costs a dict
lookup.
"""

from __future__ import annotations

from gateway.pipeline import Enricher, Enrichment
from gateway.referrer import KnownSources, ReferrerClassifier
from gateway.useragent import UAParser
from shields.model import ClientContext, Event

__all__ = ["make_enricher"]


def make_enricher(cache_size: int = 10000, *, sources: KnownSources | None = None) -> Enricher:
    """An `(event, client) -> Enrichment` callable with its own caches of `cache_size` entries each.

    `sources` replaces the shipped known-referrer table (`gateway/data/referrer_sources.json`).
    The callable never raises and is safe to share between threads.
    """
    referrers = ReferrerClassifier(sources, cache_size=cache_size)
    agents = UAParser(cache_size)
    classify = referrers.classify
    parse_ua = agents.parse

    def enrich(event: Event, client: ClientContext) -> Enrichment:
        ref = classify(event)
        ua = parse_ua(client.user_agent)
        return Enrichment(
            referrer=ref.referrer,
            referrer_source=ref.referrer_source,
            utm_medium=ref.utm_medium,
            browser=ua.browser,
            browser_version=ua.browser_version,
            operating_system=ua.operating_system,
            operating_system_version=ua.operating_system_version,
            screen_size=ua.screen_size,
        )

    return enrich
