"""The durable spool: a 202 means the event is on disk.

Each worker appends the rows it accepts to its own append-only segment file under
`<data_dir>/spool/` *before* the HTTP answer is sent (one `write(2)` per request, so a killed
process loses nothing the kernel has; `fsync` runs on a short interval, or per request with
`fsync = "always"`, for power loss). The interval fsync and the closing of segments run in a
thread of their own, so requests are not held up while the disk flushes. A shipper moves whole
segments to the sink and deletes a segment only after the sink has acknowledged every row in
it. Sinks are idempotent on `event_id`, so delivery is at-least-once and a replay never
duplicates a row.

Segment life cycle (file names carry the state, so a rename is a state change):

    <owner>-<seq>.open        being appended to by one worker (owner = pid + random tag)
    <owner>-<seq>.ready       closed, waiting for any shipper
    <owner>-<seq>.ship-<who>  claimed by shipper <who> (an atomic rename)

At start, before any worker runs, `recover()` turns every `.open` and `.ship-*` left behind by a
crash into `.ready`, so whoever ships next replays them. Record format: 4-byte little-endian
length, 4-byte CRC32 of the payload, payload (orjson list of rows). A torn or corrupt record ends
the segment: the reader stops there and reports it, it never refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.schema import TABLES

log = logging.getLogger("gateway.spool")

_HEADER = struct.Struct("<II")
_MAX_RECORD = 64 * 1024 * 1024


class Sink(Protocol):
    def write(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def write_table(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


def encode_record(rows: Sequence[tuple[Any, ...]], table: str | None = None) -> bytes:
    """One spool record: event rows as a JSON list of rows; rows of another table
    (gateway.schema.TABLES: drop records, counts) as {"table": name, "rows": [...]}."""
    if table is None:
        payload = orjson.dumps(rows)
    else:  # named tuples (gateway.schema.DropRecord...) are written as plain lists
        payload = orjson.dumps({"table": table, "rows": rows}, default=tuple)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class ReadResult:
    rows: list[tuple[Any, ...]]  # event rows
    torn: bool  # the segment ended in an incomplete or corrupt record
    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # other tables' rows

    @property
    def total(self) -> int:
        return len(self.rows) + sum(len(r) for r in self.tables.values())


def read_segment(path: Path) -> ReadResult:
    data = path.read_bytes()
    result = ReadResult([], False)
    pos, n = 0, len(data)
    while pos < n:
        if pos + _HEADER.size > n:
            result.torn = True
            return result
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if length > _MAX_RECORD or end > n:
            result.torn = True
            return result
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            result.torn = True
            return result
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError:
            result.torn = True
            return result
        if isinstance(record, dict):
            name = record.get("table")
            if name in TABLES:
                result.tables.setdefault(name, []).extend(tuple(r) for r in record.get("rows", ()))
            else:  # a record this version cannot place: reported, never a reason to stop
                log.warning("segment %s has a record for unknown table %r: skipped", path.name, name)
        else:
            result.rows.extend(tuple(r) for r in record)
        pos = end
    return result


def _seq_of(name: str) -> int:
    # "<pid>-<seq>.ready" or "<pid>-<seq>.ship-<pid>": seq orders segments by creation time
    stem = name.split(".", 1)[0]
    try:
        return int(stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def recover(spool_dir: Path) -> int:
    """Make every segment left by a previous run shippable. Call with no worker running."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in spool_dir.iterdir():
        if p.suffix == ".open" or ".ship-" in p.name:
            stem = p.name.split(".", 1)[0]
            os.replace(p, spool_dir / f"{stem}.ready")
            n += 1
        elif p.suffix == ".ready":
            n += 1
    return n


def next_backoff(backoff: float, ok: bool) -> float:
    """Seconds to wait before the next sink attempt: none after a success, then 0.5 s doubling
    up to 30 s while the sink keeps failing. One schedule for every shipper and buffer."""
    return 0.0 if ok else min(max(backoff * 2, 0.5), 30.0)


