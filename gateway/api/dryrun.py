"""What a proposed `[shields]` table would have done over the last days, before it is saved.

Replayed with the shields' own code (shields/rules.py), on what the sink holds for the site:
- the stored events, grouped by (hostname, pathname, country): the site-rule shields that
  need only those (hostname allowlist, page blocklist, country blocklist) run under the proposed
  rules; a group they would now drop is a *would drop*;
- the drop records: a record of a site rule that the proposed rules no longer drop is *let
  back in*; a record of a shield the proposal switches off (`disabled`) or to `report_only` is
  let back in too, with the exact number taken from the per-minute counts (records are capped
  per minute, counts are not);
- a shield taken out of `report_only` would drop exactly what it counted as would-drops.

What cannot be replayed is said in `notes`: IP rules, in every answer whatever the proposal
changes (no address is stored, by design), a shield switched back on after being disabled (it
examined nothing while off), and events past the look-back the sink keeps. Each added or removed rule gets its own line with its count and
samples, so a site owner sees which entry does what.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.api.common import api_time
from gateway.ingest.steps import EVIDENCE, SWITCHABLE
from gateway.store.queries import Bucket, ConsoleReader, PageKey
from shields.model import ClientContext, Event, SiteConfig
from shields.rules import SiteCountryShield, SiteHostnameShield, SitePageShield, parse_site_shields

__all__ = ["MAX_RECORDS", "DryRun", "dry_run"]

MAX_RECORDS = 20_000  # drop records a dry run reads
MAX_RULE_LINES = 100  # changed rules reported one by one, per list
SAMPLES = 5
_REPLAYED = (SiteHostnameShield(), SitePageShield(), SiteCountryShield())
_REPLAYABLE = frozenset(s.reason.value for s in _REPLAYED)
_LISTS = ("hostname_allowlist", "page_blocklist", "country_blocklist", "ip_blocklist", "ip_allowlist")
_REASON_OF_LIST = {"hostname_allowlist": "site_hostname_allowlist", "page_blocklist": "site_page_blocklist",
                   "country_blocklist": "site_country_blocklist"}
IP_NOTE = ("IP rules (ip_blocklist, ip_allowlist) cannot be replayed: the gateway never stores an "
           "address, so their effect shows only once they are saved (a report-only rule, "
           "{ value = \"...\", report_only = true }, counts what it would drop without dropping).")


def replay(site: SiteConfig, hostname: str, pathname: str, country: str) -> str | None:
    """The site-rule drop reason the site's rules give an event with these fields, or None."""
    event = Event(name="", domain=site.domain, url="", hostname=hostname, pathname=pathname)
    client = ClientContext(None, "", country_code=country or None)
    shields = site.shields
    for shield in _REPLAYED:
        reason = shield.reason.value
        if reason in shields.disabled or not shield.applies(site):
            continue
        verdict = shield.check(event, client, site)
        if verdict is None or verdict.report_only or reason in shields.report_only:
            continue
        return reason
    return None


def _entries(site: SiteConfig, name: str) -> list[str]:
    s = site.shields
    values: Iterable[str] = {"hostname_allowlist": s.hostname_allowlist, "page_blocklist": s.page_blocklist,
                             "country_blocklist": sorted(s.country_blocklist), "ip_blocklist": s.ip_blocklist,
                             "ip_allowlist": s.ip_allowlist}[name]
    return list(values)


def _one_rule(name: str, entry: str) -> Any:
    return parse_site_shields({name: [entry]}, "dry-run", switchable=SWITCHABLE, evidence=EVIDENCE).compiled


def _matches(name: str, compiled: Any, hostname: str, pathname: str, country: str) -> bool:
    if name == "page_blocklist":
        return bool(compiled.pages.match(pathname))
    if name == "hostname_allowlist":
        return bool(compiled.hostnames.match(hostname))
    return country.upper() in compiled.countries


def _group_sample(g: PageKey) -> dict[str, Any]:
    return {"hostname": g.hostname, "pathname": g.pathname, "country": g.country_code, "events": g.events,
            "name": g.sample_name}


def _record_sample(r: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": api_time(str(r["timestamp"])), "reason": r["reason"], "evidence": r["evidence"], "name": r["name"],
            "hostname": r["hostname"], "pathname": r["pathname"], "country": r["country_code"],
            "referrer_host": r["referrer_host"], "browser": r["browser"]}


@dataclass(slots=True)
class _Tally:
    total: int = 0
    by_reason: Counter[str] | None = None
    samples: list[dict[str, Any]] | None = None

    def add(self, reason: str, n: int, sample: dict[str, Any] | None = None) -> None:
        self.total += n
        if self.by_reason is None or self.samples is None:
            self.by_reason, self.samples = Counter(), []
        if n:
            self.by_reason[reason] += n
        if sample is not None and len(self.samples) < SAMPLES:
            self.samples.append(sample)

    def out(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.by_reason or {}), "samples": self.samples or []}


@dataclass(frozen=True, slots=True)
class DryRun:
    current: SiteConfig
    proposed: SiteConfig
    start: str
    end: str


def _sums(buckets: Sequence[Bucket]) -> tuple[Counter[str], Counter[str]]:
    dropped: Counter[str] = Counter()
    would: Counter[str] = Counter()
    for b in buckets:
        if b.outcome == "dropped":
            dropped[b.reason] += b.events
        elif b.outcome == "would_drop":
            would[b.reason] += b.events
    return dropped, would


