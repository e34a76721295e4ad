"""Counters for accepted, dropped and would-drop events, shared across worker processes.

Each worker keeps plain in-memory counters (no locks: one event loop per process) and publishes a
snapshot to `<data_dir>/metrics/worker-<pid>.json` every second with an atomic rename. `/metrics`
sums the snapshots of live workers, so any worker can answer for all of them. Labels are site
domains and drop reasons only: never an IP address or a User-Agent.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson


class Metrics:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.would_drop: Counter[tuple[str, str]] = Counter()
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

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

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


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


SHARED_GAUGES = frozenset({"spool_segments", "spool_bytes", "spool_oldest_seconds", "sink_failures",
                           "spool_torn_segments"})


def render(snapshots: list[dict[str, Any]], extra: list[str] | None = None) -> str:
    """Prometheus text exposition of the summed snapshots."""
    accepted: Counter[str] = Counter()
    dropped: Counter[tuple[str, str]] = Counter()
    would: Counter[tuple[str, str]] = Counter()
    responses: Counter[str] = Counter()
    gauges: Counter[str] = Counter()
    for s in snapshots:
        for k, v in s.get("accepted", []):
            accepted[k] += v
        for site, reason, v in s.get("dropped", []):
            dropped[(site, reason)] += v
        for site, reason, v in s.get("would_drop", []):
            would[(site, reason)] += v
        for k, v in s.get("responses", []):
            responses[str(k)] += v
        for k, v in s.get("gauges", {}).items():
            # Each worker sees the whole spool directory and the shipper process's counters:
            # those gauges are one figure, not a per-worker share, so they are not added up.
            gauges[k] = max(gauges[k], v) if k in SHARED_GAUGES else gauges[k] + v
    lines = [
        "# HELP gateway_events_accepted_total Events accepted and buffered for storage.",
        "# TYPE gateway_events_accepted_total counter",
    ]
    lines += [f'gateway_events_accepted_total{{site="{_esc(k)}"}} {v}' for k, v in sorted(accepted.items())]
    lines += [
        "# HELP gateway_events_dropped_total Events dropped, by site and reason.",
        "# TYPE gateway_events_dropped_total counter",
    ]
    lines += [f'gateway_events_dropped_total{{site="{_esc(s)}",reason="{_esc(r)}"}} {v}'
              for (s, r), v in sorted(dropped.items())]
    lines += [
        "# HELP gateway_events_would_drop_total Events a report-only shield would have dropped.",
        "# TYPE gateway_events_would_drop_total counter",
    ]
    lines += [f'gateway_events_would_drop_total{{site="{_esc(s)}",reason="{_esc(r)}"}} {v}'
              for (s, r), v in sorted(would.items())]
    lines += [
        "# HELP gateway_http_responses_total Responses of /api/event by status code.",
        "# TYPE gateway_http_responses_total counter",
    ]
    lines += [f'gateway_http_responses_total{{code="{k}"}} {v}' for k, v in sorted(responses.items())]
    lines += ["# HELP gateway_workers Worker processes reporting.", "# TYPE gateway_workers gauge",
              f"gateway_workers {len(snapshots)}"]
    for k, v in sorted(gauges.items()):
        lines += [f"# TYPE gateway_{k} gauge", f"gateway_{k} {v}"]
    if extra:
        lines += extra
    return "\n".join(lines) + "\n"
