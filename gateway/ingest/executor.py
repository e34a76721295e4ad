"""The executor: runs the steps (gateway/ingest/steps.py) over each event, and counts.

For each site the executor works out once, when the sites are loaded, which steps run and how
(its *plan*): a step the site `disabled` is left out, one it put in `report_only` only reports,
one that cannot object for the site (`applies(site)` false: a rule shield without rules, a rate
limit the site does not set) is left out too. A domain no site declares gets the plan of the
steps before the site lookup, then `unknown_site`. Every switch is applied here, in one place,
for every reason, including the steps that run before the site lookup.

`run` takes one request's events (`run_each`: events of several clients, each beside its own, as
a server-side batch's forwarded visitors): the first enforced objection drops an event;
report-only objections met before it are would-drops; the event goes on. Every drop and
would-drop is counted here, once, by site and reason, and nothing is timed. `trace` runs the
same plan for one event without stopping and without changing state (`peek`), reporting every
step's decision: that is `edge-gateway explain`, so serve and explain cannot disagree.

What a remembered client keeps: the raw verdict of each `client_only` step, in
`Client.verdicts`, while the worker's generation has not moved. The site's switches (allowlist,
report-only) still apply to a kept verdict on every event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from time import time
from typing import Any, NamedTuple

from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.sites import Sites
from gateway.ingest.steps import UNKNOWN, Step, Throttled, UnknownSite
from gateway.metrics import Metrics
from gateway.state.generation import Generation
from shields.model import DropReason, SiteConfig, Verdict

__all__ = ["Executor", "Outcome", "StepReport", "Trace"]


@dataclass(slots=True)
class Outcome:
    """One request's events after the steps: those kept (with their site), and the drops."""

    kept: list[tuple[ParsedEvent, SiteConfig]] = field(default_factory=list)
    kept_at: list[int] = field(default_factory=list)  # where each kept event is in `run`'s events
    dropped: list[tuple[str, DropReason]] = field(default_factory=list)  # (site label, reason)
    retry_after: float = 0.0  # the longest wait a rate-limited site asked for
    # The dropped events of declared sites with their verdicts and clients: what drop records
    # are made of.
    site_drops: list[tuple[ParsedEvent, SiteConfig, Verdict, Client]] = field(default_factory=list)

    @property
    def all_rate_limited(self) -> bool:
        return not self.kept and bool(self.dropped) and all(r is DropReason.RATE_LIMITED for _, r in self.dropped)

    @property
    def accepted(self) -> int:
        return len(self.kept)


class _Entry(NamedTuple):
    step: Step
    check: Any  # the bound `check`, looked up once
    report: bool  # the site lists this step under report_only
    client_only: bool
    ip_based: bool
    ignored: frozenset[str]  # evidence labels of this step the site lets through


class _Plan(NamedTuple):
    entries: tuple[_Entry, ...]
    has_allowlist: bool


@dataclass(frozen=True, slots=True)
class StepReport:
    """One step's decision in a trace: drop, would_drop, pass, disabled, exempt, ignored (the
    site lets this evidence through), or not_applicable (the step cannot object here: no such
    rules, no site)."""

    reason: str
    outcome: str
    detail: str = ""
    evidence: str = ""  # the verdict's evidence label, for drop and would_drop


@dataclass(frozen=True, slots=True)
class Trace:
    site: SiteConfig  # `steps.UNKNOWN` when no site declares the domain
    steps: tuple[StepReport, ...]
    dropped: Verdict | None  # what `run` decides for the event

    @property
    def kept(self) -> bool:
        return self.dropped is None


_UNSET: Any = object()


