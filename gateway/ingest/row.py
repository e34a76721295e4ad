"""Stored rows for the kept events: the row head (id, time, name, site, visitor) and the parts.

The event's parts are worked out the first time the event is kept and stay with the parsed
event (`ParsedEvent.columns`); the client's are the remembered client's (`Client.columns`); the
visitor id comes from `Visitors`, which the velocity step asks too. `gateway.schema.join` puts
them in column order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from random import getrandbits
from time import time_ns
from typing import Any

from gateway.enrich.columns import RowColumns
from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.visitor import Visitors
from gateway.schema import join
from shields.model import SiteConfig

__all__ = ["RowBuilder", "new_event_id"]


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


class RowBuilder:
    """Kept events → row tuples in `gateway.schema.COLUMNS` order."""

    __slots__ = ("_columns", "_visitors", "_clock")

    def __init__(self, columns: RowColumns, visitors: Visitors) -> None:
        self._columns = columns
        self._visitors = visitors
        self._clock = _Clock()

    def rows(self, kept: Sequence[tuple[ParsedEvent, SiteConfig]], client: Client) -> list[tuple[Any, ...]]:
        if not kept:
            return []
        timestamp = self._clock.now()
        id_of = self._visitors.id_of
        out = []
        row = self.row
        for event, site in kept:
            out.append(row((new_event_id(), timestamp, event.name, site.domain,
                            id_of(client, site.domain, event.hostname)), event, client))
        return out

    def row(self, head: tuple[str, str, str, str, int], event: ParsedEvent, client: Client) -> tuple[Any, ...]:
        """One row whose head (event id, time, name, site, visitor id) the caller worked out: a
        server-side event's own time, id and visitor."""
        parts = event.columns
        if parts is None:
            parts = event.columns = self._columns.for_event(event)
        return join(head, parts[0], client.columns, parts[1])


def new_event_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 random bits. Unique in practice (it
    collapses re-sent copies), and in arrival order: a sink's index on it grows at one end
    instead of at random places, and ClickHouse's sessions break ties within a second by it.
    The random module's generator is seeded from the OS and reseeded in a forked child; it is
    cheaper than a getrandom call per row."""
    return "%012x%020x" % (time_ns() // 1_000_000, getrandbits(80))
