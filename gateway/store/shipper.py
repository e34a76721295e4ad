"""The shipper process: moves closed spool segments from every worker to the sink.

`edge-gateway serve` starts it (`python -m gateway.store.shipper CONFIG`) before the HTTP workers
when the spool is durable, and stops it after them. It is not one of Sanic's managed processes:
Sanic's main process polls a shared state dict for each of those, and a signal handler that
writes that state during a poll corrupts it (the main process then exits 1 instead of 0). The
gateway's own stop goes around that (`gateway/cli.py: _stop_between_polls`), but a second
signal, or Sanic stopping on its own, still ends in Sanic's handler; the shipper is started and
stopped by `serve` itself, outside that state (if it dies, the workers ship instead: below). Shipping here,
not in a thread of each worker, keeps segment decoding and the sink client off the workers'
event loops and their GIL: a worker only appends and rotates.

The loop looks for ready segments every half segment period and backs off while the sink
fails. A heartbeat thread publishes the counters to `<data_dir>/state/shipper.json` every
second, also while a sink write hangs, for the workers' metrics and `/ready`. A worker that sees
no heartbeat for `STALE_SECONDS` takes the process for dead and ships on its own from then on.
On SIGTERM or SIGINT the shipper ships what is ready and exits; each worker ships its own last
segment as it stops, and whatever is left is replayed at the next start. When the gateway process
ends without stopping it (killed outright), the kernel sends the SIGTERM (gateway/lifecycle.py).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from gateway.config import load_gateway_config
from gateway.lifecycle import follow_main_process, main_process_gone
from gateway.logs import setup_logging
from gateway.store.sinks import open_sink
from gateway.store.spool import SegmentShipper, next_backoff

log = logging.getLogger("gateway.shipper")

STATUS_FILE = "shipper.json"
HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 10.0  # no heartbeat for this long: the workers ship themselves


def status_path(data_dir: Path) -> Path:
    return data_dir / "state" / STATUS_FILE


def start(config_path: str) -> subprocess.Popen[bytes]:
    """Start the shipper process for a gateway file (logs go where the gateway's go)."""
    return subprocess.Popen([sys.executable, "-m", "gateway.store.shipper", config_path])


def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Ask the shipper to ship what is ready and exit; kill it if it does not in `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("shipper did not stop within %.0f s: killed; its segments are replayed at next start", timeout)
        proc.kill()
        proc.wait()


def run_shipper(config_path: str) -> None:
    """Entry point of the shipper process (runs until SIGTERM or SIGINT)."""
    config = load_gateway_config(config_path)
    setup_logging(config.logging_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follow_main_process()  # SIGTERM when the gateway process ends, even killed outright
    sink = open_sink(config)
    shipper = SegmentShipper(config.data_dir / "spool", sink, batch_rows=config.sink.batch_size,
                             retention_days=config.retention_days)
    status = status_path(config.data_dir)
    status.parent.mkdir(parents=True, exist_ok=True)
    # Half a segment period, at most a second (also the latency of a stop request).
    interval = min(max(0.02, config.sink.flush_interval / 2), 1.0)
    backoff = 0.0
    _publish(shipper, status)
    heartbeat = threading.Thread(target=_heartbeat, args=(shipper, status, stop),
                                 name="heartbeat", daemon=True)
    heartbeat.start()
    log.info("shipper started for %s", shipper.dir)
    try:
        while not stop.is_set():
            ok = _ship(shipper)
            backoff = next_backoff(backoff, ok)
            stop.wait(backoff or interval)
        if main_process_gone():
            log.warning("the gateway process is gone: the shipper stops")
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


if __name__ == "__main__":
    run_shipper(sys.argv[1])
