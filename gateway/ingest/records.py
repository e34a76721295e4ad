"""What the site console reads besides events: drop records and per-minute counts.

A *drop record* is one dropped event of a declared site, as its owner may see it: time, reason,
evidence label, a detail with any address blanked out, the event's name, hostname and page,
the referrer's host, and the client's country, browser and device class (from the client's
columns: a dropped event pays for its geo lookup and User-Agent parse only when it gets a
record). Never the IP, never the raw User-Agent. The workers of one machine write at most
`[retention] drop_records_per_minute` records per site and UTC minute between them (a quota in
the state dir, gateway/state/limits.py; with many nodes the cap is per node): under a flood the
records are a sample and the counts stay exact.

The *counts* are the executor's (`Executor.minutes`): events of declared sites per UTC minute,
site, outcome (accepted, dropped, would_drop) and reason, taken once a second and every minute
boundary by the worker's housekeeping and written as rows that the console sums. Each row has
its own id, so a replayed spool segment never counts twice. What a worker has counted but not
yet written when it is killed (under a second's worth) is lost; a clean stop writes it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from random import getrandbits
from time import time, time_ns
from typing import Any
from urllib.parse import urlsplit

from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.schema import DropRecord, MinuteCount
from gateway.state.limits import MinuteQuota
from shields.model import SiteConfig, Verdict

__all__ = ["DropRecorder", "count_rows", "minute_text", "scrub"]

# IPv4 and IPv6 addresses and networks in a verdict's detail (a site's own rule can be the very
# address of the client it matched): blanked before a record is written.
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b|(?:[0-9A-Fa-f]{0,4}:){2,}[0-9A-Fa-f.:]*(?:/\d{1,3})?")
_MAX_TEXT = 300


def scrub(detail: str) -> str:
    """A verdict's detail with every address in it replaced by `<address>`, cut to 300 characters."""
    return _ADDRESS.sub("<address>", detail)[:_MAX_TEXT]


def _referrer_host(referrer: str | None) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer).hostname or ""
    except ValueError:
        return ""
    return host[:_MAX_TEXT]


def minute_text(minute: int) -> str:
    """A UTC minute number (Unix seconds // 60) as the counts table writes it."""
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%d %H:%M:00")


class DropRecorder:
    """Drop records for one worker, capped per site and UTC minute for every worker of the machine.

    The shared quota is asked once per request that has drops of a site whose cap this worker
    has not yet seen reached this minute; once a site's answer is "nothing left", it is not asked
    again until the minute changes, so a flood past the cap costs a set lookup per event.
    """

    __slots__ = ("cap", "_quota", "_minute", "_spent", "skipped")

    def __init__(self, per_minute: int, quota: MinuteQuota) -> None:
        self.cap = per_minute
        self._quota = quota
        self._minute = -1
        self._spent: set[str] = set()  # sites with no records left this minute: bounded by the sites
        self.skipped = 0  # drops past the cap, for metrics

    def records(self, site_drops: Sequence[tuple[ParsedEvent, SiteConfig, Verdict, Client]]) -> list[tuple[Any, ...]]:
        """The records of a request's drops (each with its client: a server-side batch has many),
        as many as the caps allow."""
        if not site_drops:
            return []
        now = time()
        minute = int(now) // 60
        if minute != self._minute:
            self._minute = minute
            self._spent.clear()
        wanted: dict[str, int] = {}
        for _, site, _, _ in site_drops:
            if site.domain not in self._spent:
                wanted[site.domain] = wanted.get(site.domain, 0) + 1
        for domain, n in wanted.items():
            granted = self._quota.take(domain, minute, n, self.cap) if self.cap > 0 else 0
            if granted < n:
                self._spent.add(domain)
            wanted[domain] = granted
        out: list[tuple[Any, ...]] = []
        timestamp = ""
        for event, site, verdict, client in site_drops:
            left = wanted.get(site.domain, 0)
            if left <= 0:
                self.skipped += 1
                continue
            wanted[site.domain] = left - 1
            if not timestamp:
                timestamp = datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%d %H:%M:%S")
            columns = client.columns
            out.append(DropRecord(
                "%012x%020x" % (time_ns() // 1_000_000, getrandbits(80)), timestamp, site.domain,
                verdict.reason.value, verdict.evidence, scrub(verdict.detail), event.name[:_MAX_TEXT],
                event.hostname[:_MAX_TEXT], event.pathname[:_MAX_TEXT], _referrer_host(event.referrer),
                columns.country_code, columns.browser, columns.screen_size))
        return out


def count_rows(minutes: Counter[tuple[int, str, str, str]]) -> list[tuple[Any, ...]]:
    """Rows of the counts table for what `Executor.take_minutes` returned."""
    tag = os.urandom(6).hex()
    return [MinuteCount(f"{tag}{i:06x}", minute_text(minute), site, outcome, reason, n)
            for i, ((minute, site, outcome, reason), n) in enumerate(sorted(minutes.items())) if n]
