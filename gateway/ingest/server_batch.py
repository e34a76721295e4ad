"""A server-side batch's validated events → the rows of those kept, and how many were dropped.

The visitor: with `ip` and `userAgent`, the same keyed daily hash as a browser event of that
visitor, so the two join; with an `anonymousId`, a keyed daily hash of it; with neither, one
random id shared by those events of the request. Events are grouped by forwarded visitor, so a
visitor's client (its address parsed, located and judged) and visitor id are worked out once.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import getrandbits
from typing import Any, Protocol

from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client, ClientMemo
from gateway.ingest.executor import Executor, Outcome
from gateway.ingest.row import RowBuilder, new_event_id
from gateway.ingest.server_events import ServerEvent, stored_event_id
from gateway.ingest.visitor import Visitors, visitor_id
from shields.model import DropReason, SiteConfig, Verdict

__all__ = ["ServerPath", "decide_and_build"]

_NO_CONSENT = Verdict(DropReason.NO_CONSENT, detail="consentGiven: false", evidence="")


class ServerPath(Protocol):
    """What a batch needs of the worker's request path (`gateway.runtime.Runtime`)."""

    clients: ClientMemo
    server_executor: Executor  # the steps minus those the ingest key vouches for
    server_executor_no_ua: Executor  # ... and minus those that judge a User-Agent
    visitors: Visitors
    rows: RowBuilder

    def record_drops(self, drops: Sequence[tuple[ParsedEvent, SiteConfig, Verdict, Client]]) -> None: ...


def decide_and_build(rt: ServerPath, events: list[ServerEvent]) -> tuple[list[tuple[Any, ...]], int]:
    """Run the steps for each forwarded visitor and build the rows of the kept events."""
    groups: dict[tuple[str | None, str | None], list[ServerEvent]] = {}
    # A sender usually sends a visitor's events one after another: the next event of the same
    # visitor joins the group at hand after two text comparisons, without hashing its
    # User-Agent (a few hundred characters) for the dict.
    group: list[ServerEvent] = []
    address: str | None = None
    agent: str | None = None
    for e in events:
        if not group or e.address != address or e.user_agent != agent:
            address, agent = e.address, e.user_agent
            group = groups.setdefault((address, agent), [])
        group.append(e)
    # One run of each executor for the whole batch (its counting is per run, not per visitor):
    # the events with a forwarded User-Agent, and those without, each beside its visitor's client.
    runs = (_Run(rt.server_executor), _Run(rt.server_executor_no_ua))
    refused = Outcome()  # consentGiven: false, counted as the steps would count a drop
    for (_, ua), group in groups.items():
        # One client per visitor: its client-only verdicts and visitor ids are worked out once.
        client: Client = rt.clients.describe(group[0].ip, ua or "", keep=True)
        run = runs[0] if ua else runs[1]
        for e in group:
            if e.consent:
                run.add(e, client)
            else:
                run.executor.refuse(refused, e.event, client, _NO_CONSENT)
    request_visitor = getrandbits(63)
    salt = rt.visitors.salt()
    anonymous: dict[tuple[str, str, str], int] = {}  # an anonymousId's id, per site and hostname
    row = rt.rows.row
    id_of = rt.visitors.id_of
    rows: list[tuple[Any, ...]] = []
    dropped = len(refused.dropped)
    drops = refused.site_drops  # recorded at the end, for the batch at once
    for run in runs:
        if not run.events:
            continue
        decided = run.executor.run_each(run.events, run.clients)
        dropped += len(decided.dropped)
        drops += decided.site_drops
        last: tuple[Client, str, str] | None = None  # the visitor id's client, site and hostname
        user_id = request_visitor
        for at, (event, site) in zip(decided.kept_at, decided.kept):
            e = run.sent[at]
            client = run.clients[at]
            event_id = stored_event_id(site.domain, e.event_id) if e.event_id else new_event_id()
            if e.user_agent and e.ip is not None:  # a forwarded visitor: the browser visitor's own id
                if last is None or last[0] is not client or last[1] != site.domain or last[2] != event.hostname:
                    last = (client, site.domain, event.hostname)
                    user_id = id_of(client, site.domain, event.hostname)
            elif e.visitor is not None:
                key = (e.visitor, site.domain, event.hostname)
                found = anonymous.get(key)
                if found is None:
                    found = anonymous[key] = visitor_id(salt, "\x00anonymous\x00" + e.visitor, None, site.domain,
                                                        event.hostname)
                user_id = found
            else:  # an eventId does not name a visitor: a retry is found by its event_id instead
                user_id = request_visitor
            rows.append(row((event_id, e.timestamp, event.name, site.domain, user_id), event, client))
    if drops:
        rt.record_drops(drops)
    return rows, dropped


class _Run:
    """The events one executor judges, each beside the event as sent and its visitor's client."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.events: list[ParsedEvent] = []
        self.sent: list[ServerEvent] = []
        self.clients: list[Client] = []

    def add(self, e: ServerEvent, client: Client) -> None:
        self.events.append(e.event)
        self.sent.append(e)
        self.clients.append(client)
