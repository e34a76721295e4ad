"""The durable spool on its own: records, torn tails, claiming, shipping, sink failures."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.store.spool import Spool, encode_record, read_segment, recover


class ListSink:
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.fail = False
        self.closed = False

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if self.fail:
            raise ConnectionError("sink is down")
        self.rows.extend(rows)

    def close(self) -> None:
        self.closed = True


def rows(n: int, start: int = 0) -> list[tuple[Any, ...]]:
    return [(f"id{i}", "2026-01-01 00:00:00", "pageview", i) for i in range(start, start + n)]


def test_records_round_trip(tmp_path: Path) -> None:
    seg = tmp_path / "1-1.ready"
    seg.write_bytes(encode_record(rows(3)) + encode_record(rows(2, 3)))
    res = read_segment(seg)
    assert res.rows == rows(5) and not res.torn


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_last_record_is_skipped_not_fatal(tmp_path: Path, cut: int) -> None:
    seg = tmp_path / "1-1.ready"
    good = encode_record(rows(3))
    bad = encode_record(rows(2, 3))
    seg.write_bytes(good + bad[:cut])
    res = read_segment(seg)
    assert res.rows == rows(3) and res.torn


def test_corrupt_record_stops_the_segment(tmp_path: Path) -> None:
    seg = tmp_path / "1-1.ready"
    rec = bytearray(encode_record(rows(2)))
    rec[-3] ^= 0xFF
    seg.write_bytes(bytes(rec))
    res = read_segment(seg)
    assert res.rows == [] and res.torn


def test_recover_makes_open_and_claimed_segments_shippable(tmp_path: Path) -> None:
    (tmp_path / "11-5.open").write_bytes(encode_record(rows(1)))
    (tmp_path / "12-6.ship-12").write_bytes(encode_record(rows(1)))
    (tmp_path / "13-7.ready").write_bytes(encode_record(rows(1)))
    assert recover(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["11-5.ready", "12-6.ready", "13-7.ready"]


def test_appended_rows_are_on_disk_before_any_flush(tmp_path: Path) -> None:
    sink = ListSink()
    sp = Spool(tmp_path, sink)
    sp.append(rows(4))
    # nothing shipped yet, but a crash now would leave them in the open segment
    [seg] = list(tmp_path.glob("*.open"))
    assert read_segment(seg).rows == rows(4)
    assert sink.rows == []


def test_ship_delivers_in_order_and_deletes_segments(tmp_path: Path) -> None:
    sink = ListSink()
    sp = Spool(tmp_path, sink)
    sp.append(rows(2))
    sp.rotate()
    sp.append(rows(2, 2))
    sp.rotate()
    assert sp.ship_ready()
    assert sink.rows == rows(4)
    assert list(tmp_path.glob("*.ready")) == []


def test_failed_sink_keeps_the_segment_and_later_drains_it(tmp_path: Path) -> None:
    sink = ListSink()
    sp = Spool(tmp_path, sink)
    sp.append(rows(3))
    sp.rotate()
    sink.fail = True
    assert not sp.ship_ready()
    assert len(list(tmp_path.glob("*.ready"))) == 1 and sp.failures == 1
    sink.fail = False
    assert sp.ship_ready()
    assert sink.rows == rows(3)


def test_budget_refuses_when_the_backlog_is_too_big(tmp_path: Path) -> None:
    sink = ListSink()
    sink.fail = True
    sp = Spool(tmp_path, sink, max_disk_bytes=2000)
    while sp.has_room():
        sp.append(rows(10))
        sp.rotate()
        sp.ship_ready()  # fails, refreshes the disk usage
    assert not sp.has_room()
    sink.fail = False
    sp.ship_ready()
    assert sp.has_room()


def test_close_ships_everything_and_closes_the_sink(tmp_path: Path) -> None:
    sink = ListSink()

    async def main() -> None:
        sp = Spool(tmp_path, sink, segment_seconds=60)
        sp.start()
        sp.append(rows(5))
        assert await sp.close()

    asyncio.run(main())
    assert sink.rows == rows(5) and sink.closed
    assert os.listdir(tmp_path) == []


def test_a_started_spool_syncs_and_closes_segments_off_the_event_loop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync takes milliseconds: once started, neither the interval fsync nor closing a full
    or old segment may run on the loop's thread, and every row still arrives, in order."""
    import threading

    synced_on: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    sink = ListSink()

    async def main() -> None:
        sp = Spool(tmp_path, sink, segment_bytes=300, segment_seconds=0.05, fsync_interval=0.01)
        sp.start()
        for i in range(30):
            sp.append(rows(1, i))  # about 100 bytes each: a full segment every third append
            await asyncio.sleep(0.003)
        deadline = asyncio.get_running_loop().time() + 5
        while len(sink.rows) < 30 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        loop_thread = threading.current_thread().name
        assert synced_on and loop_thread not in synced_on
        synced_on.clear()
        sp.append(rows(1, 30))
        assert await sp.close()
        assert synced_on == [loop_thread]  # closing at stop is the one fsync left on the loop

    asyncio.run(main())
    assert sink.rows == rows(31)
    assert os.listdir(tmp_path) == []


def test_a_segment_whose_close_fails_is_left_for_the_next_start(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sink = ListSink()

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    async def main() -> None:
        sp = Spool(tmp_path, sink, segment_bytes=50, segment_seconds=60)
        sp.start()
        monkeypatch.setattr(os, "fsync", failing_fsync)
        sp.append(rows(1))  # full: handed off, and its fsync fails
        await asyncio.sleep(0.2)
        monkeypatch.undo()
        assert await sp.close()

    asyncio.run(main())
    assert sink.rows == []
    [left] = list(tmp_path.glob("*.open"))
    assert recover(tmp_path) == 1
    assert read_segment(left.with_suffix(".ready")).rows == rows(1)


def test_two_spools_never_ship_the_same_segment(tmp_path: Path) -> None:
    a_sink, b_sink = ListSink(), ListSink()
    a, b = Spool(tmp_path, a_sink), Spool(tmp_path, b_sink)
    for i in range(20):
        (a if i % 2 else b).append(rows(1, i))
        (a if i % 2 else b).rotate()
    a.ship_ready()
    b.ship_ready()
    assert sorted(a_sink.rows + b_sink.rows) == sorted(rows(20))


def test_shipper_heartbeat_staleness_counts_from_the_workers_start() -> None:
    from gateway.store.shipper import STALE_SECONDS, is_stale

    now = 1_000_000.0
    fresh = {"updated": now - 1}
    old = {"updated": now - STALE_SECONDS - 1}
    assert not is_stale(fresh, since=now - 100, now=now)
    assert is_stale(old, since=now - 100, now=now)
    # A file left by an earlier run (or none yet) is not held against a worker that just started.
    assert not is_stale(old, since=now - 1, now=now)
    assert not is_stale(None, since=now - 1, now=now)
    assert is_stale(None, since=now - STALE_SECONDS - 1, now=now)
    assert is_stale({"updated": "junk"}, since=now - STALE_SECONDS - 1, now=now)