def iter_ready(spool_dir: Path) -> Iterator[Path]:
    yield from sorted(spool_dir.glob("*.ready"), key=lambda p: _seq_of(p.name))


def spool_usage(spool_dir: Path) -> tuple[int, int, float]:
    """(segments, bytes, age in seconds of the oldest) of everything unshipped in the spool."""
    count, size, oldest = 0, 0, time.time()
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return 0, 0, 0.0
    for e in entries:
        try:
            st = e.stat()
        except FileNotFoundError:
            continue
        if not st.st_size:
            continue  # a worker's freshly opened segment, nothing in it yet
        count += 1
        size += st.st_size
        oldest = min(oldest, st.st_mtime)
    return count, size, (time.time() - oldest) if count else 0.0


class SegmentShipper:
    """Moves ready segments to the sink, oldest first, deleting each only once the sink has it.

    Any number of shippers, in any processes, can work on one spool directory: a segment is
    claimed by an atomic rename. The gateway runs one in its own process (gateway/store/shipper.py),
    off the workers' event loops; each worker also runs one when it stops, for its last segment.
    """

    def __init__(self, spool_dir: Path, sink: Sink, *, batch_rows: int = 10_000,
                 retention_days: dict[str, int] | None = None) -> None:
        self.dir = spool_dir
        self.sink = sink
        self.batch_rows = batch_rows
        # Days to keep each console table (gateway.schema.TABLES); expired once an hour.
        self.retention_days = retention_days or {}
        self._next_expiry = 0.0
        # pid plus a random tag: unique even for two shippers in one process, or a recycled pid
        self.owner = f"{os.getpid()}{os.urandom(3).hex()}"
        self.shipped_rows = 0
        self.failures = 0
        self.last_error: str | None = None
        self.torn_segments = 0
        self.backlog_segments = 0
        self.backlog_bytes = 0
        self.backlog_age = 0.0

    def _claim(self) -> Path | None:
        for p in iter_ready(self.dir):
            stem = p.name.split(".", 1)[0]
            target = self.dir / f"{stem}.ship-{self.owner}"
            try:
                os.rename(p, target)
            except FileNotFoundError:
                continue  # another shipper claimed it first
            return target
        return None

    def ship_ready(self) -> bool:
        """Ship every ready segment, oldest first. False if the sink failed (segment kept)."""
        try:
            while True:
                seg = self._claim()
                if seg is None:
                    return True
                result = read_segment(seg)
                if result.torn:
                    self.torn_segments += 1
                    log.warning("segment %s ends in a torn record: shipping the %d complete rows before it",
                                seg.name, result.total)
                try:
                    for i in range(0, len(result.rows), self.batch_rows):
                        self.sink.write(result.rows[i:i + self.batch_rows])
                    for table, rows in result.tables.items():
                        for i in range(0, len(rows), self.batch_rows):
                            self.sink.write_table(table, rows[i:i + self.batch_rows])
                except Exception as exc:
                    stem = seg.name.split(".", 1)[0]
                    os.replace(seg, self.dir / f"{stem}.ready")  # give it back, in order
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("sink write failed, %s kept for retry: %s", seg.name, self.last_error)
                    return False
                seg.unlink()
                self.shipped_rows += len(result.rows)
                self.last_error = None
        finally:
            self.backlog_segments, self.backlog_bytes, self.backlog_age = spool_usage(self.dir)
            self._expire_if_due()

    def _expire_if_due(self) -> None:
        """Once an hour, drop the console tables' rows older than their retention. Several
        shippers may do it at once: deleting what is already gone is harmless."""
        now = time.time()
        if not self.retention_days or now < self._next_expiry:
            return
        self._next_expiry = now + 3600
        expire = getattr(self.sink, "expire", None)
        if expire is None:
            return
        for table, days in self.retention_days.items():
            before = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - days * 86400))
            try:
                n = expire(table, before)
            except Exception as exc:  # the next hour tries again; shipping goes on
                log.warning("expiring %s older than %s failed: %s", table, before, exc)
                continue
            if n:
                log.info("expired %s from %s older than %s", n, table, before)

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "shipped_rows": self.shipped_rows, "failures": self.failures,
                "last_error": self.last_error, "torn_segments": self.torn_segments, "updated": time.time()}

    def write_status(self, path: Path) -> None:
        """Publish the counters for the workers' metrics and /ready (atomic replace)."""
        tmp = path.with_name(f".{path.name}.{self.owner}.tmp")
        tmp.write_bytes(orjson.dumps(self.status()))
        os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """A shipper's published counters, or None when there are none (yet)."""
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class Spool:
    """One worker's writer, and (with `ship_in_background`) a shipper thread of its own.

    Without it the spool only writes: a shipper process moves the segments, and `refresh()`
    picks up the backlog from the directory and the counters from that process's status file.
    At `close()` the spool always ships what is ready itself, its own last segment included.
    """

    def __init__(
        self,
        spool_dir: Path,
        sink: Sink,
        *,
        segment_bytes: int = 4 * 1024 * 1024,
        segment_seconds: float = 1.0,
        fsync: str = "interval",  # "interval", "always" or "never"
        fsync_interval: float = 0.2,
        max_disk_bytes: int = 1024 * 1024 * 1024,
        ship_batch_rows: int = 10_000,
        ship_in_background: bool = True,
        retention_days: dict[str, int] | None = None,
    ) -> None:
        self.dir = spool_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.fsync_mode = fsync
        self.fsync_interval = fsync_interval
        self.max_disk_bytes = max_disk_bytes
        self.shipper = SegmentShipper(spool_dir, sink, batch_rows=ship_batch_rows, retention_days=retention_days)
        self.ship_in_background = ship_in_background
        self.owner = self.shipper.owner
        self._seq = int(time.time() * 1000) * 1000
        self._fd = -1
        self._path: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._dirty = False
        self._disk_bytes = 0  # segments on disk: refreshed from the directory, raised on rotation
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipper")
        # fsync takes milliseconds; run on the event loop it holds up every request meanwhile.
        # Once started, the interval fsync and the closing of full or old segments run here
        # (one thread: segments become ready in the order they were written).
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-sync")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        self.torn_segments = 0
        self.backlog_segments = 0
        self.backlog_age = 0.0
        self._open_segment()

    # --- writing (event loop thread) -------------------------------------------------------

    def _open_segment(self) -> None:
        self._seq += 1
        self._path = self.dir / f"{self.owner}-{self._seq}.open"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._opened = time.monotonic()
        self._size = 0

    def _take_segment(self) -> tuple[int, Path, bool, bool] | None:
        """Detach the open segment: (descriptor, path, has rows, needs an fsync), for
        `_finish_segment`. Its bytes count as on disk from now on, not from the shipper's next
        look: a shipper stuck on a slow sink must not let the backlog grow past the budget unseen."""
        if self._fd < 0 or self._path is None:
            return None
        taken = (self._fd, self._path, self._size > 0, self._dirty or self.fsync_mode != "never")
        self._disk_bytes += self._size
        self._fd, self._path, self._dirty = -1, None, False
        return taken

    def _close_segment(self) -> None:
        taken = self._take_segment()
        if taken is not None:
            _finish_segment(*taken)

    def _hand_off_segment(self) -> None:
        """Start a new segment now and let the sync thread fsync, close and mark the old one
        ready (then wake the ship loop)."""
        taken = self._take_segment()
        self._open_segment()
        if taken is not None:
            self._syncer.submit(_finish_segment, *taken).add_done_callback(self._segment_finished)

    def _segment_finished(self, done: Future[None]) -> None:  # in the sync thread
        exc = done.exception()
        if exc is not None:  # left as .open: `recover()` makes it ready at the next start
            log.error("closing a spool segment failed: %s", exc)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def has_room(self) -> bool:
        return self._disk_bytes + self._size < self.max_disk_bytes

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes + self._size

    def append(self, rows: Sequence[tuple[Any, ...]], table: str | None = None) -> None:
        """Put rows (event rows, or `table`'s) on disk (in the kernel) before the caller
        answers 202. Raises OSError."""
        record = encode_record(rows, table)
        os.write(self._fd, record)
        self._size += len(record)
        if self.fsync_mode == "always":
            os.fsync(self._fd)
        else:
            self._dirty = True
        if self._size >= self.segment_bytes:
            if self._loop is not None:
                self._hand_off_segment()
            else:
                self.rotate()

    def rotate(self) -> None:
        """Close the open segment (fsync, mark it ready) in this thread and start a new one."""
        self._close_segment()
        self._open_segment()
        self._wake.set()

    # --- background --------------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._tick(), name="spool-tick"))
        if self.ship_in_background:
            self._tasks.append(loop.create_task(self._ship_loop(), name="spool-ship"))

    def start_shipping(self) -> None:
        """Ship from this worker from now on (the fallback when the shipper process is gone)."""
        if not self.ship_in_background and not self._closing:
            self.ship_in_background = True
            self._tasks.append(asyncio.get_running_loop().create_task(self._ship_loop(), name="spool-ship"))

    async def _tick(self) -> None:
        """fsync on the interval; close a segment once it is old enough to ship. Both in the
        sync thread: appends go on meanwhile, and the next interval covers what they wrote."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(min(self.fsync_interval, self.segment_seconds))
            try:
                if self._size and time.monotonic() - self._opened >= self.segment_seconds:
                    self._hand_off_segment()  # its fsync covers this interval's writes
                elif self._dirty and self._fd >= 0 and self.fsync_mode == "interval":
                    self._dirty = False
                    # A duplicate descriptor: the segment may be closed while this one syncs.
                    await loop.run_in_executor(self._syncer, _fsync_and_close, os.dup(self._fd))
            except OSError as exc:  # a failing disk: say so, keep ticking
                log.error("spool fsync failed: %s", exc)

    async def _ship_loop(self) -> None:
        backoff = 0.0
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff or self.segment_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break
            ok = await loop.run_in_executor(self._executor, self.ship_ready)
            backoff = next_backoff(backoff, ok)

    @property
    def shipped_rows(self) -> int:
        return self.shipper.shipped_rows

    def ship_ready(self) -> bool:
        """Ship every ready segment now, in the calling thread. False if the sink failed."""
        sh = self.shipper
        ok = sh.ship_ready()
        self.backlog_segments, self._disk_bytes, self.backlog_age = sh.backlog_segments, sh.backlog_bytes, sh.backlog_age
        self._take(sh.status())
        return ok

    def refresh(self, status: dict[str, Any] | None) -> None:
        """Backlog from the directory, counters from a shipper process's status (if any)."""
        self.backlog_segments, self._disk_bytes, self.backlog_age = spool_usage(self.dir)
        if status is not None:
            self._take(status)

    def _take(self, status: dict[str, Any]) -> None:
        self.failures = int(status.get("failures") or 0)
        self.last_error = status.get("last_error")
        self.torn_segments = int(status.get("torn_segments") or 0)

    async def close(self, *, attempts: int = 5) -> bool:
        """Close the open segment and ship everything; what the sink refuses stays for next start."""
        self._closing = True
        self._wake.set()
        await _cancel(self._tasks)
        self._close_segment()
        self._syncer.shutdown(wait=True)  # the segments handed off before are ready now
        loop = asyncio.get_running_loop()
        ok = False
        for i in range(attempts):
            ok = await loop.run_in_executor(self._executor, self.ship_ready)
            if ok:
                break
            await asyncio.sleep(0.2 * (i + 1))
        if not ok:
            log.error("sink unavailable at stop: %d segment(s) stay in %s and are shipped at next start",
                      self.backlog_segments, self.dir)
        self._executor.shutdown(wait=True)
        self.sink.close()
        return ok


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_segment(fd: int, path: Path, has_rows: bool, sync: bool) -> None:
    """fsync (if asked), close, and mark a segment ready (or delete it when it is empty)."""
    try:
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if has_rows:
        os.replace(path, path.with_suffix(".ready"))
    else:
        path.unlink(missing_ok=True)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has ended."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except (asyncio.CancelledError, Exception):
            pass