class Executor:
    """Runs `steps` for one worker and counts into `metrics`. Not thread-safe: one event loop."""

    __slots__ = ("steps", "minutes", "_metrics", "_generation", "_plans", "_unknown", "_presite", "_derived")

    def __init__(self, steps: Sequence[Step], metrics: Metrics, generation: Generation) -> None:
        self.steps = tuple(steps)
        self._metrics = metrics
        self._generation = generation
        at = next(i for i, s in enumerate(self.steps) if isinstance(s, UnknownSite))
        self._presite = self.steps[: at + 1]
        for step in self._presite:
            if getattr(step, "needs_site", True):
                raise ValueError(f"{step.reason.value} needs a site but comes before unknown_site")
        self._unknown = (UNKNOWN, self._plan(UNKNOWN))
        self._plans: dict[str, tuple[SiteConfig, _Plan]] = {}
        # Events of declared sites per (UTC minute, site, outcome, reason) since the last
        # `take_minutes`: the console's exact per-minute counts (gateway/ingest/records.py).
        self.minutes: Counter[tuple[int, str, str, str]] = Counter()
        self._derived: list[Executor] = []

    def without(self, reasons: frozenset[str]) -> Executor:
        """The same steps in the same order minus `reasons`, counting into the same metrics and
        per-minute counts and following the same sites. For the server-side events API, whose
        key vouches for what `spoofed_agent` (and, with no forwarded User-Agent, the User-Agent
        steps) would judge: the precedence stays the one tuple's."""
        other = Executor([s for s in self.steps if s.reason.value not in reasons], self._metrics, self._generation)
        other.minutes = self.minutes
        other._plans = {domain: (site, other._plan(site)) for domain, (site, _) in self._plans.items()}
        self._derived.append(other)
        return other

    # --- plans -------------------------------------------------------------------------------

    def use(self, sites: Sites) -> None:
        """Work out each site's plan; call at start-up and whenever the sites are reloaded."""
        plans: dict[str, tuple[SiteConfig, _Plan]] = {}
        for site in sites.sites:
            entry = (site, self._plan(site))
            for domain in (site.domain, *site.aliases):
                plans[domain] = entry
        self._plans = plans
        for other in self._derived:
            other.use(sites)

    def _mode(self, step: Step, site: SiteConfig) -> str:
        """How `step` runs for `site`: run, report, disabled, or not_applicable."""
        if site is UNKNOWN:
            return "run" if step in self._presite else "not_applicable"
        reason = step.reason.value
        if reason in site.shields.disabled:
            return "disabled"
        applies = getattr(step, "applies", None)
        if applies is not None and not applies(site):
            return "not_applicable"
        return "report" if reason in site.shields.report_only else "run"

    def _plan(self, site: SiteConfig) -> _Plan:
        entries = []
        for step in self.steps:
            mode = self._mode(step, site)
            if mode in ("run", "report"):
                reason = step.reason.value
                ignored = frozenset(label for r, label in site.shields.ignored if r == reason)
                entries.append(_Entry(step, step.check, mode == "report", bool(getattr(step, "client_only", False)),
                                      bool(getattr(step, "ip_based", False)), ignored))
        return _Plan(tuple(entries), bool(site.shields.compiled.ip_allow))

    def site_of(self, domain: str) -> SiteConfig:
        """The site whose plan an event for `domain` runs (`UNKNOWN` when none declares it)."""
        return self._plans.get(domain, self._unknown)[0]

    # --- serving -----------------------------------------------------------------------------

    def run(self, events: Sequence[ParsedEvent], client: Client) -> Outcome:
        """Decide and count one request's events."""
        return self.run_each(events, [client] * len(events))

    def run_each(self, events: Sequence[ParsedEvent], clients: Sequence[Client]) -> Outcome:
        """`run` for events of several clients: `events[i]` is `clients[i]`'s. One outcome and one
        count for them all (a server-side batch's visitors, rather than a run per visitor)."""
        out = Outcome()
        plans = self._plans
        unknown = self._unknown
        metrics = self._metrics
        minutes = self.minutes
        minute = int(time()) // 60
        generation = self._generation.value
        accepted: dict[str, int] = {}  # counted once per site at the end: a batch has many
        kept = out.kept
        client: Client | None = None
        memo: dict[object, Verdict | None] | None = None
        for at, event in enumerate(events):
            if clients[at] is not client:
                client = clients[at]
                memo = client.verdicts if client.generation == generation else None
            site, plan = plans.get(event.domain, unknown)
            label = site.domain
            known = site is not UNKNOWN
            verdict, would = _decide(plan, event, client, site, memo)
            for w in would:
                reason = w.reason.value  # an enum's `value` is a Python-level property: read once
                metrics.would_drop[(label, reason)] += 1
                if w.evidence:
                    metrics.would_drop_evidence[(label, reason, w.evidence)] += 1
                if known:
                    minutes[(minute, label, "would_drop", reason)] += 1
            if verdict is None:
                kept.append((event, site))
                out.kept_at.append(at)
                accepted[label] = accepted.get(label, 0) + 1
                continue
            reason = verdict.reason.value
            metrics.dropped[(label, reason)] += 1
            if verdict.evidence:
                metrics.dropped_evidence[(label, reason, verdict.evidence)] += 1
            out.dropped.append((label, verdict.reason))
            if known:
                minutes[(minute, label, "dropped", reason)] += 1
                out.site_drops.append((event, site, verdict, client))
            if isinstance(verdict, Throttled):
                out.retry_after = max(out.retry_after, verdict.retry_after)
        for label, n in accepted.items():
            metrics.accepted[label] += n
            if label != UNKNOWN.domain:
                minutes[(minute, label, "accepted", "")] += n
        return out

    def decide(self, event: ParsedEvent, client: Client) -> tuple[Verdict | None, Sequence[Verdict]]:
        """What `run` decides for one event, without counting: the verdict that drops it (None:
        kept) and the report-only ones met before it."""
        site, plan = self._plans.get(event.domain, self._unknown)
        memo = client.verdicts if client.generation == self._generation.value else None
        return _decide(plan, event, client, site, memo)

    def take_minutes(self) -> Counter[tuple[int, str, str, str]]:
        """The per-minute counts since the last call, and start afresh (in place: executors made
        by `without` share the counter)."""
        taken = Counter(self.minutes)
        self.minutes.clear()
        return taken

    def refuse(self, out: Outcome, event: ParsedEvent, client: Client, verdict: Verdict) -> None:
        """Count a drop decided before the steps (a server-side event without consent) exactly
        as `run` counts one: metrics, per-minute counts, a drop record for a declared site."""
        site, _ = self._plans.get(event.domain, self._unknown)
        label = site.domain
        self._metrics.dropped[(label, verdict.reason.value)] += 1
        out.dropped.append((label, verdict.reason))
        if site is not UNKNOWN:
            self.minutes[(int(time()) // 60, label, "dropped", verdict.reason.value)] += 1
            out.site_drops.append((event, site, verdict, client))

    def count_invalid(self, n: int) -> None:
        """Batch items that could not be parsed: dropped as `invalid` (under no site)."""
        if n:
            self._metrics.dropped[("(batch)", DropReason.INVALID.value)] += n

    # --- explaining --------------------------------------------------------------------------

    def trace(self, event: ParsedEvent, client: Client) -> Trace:
        """Every step's decision for one event, in order, also after the one that drops it.
        Changes nothing: steps that keep state are asked with `peek`; nothing is counted."""
        site = self.site_of(event.domain)
        allowlisted = site is not UNKNOWN and site.ip_allowlisted(client)
        reports = []
        dropped: Verdict | None = None
        for step in self.steps:
            reason = step.reason.value
            mode = self._mode(step, site)
            if mode == "disabled":
                reports.append(StepReport(reason, "disabled", "switched off for this site"))
                continue
            if mode == "not_applicable":
                detail = "no site" if site is UNKNOWN else "nothing to check for this site"
                reports.append(StepReport(reason, "not_applicable", detail))
                continue
            if getattr(step, "ip_based", False) and allowlisted:
                reports.append(StepReport(reason, "exempt", "client on the site's ip_allowlist"))
                continue
            verdict = getattr(step, "peek", step.check)(event, client, site)
            if verdict is None:
                reports.append(StepReport(reason, "pass"))
            elif (reason, verdict.evidence) in site.shields.ignored:
                reports.append(StepReport(reason, "ignored", f"{verdict.detail}: the site lets {verdict.evidence} "
                                                             "through", verdict.evidence))
            elif mode == "report" or verdict.report_only:
                reports.append(StepReport(reason, "would_drop", verdict.detail, verdict.evidence))
            else:
                reports.append(StepReport(reason, "drop", verdict.detail, verdict.evidence))
                if dropped is None:
                    dropped = verdict
        return Trace(site, tuple(reports), dropped)


_NO_WOULD: tuple[Verdict, ...] = ()


def _decide(plan: _Plan, event: ParsedEvent, client: Client, site: SiteConfig,
            memo: dict[object, Verdict | None] | None) -> tuple[Verdict | None, Sequence[Verdict]]:
    """The first enforced objection (None: keep the event) and the report-only ones before it."""
    would: list[Verdict] | None = None
    allowlisted: bool | None = None if plan.has_allowlist else False  # looked up once, if needed
    for step, check, report, client_only, ip_based, ignored in plan.entries:
        if ip_based:
            if allowlisted is None:
                allowlisted = site.ip_allowlisted(client)
            if allowlisted:
                continue
        if client_only and memo is not None:
            verdict = memo.get(step, _UNSET)
            if verdict is _UNSET:
                verdict = memo[step] = check(event, client, site)
        else:
            verdict = check(event, client, site)
        if verdict is None or verdict.evidence in ignored:
            continue
        if report or verdict.report_only:
            if would is None:
                would = []
            would.append(verdict if verdict.report_only else replace(verdict, report_only=True))
            continue
        return verdict, would or _NO_WOULD
    return None, would or _NO_WOULD
