"""Speed of the steps: µs per event through the gateway's steps, cold and warm, and per IP lookup.

Cold: every event has a User-Agent the bot matcher has not seen (its verdict cache is empty).
Warm: the same User-Agents again, as in steady traffic where a few thousand UAs repeat.
Sites: one with no rules and one with ~1,500 rules (IP, country, page, hostname), to show that
rule count does not change the cost. User-Agents and lists come from `../shared/eval` when it is
there (read only), otherwise from a small synthetic set.

    python bench/bench_shields.py [--events 20000]
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tempfile  # noqa: E402

from gateway.ingest.body import ParsedEvent  # noqa: E402
from gateway.ingest.clients import Client  # noqa: E402
from gateway.ingest.executor import Executor  # noqa: E402
from gateway.ingest.sites import Sites  # noqa: E402
from gateway.ingest.steps import SWITCHABLE  # noqa: E402
from gateway.runtime import offline_executor  # noqa: E402
from shields import BotMatcher, IntervalSet, LiveLists, SiteConfig, SpamReferrerList, parse_site_shields  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"
csv.field_size_limit(1 << 24)

SYNTHETIC_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S9{v}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (compatible; Googlebot/2.{v}; +http://www.google.com/bot.html)",
    "curl/8.{v}.0",
]


def user_agents(n: int) -> list[str]:
    path = EVAL / "humans.tsv"
    uas: list[str] = []
    if path.exists():
        with path.open(encoding="utf-8", newline="") as fh:
            uas = [r["user_agent"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
        with (EVAL / "bots.tsv").open(encoding="utf-8", newline="") as fh:
            bots = [r["user_agent"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
        uas += bots[: len(uas) // 10]  # about one event in ten from a bot
    while len(uas) < n:
        uas += [t.format(v=i) for i in range(len(uas), len(uas) + 100) for t in SYNTHETIC_UAS]
    random.Random(1).shuffle(uas)
    return uas[:n]


def live_lists() -> LiveLists:
    lists_dir = EVAL / "lists"
    if lists_dir.exists():
        return LiveLists(
            referrer_spam=SpamReferrerList.from_file(lists_dir / "referrer-spam-matomo.txt"),
            datacenter_ips=IntervalSet.from_file(lists_dir / "datacenter-x4bnet-ipv4.txt")
            | IntervalSet.from_file(lists_dir / "datacenter-x4bnet-ipv6.txt"),
            threat_ips=IntervalSet.from_file(lists_dir / "threat-ipsum-level3.txt"),
        )
    rnd = random.Random(2)
    nets = [f"{ipaddress.IPv4Address(rnd.getrandbits(32) & ~0xFF)}/24" for _ in range(40_000)]
    return LiveLists(
        referrer_spam=SpamReferrerList(f"spam{i}.example" for i in range(2_000)),
        datacenter_ips=IntervalSet.from_lines(nets),
        threat_ips=IntervalSet.from_lines(str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(15_000)),
    )


def sites() -> dict[str, SiteConfig]:
    rnd = random.Random(3)
    many = {
        "ip_blocklist": [f"{ipaddress.IPv4Address(rnd.getrandbits(32) & ~0xFF)}/24" for _ in range(400)]
        + [f"2001:db8:{i:x}::/48" for i in range(100)],
        "ip_allowlist": ["10.0.0.0/8"],
        "country_blocklist": ["KP", "IR", "SY", "CU", "RU", "BY"],
        "page_blocklist": [f"/section{i}/*/private*" for i in range(300)] + [f"/old/page-{i}" for i in range(300)],
        "hostname_allowlist": [f"*.shop{i}.example" for i in range(300)] + ["site.example"],
    }
    return {
        "no rules": SiteConfig(domain="site.example"),
        "~1,500 rules": SiteConfig(domain="site.example",
                                   shields=parse_site_shields(many, "bench.toml", switchable=SWITCHABLE)),
    }


def events(n: int) -> list[tuple[ParsedEvent, Client]]:
    rnd = random.Random(4)
    uas = user_agents(n)
    referrers = [None, None, "https://www.google.com/", "https://news.ycombinator.com/item?id=1", "https://t.co/x"]
    out = []
    for i in range(n):
        ip = ipaddress.IPv4Address(rnd.getrandbits(32))
        event = ParsedEvent(
            name="pageview",
            domain="site.example",
            url=f"https://site.example/blog/post-{i % 500}",
            hostname="site.example",
            pathname=f"/blog/post-{i % 500}",
            referrer=rnd.choice(referrers),
        )
        client = Client(ip=ip, user_agent=uas[i], country_code=rnd.choice(["US", "DE", "FR", "BR", None]),
                        asn=rnd.choice([7922, 3320, 16509, None]))
        out.append((event, client))
    return out


def time_steps(executor: Executor, batch: list[tuple[ParsedEvent, Client]]) -> float:
    decide = executor.decide
    start = time.perf_counter()
    for event, client in batch:
        decide(event, client)
    return (time.perf_counter() - start) / len(batch) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()

    started = time.perf_counter()
    lists = live_lists()
    lists_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    BotMatcher.default()
    bots_ms = (time.perf_counter() - started) * 1000
    print(f"start-up: lists {lists_ms:.0f} ms, bot matcher {bots_ms:.0f} ms")
    batch = events(args.events)
    print(f"{len(batch)} events, {len({c.user_agent for _, c in batch})} distinct User-Agents\n")
    print(f"{'site':<14} {'cold µs/event':>14} {'warm µs/event':>14}")
    for name, site in sites().items():
        # a fresh executor: an empty verdict cache in its bot matcher, one-off clients
        executor = offline_executor(lists, Path(tempfile.mkdtemp(prefix="gw-bench-shields-")))
        executor.use(Sites({site.domain: site}, (site,)))
        cold = time_steps(executor, batch)
        warm = statistics.median(time_steps(executor, batch) for _ in range(3))
        print(f"{name:<14} {cold:>14.2f} {warm:>14.2f}")

    ips = [client.ip for _, client in batch if client.ip is not None]
    v6 = [ipaddress.IPv6Address(random.Random(5).getrandbits(128)) for _ in range(len(ips))]
    for label, probe in (("IPv4", ips), ("IPv6", v6)):
        start = time.perf_counter()
        for ip in probe:
            lists.datacenter_ips.contains(ip)
        per = (time.perf_counter() - start) / len(probe) * 1e6
        print(f"\nIP lookup ({label}, {len(lists.datacenter_ips)} intervals): {per:.2f} µs", end="")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
