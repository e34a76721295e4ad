"""The per-worker event buffer: accepted rows wait here and are written to the sink in batches.

A batch is written when `batch_size` rows are waiting or the oldest has waited
`flush_interval` seconds. Writes run in one background thread so the event loop never blocks on
the sink. A failed write keeps its rows (at the front, in order) and is retried with backoff;
past `max_events` waiting rows, `append` refuses and the HTTP layer answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger("gateway.buffer")


class Sink(Protocol):
    def write(self, rows: list[tuple[object, ...]]) -> None: ...
    def close(self) -> None: ...


class EventBuffer:
    def __init__(self, sink: Sink, *, batch_size: int, flush_interval: float, max_events: int) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_events = max_events
        self._rows: deque[tuple[object, ...]] = deque()
        self._oldest = 0.0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        return len(self._rows)

    def has_room(self, n: int) -> bool:
        return len(self._rows) + n <= self.max_events

    def append(self, rows: Iterable[tuple[object, ...]]) -> None:
        if not self._rows:
            self._oldest = time.monotonic()
        self._rows.extend(rows)
        if len(self._rows) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-buffer")

    async def _run(self) -> None:
        backoff = 0.0
        while not self._closing:
            timeout = backoff or self.flush_interval
            if self._rows and not backoff:
                timeout = max(0.0, self._oldest + self.flush_interval - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break
            if not self._rows:
                continue
            if await self._write_some():
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.5), 30.0)

    async def _write_some(self) -> bool:
        """Write up to one batch. On failure the rows stay queued, in order."""
        n = min(len(self._rows), self.batch_size)
        batch = [self._rows.popleft() for _ in range(n)]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.sink.write, batch)
        except Exception as exc:  # the sink is down or locked: keep everything and retry
            self._rows.extendleft(reversed(batch))
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sink write failed (%d rows kept for retry): %s", len(self._rows), self.last_error)
            return False
        self.written += n
        self.last_error = None
        if self._rows:
            self._oldest = time.monotonic()
            if len(self._rows) >= self.batch_size:
                self._wake.set()
        return True

    async def flush(self, *, attempts: int = 5) -> bool:
        """Write everything waiting now; True when the buffer ended empty."""
        tries = 0
        while self._rows:
            if await self._write_some():
                tries = 0
                continue
            tries += 1
            if tries >= attempts:
                return False
            await asyncio.sleep(0.2 * tries)
        return True

    async def close(self) -> bool:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # pragma: no cover - the loop never raises, but a stop must go on
                log.exception("buffer loop failed")
        ok = await self.flush(attempts=20)
        if not ok:
            log.error("stopping with %d events that the sink would not take", len(self._rows))
        self._executor.shutdown(wait=True)
        self.sink.close()
        return ok
