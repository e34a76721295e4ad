"""Per-step cost of the request path, in one process: where a request's time goes.

Each step runs over the same realistic mix (bench/mix.py) with warm caches, as in steady state,
and once with caches defeated (every User-Agent and IP new), as under a flood of unique clients.
Figures are microseconds per event and shares of the whole, measured in this run; absolute
numbers depend on the machine, the shares and the warm/cold ratio much less.
"""

from __future__ import annotations

import ipaddress
import orjson
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mix  # noqa: E402

from gateway.config import ListSettings  # noqa: E402
from gateway.enrich.columns import RowColumns  # noqa: E402
from gateway.enrich.geo import GeoEnricher  # noqa: E402
from gateway.ingest.body import parse_body  # noqa: E402
from gateway.ingest.client_ip import ClientIPResolver  # noqa: E402
from gateway.ingest.clients import Client  # noqa: E402
from gateway.ingest.sites import Sites  # noqa: E402
from gateway.ingest.visitor import visitor_id  # noqa: E402
from gateway.lists import ListStore  # noqa: E402
from gateway.runtime import offline_executor  # noqa: E402
from gateway.state.salts import FileSaltStore  # noqa: E402
from gateway.store.spool import encode_record  # noqa: E402
from shields import IntervalSet, SpamReferrerShield  # noqa: E402
from shields.model import SiteConfig  # noqa: E402


