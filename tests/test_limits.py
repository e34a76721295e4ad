from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from gateway.state.limits import LocalRateLimiter, MinuteQuota, VelocityTable


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_the_burst_then_refuses_with_retry_after(tmp_path: Path) -> None:
    clock = Clock()
    rl = LocalRateLimiter(tmp_path / "rl", clock=clock)
    results = [rl.allow("site.test", 60, 5) for _ in range(7)]
    assert [ok for ok, _ in results] == [True] * 5 + [False] * 2
    assert 0 < results[-1][1] <= 1.0


def test_bucket_refills_at_the_configured_rate(tmp_path: Path) -> None:
    clock = Clock()
    rl = LocalRateLimiter(tmp_path / "rl", clock=clock)
    for _ in range(5):
        rl.allow("s", 60, 5)
    assert not rl.allow("s", 60, 5)[0]
    clock.t += 2.0  # 60/min = 1 per second
    assert rl.allow("s", 60, 5)[0] and rl.allow("s", 60, 5)[0]
    assert not rl.allow("s", 60, 5)[0]


def test_sites_have_separate_buckets(tmp_path: Path) -> None:
    rl = LocalRateLimiter(tmp_path / "rl", clock=Clock())
    assert rl.allow("a.test", 60, 1)[0] and not rl.allow("a.test", 60, 1)[0]
    assert rl.allow("b.test", 60, 1)[0]


def _take(path: str, n: int, q: "multiprocessing.Queue[int]") -> None:
    rl = LocalRateLimiter(Path(path))
    q.put(sum(rl.allow("shared.test", 1, 100)[0] for _ in range(n)))


def _granted_in_processes(target: Any, path: Path, n: int, processes: int = 3) -> int:
    """What `processes` spawned processes running `target(path, n, queue)` were granted in all."""
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(path), n, q)) for _ in range(processes)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(10)
    return total


def test_one_bucket_is_shared_by_several_processes(tmp_path: Path) -> None:
    total = _granted_in_processes(_take, tmp_path / "rl", 60)
    assert total == 100  # 180 attempts, burst 100, refill 1/min: exactly the burst gets through


def test_velocity_caps_events_per_visit_and_resets_after_inactivity(tmp_path: Path) -> None:
    clock = Clock()
    v = VelocityTable(tmp_path / "v", clock=clock)
    assert [v.hit("s", 42, 3, 1800) for _ in range(5)] == [True, True, True, False, False]
    assert v.hit("s", 43, 3, 1800)  # another visitor
    clock.t += 1801
    assert v.hit("s", 42, 3, 1800)


def test_velocity_table_stays_bounded_under_many_visitors(tmp_path: Path) -> None:
    v = VelocityTable(tmp_path / "v", slots=64, clock=Clock())
    for uid in range(10_000):
        v.hit("s", uid, 100, 1800)
    assert (tmp_path / "v").stat().st_size == 64 * 16


def test_tokens_given_back_are_taken_again_but_never_past_a_full_bucket(tmp_path: Path) -> None:
    clock = Clock()
    rl = LocalRateLimiter(tmp_path / "rl", clock=clock)
    assert rl.take("k", 8, 60, 10) == (True, 0.0)
    assert not rl.take("k", 3, 60, 10)[0]
    rl.give_back("k", 8, 60, 10)  # the work those 8 paid for was not done
    assert rl.take("k", 10, 60, 10) == (True, 0.0)
    rl.give_back("k", 10, 60, 10)
    rl.give_back("k", 10, 60, 10)  # more than was taken: the bucket stays at its burst
    assert rl.take("k", 10, 60, 10)[0] and not rl.take("k", 1, 60, 10)[0]


def _take_quota(path: str, n: int, q: "multiprocessing.Queue[int]") -> None:
    quota = MinuteQuota(Path(path))
    q.put(sum(quota.take("shared.test", 29_000_000, 1, 25) for _ in range(n)))


def test_a_minute_quota_is_shared_by_several_processes(tmp_path: Path) -> None:
    total = _granted_in_processes(_take_quota, tmp_path / "quota", 20)
    assert total == 25  # 60 asked for by three processes, 25 granted between them


def test_a_minute_quota_grants_what_is_left_per_key_and_starts_again_each_minute(tmp_path: Path) -> None:
    a, b = MinuteQuota(tmp_path / "quota"), MinuteQuota(tmp_path / "quota")
    assert a.take("shop.test", 100, 3, 5) == 3
    assert b.take("shop.test", 100, 3, 5) == 2 and a.take("shop.test", 100, 1, 5) == 0
    assert b.take("other.test", 100, 5, 5) == 5  # another key's quota is its own
    assert a.take("shop.test", 101, 4, 5) == 4  # a new minute
    assert b.take("shop.test", 100, 1, 5) == 1  # a past minute is not kept: its slot is reused
    small = MinuteQuota(tmp_path / "small", slots=4)  # more keys than slots: bounded, never fails
    assert [small.take(f"s{i}.test", 100, 1, 1) for i in range(10)] == [1] * 10
