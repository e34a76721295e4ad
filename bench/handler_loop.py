"""The gateway's own work per request, in one process, without HTTP: where a request's time goes
once Sanic and the kernel are taken away.

Builds a worker's `Runtime` as `make bench` configures it (a geo database, the real shield lists
of ../shared/eval when present) and runs what the handlers run, phase by phase, over requests of
one mix, timing each phase with the thread's CPU clock:

* `visitors`: never-seen visitors, 1 to 5 requests each from one address and a common browser
  User-Agent with that browser's headers (bench/mix.py's visitor mix);
* `flood`: every request a new address, User-Agent and page, half with a browser's headers and
  half bare; `flood-bare` and `flood-dressed` are the two halves alone;
* `server-api`: 1000-event batches of `POST /api/v1/events` from never-seen forwarded visitors.

    make test-venv && .venv/bin/python bench/handler_loop.py --mix flood

Figures are µs of CPU per request (per event for the server API), best of the rounds; in the
server the same code costs more (docs/performance.md says how much, and why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import mix  # noqa: E402
import orjson  # noqa: E402
from bench_gateway import gateway_config, gateway_extra  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

from gateway.config import load_gateway_config  # noqa: E402
from gateway.runtime import Runtime, tune_collector  # noqa: E402

MIXES = ("visitors", "flood", "flood-bare", "flood-dressed", "server-api")
PEER = "127.0.0.1"  # the bench's trusted proxy
_clock = time.thread_time_ns


def _address(x: int) -> str:
    return f"{1 + (x >> 23) % 223}.{(x >> 15) % 256}.{(x >> 7) % 256}.{x % 256}"


def _dress() -> tuple[list[str], list[dict[str, str]]]:
    uas = mix.user_agents()
    return uas, [mix._dress(ua, "site.test") for ua in uas]


def tracker_requests(kind: str, n: int, seed: int) -> list[tuple[CIMultiDict[str], bytes]]:
    """(headers, body) of `n` /api/event requests of one mix, as Sanic hands them over."""
    uas, dress = _dress()
    rnd = random.Random(seed)
    out: list[tuple[CIMultiDict[str], bytes]] = []
    if kind.startswith("flood"):
        for _ in range(n):
            x = rnd.randrange(1, 2**31)
            k = x % len(uas)
            dressed = {"flood": x % 2 == 0, "flood-bare": False, "flood-dressed": True}[kind]
            h = {**(dress[k] if dressed else {}), "content-type": "text/plain", "user-agent": f"{uas[k]} r{x}",
                 "x-forwarded-for": _address(x)}
            out.append((CIMultiDict(h), b'{"n":"pageview","u":"https://site.test/p/%d","d":"site.test"}' % x))
        return out
    bodies = [b.encode() for b in mix.bodies()]
    left = k = x = 0
    ip = ""
    while len(out) < n:
        if left == 0:  # a new visitor
            x = rnd.randrange(1, 2**31)
            k, left, ip = x % len(uas), x % 5 + 1, _address(x)
        if left % 2 == 1 and left < 5:  # an engagement event: a body of its own
            body = (b'{"n":"engagement","u":"https://site.test/","d":"site.test","sd":%d,"e":%d}'
                    % (x % 101, x % 600000 + 100 + left))
        else:
            body = bodies[(x + left) % len(bodies)]
        left -= 1
        out.append((CIMultiDict({**dress[k], "content-type": "text/plain", "user-agent": uas[k],
                                 "x-forwarded-for": ip}), body))
    return out


def server_batches(n: int, seed: int) -> list[bytes]:
    """`n` bodies of 1000 events as bench/bench_server_api.py sends them."""
    uas = mix.user_agents()
    pages = [json.loads(b) for b in mix.bodies()]
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    seq = left = x = 0
    ip = ua = ""
    for _ in range(n):
        events = []
        for _ in range(1000):
            if left == 0:
                x = rnd.randrange(1, 2**31)
                ip, ua, left = _address(x), uas[x % len(uas)], x % 5 + 1
            left -= 1
            seq += 1
            page = pages[(x + seq) % len(pages)]
            e: dict[str, object] = {"eventName": "pageview", "url": page["u"], "ip": ip, "userAgent": ua,
                                    "timestamp": now, "eventId": f"{seed}-{seq}"}
            if page.get("r"):
                e["referrer"] = page["r"]
            if seq % 10 == 0:
                e.update(eventName="Signup", properties={"plan": "pro", "step": seq % 7})
            events.append(e)
        out.append(orjson.dumps({"events": events}))
    return out


def tracker_phases(rt: Runtime) -> tuple[tuple[str, ...], Callable[[CIMultiDict[str], bytes], list[int]]]:
    """What `gateway.handlers.event` does for a single-event request, phase by phase."""

    def handle(headers: CIMultiDict[str], raw: bytes) -> list[int]:
        t0 = _clock()
        result = rt.parse(raw)
        t1 = _clock()
        client = rt.clients(PEER, headers, False)
        t2 = _clock()
        outcome = rt.executor.run(result.items[0].events, client)
        if outcome.site_drops:
            rt.record_drops(outcome.site_drops)
        t3 = _clock()
        rows = rt.rows.rows(outcome.kept, client) if outcome.kept else None
        t4 = _clock()
        if rows:
            rt.spool.append(rows)
        t5 = _clock()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]

    return ("parse", "client", "steps", "rows", "spool"), handle


def server_phases(rt: Runtime) -> tuple[tuple[str, ...], Callable[[bytes], list[int]]]:
    """What `gateway.api.events.ingest` does once the key is checked, phase by phase."""
    from gateway.ingest.server_batch import decide_and_build
    from gateway.ingest.server_events import normalise_batch

    def handle(raw: bytes) -> list[int]:
        t0 = _clock()
        items = orjson.loads(raw)["events"]
        valid = normalise_batch(items, "site.test", time.time(), 7 * 86400.0).valid
        t1 = _clock()
        rows, _ = decide_and_build(rt, valid)
        t2 = _clock()
        rt.spool.append(rows)
        t3 = _clock()
        return [t1 - t0, t2 - t1, t3 - t2]

    return ("normalise", "steps + rows", "spool"), handle


async def run(kind: str, rounds: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gw-handler-loop-"))
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = gateway_config(tmp / "gw", 1, gateway_extra(tmp), {**os.environ, "PYTHONPATH": str(ROOT)})
    config = load_gateway_config(str(cfg))
    os.chdir(cfg.parent)
    rt = Runtime(config)
    rt.start()
    tune_collector()  # as a worker does once started
    try:
        best: list[float] | None = None
        for r in range(rounds):
            if kind == "server-api":
                names, batch_handle = server_phases(rt)
                work: list[tuple[object, ...]] = [(b,) for b in server_batches(max(1, n // 1000), r)]
                units = len(work) * 1000
                call: Callable[..., list[int]] = batch_handle
            else:
                names, call = tracker_phases(rt)
                work = list(tracker_requests(kind, n, r))
                units = len(work)
            totals = [0] * len(names)
            for args in work:
                for i, t in enumerate(call(*args)):
                    totals[i] += t
            per = [t / units / 1000 for t in totals]
            if best is None or sum(per) < sum(best):
                best = per
        assert best is not None
        unit = "event" if kind == "server-api" else "request"
        print(f"{kind}: {sum(best):.1f} µs per {unit} ({n} per round, best of {rounds}): "
              + ", ".join(f"{name} {v:.1f}" for name, v in zip(names, best)))
    finally:
        await rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", choices=MIXES, action="append", help="default: all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000, help="requests (or server-API events) per round")
    args = ap.parse_args()
    for kind in args.mix or MIXES:
        asyncio.run(run(kind, args.rounds, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
