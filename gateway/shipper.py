"""The shipper process: moves closed spool segments from every worker to the sink.

Sanic's worker manager starts it next to the HTTP workers (`create_app` registers it) when the
spool is durable. Shipping here, not in a thread of each worker, keeps segment decoding and the
sink client off the workers' event loops and their GIL: a worker only appends and rotates.

The loop looks for ready segments every half segment period and backs off while the sink
fails. A heartbeat thread publishes the counters to `<data_dir>/state/shipper.json` every
second, also while a sink write hangs, for the workers' metrics and `/ready`. A worker that sees
no heartbeat for `STALE_SECONDS` takes the process for dead and ships on its own from then on.
On SIGTERM or SIGINT the shipper ships what is ready and exits; each worker ships its own last
segment as it stops, and whatever is left is replayed at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from gateway.spool import SegmentShipper

log = logging.getLogger("gateway.shipper")

STATUS_FILE = "shipper.json"
HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 10.0  # no heartbeat for this long: the workers ship themselves


def status_path(data_dir: Path) -> Path:
    return data_dir / "state" / STATUS_FILE


def run_shipper(config_path: str) -> None:
    """Entry point of the shipper process (runs until SIGTERM or SIGINT)."""
    from gateway.cli import setup_logging
    from gateway.config import load_gateway_config
    from gateway.sinks import open_sink

    setup_logging(os.environ.get("GATEWAY_LOG_LEVEL", "INFO"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = load_gateway_config(config_path)
    sink = open_sink(config)
    shipper = SegmentShipper(config.data_dir / "spool", sink, batch_rows=config.sink.batch_size)
    status = status_path(config.data_dir)
    status.parent.mkdir(parents=True, exist_ok=True)
    interval = max(0.02, config.sink.flush_interval / 2)
    backoff = 0.0
    _publish(shipper, status)
    heartbeat = threading.Thread(target=_heartbeat, args=(shipper, status, stop), name="heartbeat", daemon=True)
    heartbeat.start()
    log.info("shipper started for %s", shipper.dir)
    try:
        while not stop.is_set():
            ok = _ship(shipper)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), 30.0)
            stop.wait(backoff or interval)
        _ship(shipper)
    finally:
        heartbeat.join()
        _publish(shipper, status)
        sink.close()


def is_stale(status: dict[str, object] | None, since: float, now: float) -> bool:
    """True when the shipper has not reported for STALE_SECONDS, counted from `since` at the
    earliest (a worker's start: a status file left by an earlier run says nothing)."""
    updated = status.get("updated") if status else None
    last = max(float(updated), since) if isinstance(updated, (int, float)) else since
    return now - last > STALE_SECONDS


def _heartbeat(shipper: SegmentShipper, path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        _publish(shipper, path)


def _ship(shipper: SegmentShipper) -> bool:
    try:
        return shipper.ship_ready()
    except Exception:  # a bug or a full disk must not end shipping: the next round tries again
        log.exception("shipping failed")
        return False


def _publish(shipper: SegmentShipper, path: Path) -> None:
    try:
        shipper.write_status(path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