def dry_run(run: DryRun, reader: ConsoleReader) -> dict[str, Any]:
    """The dry run's answer (blocking: reads the sink)."""
    cur, new = run.current, run.proposed
    groups, groups_truncated = reader.event_groups(cur.domain, run.start)
    records = reader.drops(cur.domain, reason=None, evidence=None, limit=MAX_RECORDS, before=None, start=run.start)
    dropped_counts, would_counts = _sums(reader.summary(cur.domain, run.start, run.end, "day"))
    records_by_reason = Counter(r["reason"] for r in records)
    notes: list[str] = []

    would_drop, let_in = _Tally(), _Tally()
    for g in groups:
        reason = replay(new, g.hostname, g.pathname, g.country_code)
        if reason is not None and replay(cur, g.hostname, g.pathname, g.country_code) is None:
            would_drop.add(reason, g.events, _group_sample(g))

    switched_off = {r for r in (new.shields.disabled | new.shields.report_only)
                    if r not in cur.shields.disabled and r not in cur.shields.report_only}
    switches: list[dict[str, Any]] = []
    for reason in sorted(switched_off):
        n = dropped_counts.get(reason, 0)
        switches.append({"reason": reason, "change": "disabled" if reason in new.shields.disabled else "report_only",
                         "would_let_back_in": n})
    for r in records:
        reason = r["reason"]
        if reason in switched_off:
            # counted exactly below, from the per-minute counts; the records are the samples
            let_in.add(reason, 0, _record_sample(r))
        elif reason in _REPLAYABLE and replay(new, r["hostname"], r["pathname"], r["country_code"]) is None:
            let_in.add(reason, 1, _record_sample(r))
    for s in switches:
        let_in.add(s["reason"], s["would_let_back_in"])
    switched_on = {r for r in cur.shields.report_only if r not in new.shields.report_only and r not in new.shields.disabled}
    for reason in sorted(switched_on):
        n = would_counts.get(reason, 0)
        switches.append({"reason": reason, "change": "enforced", "would_drop": n})
        if reason not in _REPLAYABLE:  # replayable ones are in the event replay already
            would_drop.add(reason, n)
    for reason in sorted((cur.shields.disabled - new.shields.disabled) - _REPLAYABLE):
        notes.append(f"{reason} was disabled: it examined nothing while off, so what it will drop cannot be replayed")
        switches.append({"reason": reason, "change": "enabled", "would_drop": None})

    rules: list[dict[str, Any]] = []
    for name in _LISTS:
        before, after = _entries(cur, name), _entries(new, name)
        added = [e for e in after if e not in before]
        removed = [e for e in before if e not in after]
        if name.startswith("ip_"):
            if added or removed:
                rules.extend({"list": name, "rule": e, "change": "added" if e in added else "removed",
                              "replayable": False} for e in (added + removed)[:MAX_RULE_LINES])
            continue
        list_reason = _REASON_OF_LIST[name]
        for entry in (added + removed)[:MAX_RULE_LINES]:
            change = "added" if entry in added else "removed"
            compiled = _one_rule(name, entry)
            line: dict[str, Any] = {"list": name, "rule": entry, "change": change, "replayable": True}
            # A blocklist entry added drops the events it matches; removed, it lets back in the
            # records it matched. An allowlist works the other way round.
            blocks = name != "hostname_allowlist"
            if (change == "added") == blocks:
                hits = [g for g in groups if _matches(name, compiled, g.hostname, g.pathname, g.country_code)
                        and replay(new, g.hostname, g.pathname, g.country_code) is not None]
                line["would_drop"] = sum(g.events for g in hits)
                line["samples"] = [_group_sample(g) for g in hits[:SAMPLES]]
            else:
                hits_r = [r for r in records if r["reason"] == list_reason
                          and _matches(name, compiled, r["hostname"], r["pathname"], r["country_code"])
                          and replay(new, r["hostname"], r["pathname"], r["country_code"]) is None]
                line["would_let_back_in"] = len(hits_r)
                line["samples"] = [_record_sample(r) for r in hits_r[:SAMPLES]]
            rules.append(line)
        if len(added) + len(removed) > MAX_RULE_LINES:
            notes.append(f"{name}: {len(added) + len(removed)} rules changed; the first {MAX_RULE_LINES} are listed")
    # Said in every answer, not only when the proposal touches IP rules: the events replayed here
    # passed the site's current IP rules, and what those dropped is known only by its counts.
    notes.append(IP_NOTE)
    sampled = [reason for reason, n in records_by_reason.items()
               if reason in _REPLAYABLE and dropped_counts.get(reason, 0) > n]
    if sampled:
        notes.append("drop records are a sample under heavy traffic (capped per minute): the numbers let back in "
                     f"for {', '.join(sorted(sampled))} count the records, and the exact drops were "
                     + ", ".join(f"{r} {dropped_counts[r]}" for r in sorted(sampled)))
    if groups_truncated:
        notes.append("the site has more distinct pages than a dry run reads; the busiest were replayed")
    if len(records) >= MAX_RECORDS:
        notes.append(f"only the newest {MAX_RECORDS} drop records were read")
    return {
        "from": run.start, "to": run.end,
        "events_examined": sum(g.events for g in groups),
        "drop_records_examined": len(records),
        "would_drop": would_drop.out(),
        "would_let_back_in": let_in.out(),
        "rules": rules,
        "switches": switches,
        "notes": notes,
    }
