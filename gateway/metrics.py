"""Counters for accepted, dropped and would-drop events, shared across worker processes.

Each worker counts in plain in-memory `Counter`s on the request path (no locks, no label
objects: one event loop per process, a dictionary increment per event) and publishes a snapshot
to `<data_dir>/metrics/worker-<pid>.json` every second with an atomic rename. `/metrics` sums the
snapshots of live workers, so any worker can answer for all of them, and `render` writes them in
the Prometheus text format with prometheus-client. Labels are site domains, drop reasons, list
kinds and status codes only: never an IP address or a User-Agent.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "ListGauge", "Metrics", "render"]

# What `generate_latest` writes (with its default name escaping) is the classic text format,
# which every Prometheus reads under this type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.would_drop: Counter[tuple[str, str]] = Counter()
        # (site, reason, evidence): which signal or list made a shield object, for shields that
        # name one from their small fixed set (docs/shields.md)
        self.dropped_evidence: Counter[tuple[str, str, str]] = Counter()
        self.would_drop_evidence: Counter[tuple[str, str, str]] = Counter()
        self.responses: Counter[int] = Counter()
        self.gauges: dict[str, float] = {}
        self.pid = os.getpid()
        self.path = self.dir / f"worker-{self.pid}.json"

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "time": time.time(),
            "accepted": [[k, v] for k, v in self.accepted.items()],
            "dropped": [[s, r, v] for (s, r), v in self.dropped.items()],
            "would_drop": [[s, r, v] for (s, r), v in self.would_drop.items()],
            "dropped_evidence": [[s, r, e, v] for (s, r, e), v in self.dropped_evidence.items()],
            "would_drop_evidence": [[s, r, e, v] for (s, r, e), v in self.would_drop_evidence.items()],
            "responses": [[k, v] for k, v in self.responses.items()],
            "gauges": self.gauges,
        }

    def publish(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.snapshot()))
        os.replace(tmp, self.path)

    def clear_all(self) -> None:
        """Called once by the main process at start: counters restart with the gateway."""
        for p in self.dir.glob("worker-*"):
            p.unlink(missing_ok=True)

    def collect(self) -> list[dict[str, Any]]:
        """Snapshots of every live worker (this one fresh, others from their files)."""
        out = [self.snapshot()]
        for p in self.dir.glob("worker-*.json"):
            if p == self.path:
                continue
            try:
                snap = orjson.loads(p.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            # A worker that died without a clean stop keeps its file: its counts happened,
            # so they stay in the totals until the gateway is restarted (serve clears the folder).
            out.append(snap)
        return out


# Each worker sees the whole spool directory and the shipper process's counters: those gauges
# are one figure, not a per-worker share, so they are not added up.
SHARED_GAUGES = frozenset({"spool_segments", "spool_bytes", "spool_oldest_seconds", "sink_failures",
                           "spool_torn_segments"})

# (name, help, label) of a per-list gauge, and its values by list kind.
ListGauge = tuple[str, str, dict[str, float]]


class _Snapshots:
    """A prometheus-client collector over summed worker snapshots (built per scrape)."""

    def __init__(self, snapshots: list[dict[str, Any]], lists: Iterable[ListGauge]) -> None:
        self.snapshots = snapshots
        self.lists = list(lists)

    def collect(self) -> Iterator[Metric]:
        accepted: Counter[str] = Counter()
        dropped: Counter[tuple[str, str]] = Counter()
        would: Counter[tuple[str, str]] = Counter()
        evidence: dict[str, Counter[tuple[str, str, str]]] = {"dropped_evidence": Counter(),
                                                              "would_drop_evidence": Counter()}
        responses: Counter[str] = Counter()
        gauges: Counter[str] = Counter()
        for s in self.snapshots:
            for k, v in s.get("accepted", []):
                accepted[k] += v
            for site, reason, v in s.get("dropped", []):
                dropped[(site, reason)] += v
            for site, reason, v in s.get("would_drop", []):
                would[(site, reason)] += v
            for kind, into in evidence.items():
                for site, reason, label, v in s.get(kind, []):
                    into[(site, reason, label)] += v
            for k, v in s.get("responses", []):
                responses[str(k)] += v
            for k, v in s.get("gauges", {}).items():
                gauges[k] = max(gauges[k], v) if k in SHARED_GAUGES else gauges[k] + v
        family = CounterMetricFamily("gateway_events_accepted", "Events accepted and buffered for storage.",
                                     labels=["site"])
        for site, v in sorted(accepted.items()):
            family.add_metric([site], v)
        yield family
        for name, text, counts in (("gateway_events_dropped", "Events dropped, by site and reason.", dropped),
                                   ("gateway_events_would_drop", "Events a report-only shield would have dropped.",
                                    would)):
            family = CounterMetricFamily(name, text, labels=["site", "reason"])
            for (site, reason), v in sorted(counts.items()):
                family.add_metric([site, reason], v)
            yield family
        for name, text, kind in (
                ("gateway_events_dropped_by_evidence", "Drops by site, reason and the signal or list behind them.",
                 "dropped_evidence"),
                ("gateway_events_would_drop_by_evidence", "Would-drops by site, reason and signal or list.",
                 "would_drop_evidence")):
            family = CounterMetricFamily(name, text, labels=["site", "reason", "evidence"])
            for (site, reason, label), v in sorted(evidence[kind].items()):
                family.add_metric([site, reason, label], v)
            yield family
        family = CounterMetricFamily("gateway_http_responses", "Responses of /api/event by status code.",
                                     labels=["code"])
        for code, v in sorted(responses.items()):
            family.add_metric([code], v)
        yield family
        yield GaugeMetricFamily("gateway_workers", "Worker processes reporting.", value=len(self.snapshots))
        for k, v in sorted(gauges.items()):
            yield GaugeMetricFamily(f"gateway_{k}", k.replace("_", " ") + ".", value=v)
        for name, text, values in self.lists:
            gauge = GaugeMetricFamily(name, text, labels=["list"])
            for kind, v in values.items():
                gauge.add_metric([kind], v)
            yield gauge


def render(snapshots: list[dict[str, Any]], lists: Iterable[ListGauge] = ()) -> bytes:
    """Prometheus text exposition of the summed snapshots, plus the per-list gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(snapshots, lists))
    return generate_latest(registry)