def _time(fn: Callable[[int], Any], n: int, repeat: int = 3) -> float:
    """Best of `repeat` runs, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main(n: int = 20_000) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="gw-steps-"))
    from geo import GeoReader
    from geo.testdb import write_random_db

    db, addrs = write_random_db(tmp / "city.mmdb", "nested", networks=20_000)
    geo = GeoEnricher(GeoReader(db))
    bodies = [b.encode() for b in mix.bodies(n=400)]
    uas = mix.user_agents()
    ips = [ipaddress.ip_address(a) for a in addrs[:2000]]
    resolver = ClientIPResolver(IntervalSet.from_lines(["127.0.0.1/32"]))
    headers = [{"user-agent": uas[i % len(uas)], "x-forwarded-for": str(ips[i % len(ips)])} for i in range(4000)]
    sources = {kind: tuple(paths) for kind, paths in mix.eval_list_sources().items()}
    store = ListStore(tmp, ListSettings(sources=sources, refresh_seconds=0))
    if sources:
        store.update_all()
    store.load_all()
    executor = offline_executor(store.lists, tmp / "state")
    spam = SpamReferrerShield(store.lists)
    # RowColumns keeps no events: the step measures the work for an event not seen before.
    columns = RowColumns()
    salts = FileSaltStore(tmp)
    salt, _ = salts.salts()
    site = SiteConfig(domain="site.test")
    executor.use(Sites({site.domain: site}, (site,)))

    parsed = [parse_body(b).items[0].events[0] for b in bodies]
    clients = [Client(ip=ips[i % len(ips)], user_agent=uas[i % len(uas)]) for i in range(4000)]
    row = (os.urandom(16).hex(), "2026-11-23 12:00:00", "pageview", "site.test", 123456789, "site.test",
           "/pricing", "", "Google", "", "", "", "", "", "", "DE", "DE-BE", "", 2950159, "Desktop", "Windows",
           "10", "Chrome", "131.0", "[]", "[]", 0, 0, 1, None, "", 1)

    steps: dict[str, Callable[[int], Any]] = {
        "parse body": lambda i: parse_body(bodies[i % len(bodies)]),
        "client ip": lambda i: resolver.resolve("127.0.0.1", headers[i % len(headers)]),
        "geo lookup": lambda i: geo.locate(clients[i % len(clients)].ip),
        "spam referrer": lambda i: spam.check(parsed[i % len(parsed)], clients[i % len(clients)], site),
        "steps": lambda i: executor.decide(parsed[i % len(parsed)], clients[i % len(clients)]),
        "UA + referrer": lambda i: (columns.for_event(parsed[i % len(parsed)]),
                                    columns.for_client(clients[i % len(clients)].user_agent, None)),
        "visitor id": lambda i: visitor_id(salt, uas[i % len(uas)], ips[i % len(ips)], "site.test", "site.test"),
        "spool record": lambda i: encode_record([row]),
        "JSON answer": lambda i: orjson.dumps({"accepted": 1}),
    }
    warm = {name: _time(fn, n) for name, fn in steps.items()}

    # Cold: a new User-Agent and IP for every event (caches miss on every call).
    cold_uas = [f"{uas[i % len(uas)]} r{i}" for i in range(n)]
    cold_clients = [Client(ip=ipaddress.ip_address(addrs[i % len(addrs)]), user_agent=cold_uas[i])
                    for i in range(n)]
    cold_steps = {
        "geo lookup": lambda i: geo.locate(cold_clients[i].ip),
        "steps": lambda i: executor.decide(parsed[i % len(parsed)], cold_clients[i]),
        "UA + referrer": lambda i: (columns.for_event(parsed[i % len(parsed)]),
                                    columns.for_client(cold_clients[i].user_agent, None)),
    }
    cold = {name: _time(fn, n, repeat=1) for name, fn in cold_steps.items()}
    total = sum(warm.values())
    print(f"\nper-step cost, {n} events of the bench mix, one process (µs per event)")
    print(f"{'step':<16} {'warm':>8} {'share':>7} {'cold':>8}")
    for name, us in warm.items():
        c = f"{cold[name]:>8.1f}" if name in cold else f"{'':>8}"
        print(f"{name:<16} {us:>8.1f} {us / total:>7.0%} {c}")
    print(f"{'sum':<16} {total:>8.1f}")
    per_step(executor, site, parsed, uas, addrs, geo, columns, salt, row, n)
    return warm


def per_step(executor: Any, site: SiteConfig, parsed: list[Any], uas: list[str], addrs: list[str],
             geo: GeoEnricher, columns: RowColumns, salt: bytes, row: tuple[Any, ...], n: int) -> None:
    """What each step costs a never-seen client whose event is accepted (a browser's headers)
    and one whose event is dropped (a library's bare request with a browser's User-Agent), in the
    order the request path runs them; the accepted event then pays for its row."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser_headers import browser_headers

    from gateway.ingest.clients import HEADERS, read_browser_headers

    def client(i: int, dressed: bool) -> Client:
        ua = f"{uas[i % len(uas)]} r{i}"
        given = {"host": "site.test", **(browser_headers(uas[i % len(uas)]) if dressed else
                                         {"accept": "*/*", "accept-encoding": "gzip, deflate"})}
        headers = read_browser_headers(tuple(given.get(h) for h in HEADERS[5:]), True, False)
        return Client(ip=ipaddress.ip_address(addrs[i % len(addrs)]), user_agent=ua, headers=headers)

    kinds = {"accepted": [client(i, True) for i in range(n)], "dropped": [client(i, False) for i in range(n)]}
    event = next(e for e in parsed if e.name == "pageview")
    costs: dict[str, dict[str, float]] = {kind: {} for kind in kinds}
    for kind, clients in kinds.items():
        for step in executor.steps:
            fn = step.check
            verdicts = [fn(event, c, site) for c in clients[:200]]
            start = time.perf_counter()
            for c in clients:
                fn(event, c, site)
            costs[kind][step.reason.value] = (time.perf_counter() - start) / len(clients) * 1e6
            if any(v is not None for v in verdicts) and kind == "dropped":
                break
    accepted = kinds["accepted"]
    row_steps: dict[str, Callable[[int], Any]] = {
        "geo lookup": lambda i: geo.locate(accepted[i].ip),
        "UA parse": lambda i: columns.for_client(accepted[i].user_agent, None),
        "visitor id": lambda i: visitor_id(salt, accepted[i].user_agent, accepted[i].ip, "site.test", "site.test"),
        "spool record": lambda i: encode_record([row]),
    }
    for name, fn in row_steps.items():
        costs["accepted"][f"row: {name}"] = _time(fn, n, repeat=1)
    print(f"\nper step, a never-seen client (µs per event; {n} clients each)")
    print(f"{'step':<24} {'accepted':>9} {'dropped':>9}")
    for name, us in costs["accepted"].items():
        d = costs["dropped"].get(name)
        print(f"{name:<24} {us:>9.2f} {'' if d is None else f'{d:.2f}':>9}")
    print(f"{'sum':<24} {sum(costs['accepted'].values()):>9.2f} {sum(costs['dropped'].values()):>9.2f}"
          f"   (the dropped event stops at {list(costs['dropped'])[-1]})")


if __name__ == "__main__":
    main()
