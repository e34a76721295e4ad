"""Measure insert throughput into a throw-away ClickHouse: RowBinary (what the sink sends) vs
JSONEachRow, end to end (Python encoding + HTTP + server parsing) and server-side only,
10k-row batches.

    .venv/bin/python tests/bench_clickhouse_formats.py [total_rows]

Not collected by pytest: it is a measurement, not a check.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import ClickHouseServer

from gateway.schema import COLUMNS
from gateway.store.clickhouse import ClickHouseSink, encode_rowbinary

BATCH = 10_000


def make_rows(n: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for i in range(n):
        rows.append((
            f"{i:032x}", f"2026-11-23 06:{(i // 60) % 60:02d}:{i % 60:02d}", "pageview", "shop.example",
            (i * 2654435761) % (1 << 62), "shop.example", f"/products/item-{i % 500}", "https://search.example/",
            "Search", "", "", "", "", "", "", "FR", "FR-IDF", "", 2988507, "Desktop", "Windows", "10",
            "Chrome", "120.0", '["plan"]' if i % 3 == 0 else "[]", '["pro"]' if i % 3 == 0 else "[]",
            0, 0, 1, None, "", 3,
        ))
    return rows


def json_each_row(rows: list[tuple[object, ...]]) -> bytes:
    out = []
    for row in rows:
        d = dict(zip(COLUMNS, row))
        d["meta.key"] = orjson.loads(d["meta.key"])  # type: ignore[arg-type]
        d["meta.value"] = orjson.loads(d["meta.value"])  # type: ignore[arg-type]
        out.append(orjson.dumps(d))
    return b"\n".join(out)


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = make_rows(BATCH)
    base = Path(tempfile.mkdtemp(prefix="gw-ch-bench-"))
    try:
        with ClickHouseServer(base).start() as server:
            sink = ClickHouseSink(server.url, database="bench")
            sink.ensure_schema()
            for _ in range(2):  # the first round warms caches and the server; report the second
                t = time.perf_counter()
                enc = encode_rowbinary(rows)
                rb_enc = BATCH / (time.perf_counter() - t)
                t = time.perf_counter()
                enc_j = json_each_row(rows)
                js_enc = BATCH / (time.perf_counter() - t)
            print(f"RowBinary encode only: {rb_enc:,.0f} rows/s ({len(enc)} bytes per {BATCH} rows)")
            print(f"JSONEachRow encode only: {js_enc:,.0f} rows/s ({len(enc_j)} bytes per {BATCH} rows)")
            sink.write(rows)

            t = time.perf_counter()
            for _ in range(total // BATCH):
                sink.write(rows)
            rb = total / (time.perf_counter() - t)
            print(f"RowBinary via sink.write: {rb:,.0f} rows/s")

            q = urllib.parse.urlencode({"query": "INSERT INTO bench.events FORMAT JSONEachRow"})
            t = time.perf_counter()
            for _ in range(total // BATCH):
                with sink._lock:
                    sink._request(q, json_each_row(rows))
            js = total / (time.perf_counter() - t)
            print(f"JSONEachRow same connection: {js:,.0f} rows/s")

            # Server and HTTP only: the same pre-encoded batch sent again and again.
            for name, params, body in (("RowBinary", sink._insert_query, enc), ("JSONEachRow", q, enc_j)):
                t = time.perf_counter()
                for _ in range(total // BATCH):
                    with sink._lock:
                        sink._request(params, body)
                print(f"{name} pre-encoded (server + HTTP only): {total / (time.perf_counter() - t):,.0f} rows/s")
            sink.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