class MemoryBuffer:
    """The non-durable alternative to `Spool` (`[spool] mode = "memory"`): rows wait in memory
    and are written in batches, as most analytics servers do. A crash or kill loses up to a
    flush interval of accepted events, and a sink outage holds them in memory up to the
    budget. It exists to measure what durability costs (`make bench`) and for operators who
    accept that trade."""

    def __init__(self, sink: Sink, *, flush_seconds: float = 1.0, batch_rows: int = 5000,
                 max_bytes: int = 256 * 1024 * 1024) -> None:
        self.sink = sink
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.max_bytes = max_bytes
        self._rows: list[tuple[Any, ...]] = []
        self._held: list[tuple[Any, ...]] = []  # taken by the writer, not yet acknowledged
        self._table_rows: dict[str, list[tuple[Any, ...]]] = {}
        self._table_held: dict[str, list[tuple[Any, ...]]] = {}
        self._bytes = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.failures = 0
        self.last_error: str | None = None
        self.torn_segments = 0
        self.backlog_age = 0.0

    @property
    def backlog_segments(self) -> int:
        return 0

    @property
    def disk_bytes(self) -> int:
        return 0

    def has_room(self) -> bool:
        return self._bytes < self.max_bytes

    def append(self, rows: Sequence[tuple[Any, ...]], table: str | None = None) -> None:
        if table is not None:
            self._table_rows.setdefault(table, []).extend(rows)
            self._bytes += 200 * len(rows)
            return
        self._rows.extend(rows)
        self._bytes += 200 * len(rows)  # a row's rough size in memory; only the budget reads it
        if len(self._rows) >= self.batch_rows:
            self._wake.set()

    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._loop(), name="memory-writer"))

    def _write(self) -> bool:
        try:
            for i in range(0, len(self._held), self.batch_rows):
                self.sink.write(self._held[i:i + self.batch_rows])
            self._held = []
            for table in list(self._table_held):
                rows = self._table_held[table]
                for i in range(0, len(rows), self.batch_rows):
                    self.sink.write_table(table, rows[i:i + self.batch_rows])
                del self._table_held[table]
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sink write failed, %d rows kept in memory: %s", len(self._held), self.last_error)
            return False
        self._held = []
        self.last_error = None
        return True

    async def _flush(self) -> bool:
        if not self._held:
            self._held, self._rows = self._rows, []
        if not self._table_held:
            self._table_held, self._table_rows = self._table_rows, {}
        if not self._held and not self._table_held:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(self._executor, self._write)
        self._bytes = 200 * (len(self._rows) + len(self._held) + sum(map(len, self._table_rows.values()))
                             + sum(map(len, self._table_held.values())))
        return ok

    async def _loop(self) -> None:
        backoff = 0.0
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff or self.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            ok = await self._flush()
            backoff = next_backoff(backoff, ok)

    async def close(self, *, attempts: int = 5) -> bool:
        self._closing = True
        self._wake.set()
        await _cancel(self._tasks)
        ok = False
        for i in range(attempts):
            ok = await self._flush() and await self._flush()
            if ok:
                break
            await asyncio.sleep(0.2 * (i + 1))
        if not ok:
            log.error("sink unavailable at stop: %d buffered rows are lost", len(self._rows) + len(self._held))
        self._executor.shutdown(wait=True)
        self.sink.close()
        return ok
