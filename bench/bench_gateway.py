"""`make bench`: the gateway's throughput as a ratio of bare Sanic's, plus per-step costs.

Both servers run with the same number of workers on loopback and are driven by `wrk` with the
same realistic mix (bench/mix.py: rotating browser UAs, paths, referrers, UTM tags, client IPs
through a trusted proxy) for the same time, in this one run. Figures are only meaningful as
ratios: the load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import mix  # noqa: E402
from gatewayproc import free_port, write_config  # noqa: E402


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _parse_wrk(out: str) -> dict[str, float]:
    def dur(s: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", s)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+(\S+)", out)
        res[f"p{pct}"] = dur(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors:.*", out)
    res["socket_errors"] = 1.0 if m else 0.0
    return res


def run_wrk(url: str, lua: Path, seconds: int, connections: int, rate: int | None = None) -> dict[str, float]:
    if rate:
        # Each connection waits connections/rate seconds between requests: about `rate` req/s.
        paced = lua.with_name(f"paced-{rate}.lua")
        paced.write_text(lua.read_text() + f"\ndelay = function() return {connections * 1000 / rate:.3f} end\n")
        lua = paced
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out)


def rss_mb(pid: int) -> list[float]:
    """RSS of the worker processes under a server's main process."""
    out = []
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        return out
    for c in children:
        try:
            for line in Path(f"/proc/{c}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package 'wrk'): make bench installs it", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    lua = tmp / "mix.lua"
    lua.write_text(mix.wrk_lua())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_LOG_LEVEL": "WARNING"}
    results: dict[str, dict[str, float]] = {}

    port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_app.py"), str(port), str(args.workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/health", bare)
        run_wrk(f"http://127.0.0.1:{port}", lua, 2, args.connections)  # warm-up
        results["bare sanic"] = run_wrk(f"http://127.0.0.1:{port}", lua, args.seconds, args.connections)
        results["bare sanic"]["rss"] = max(rss_mb(bare.pid) or [0])
    finally:
        _stop(bare)

    # The gateway gets a geo database, so geo lookups are part of the measured path: the one
    # `make run` installed when present, else a generated file of 20k networks.
    from geo.install import installed
    from geo.testdb import write_random_db

    found = installed(ROOT / "data")
    geo_db = found.database if found else write_random_db(tmp / "city.mmdb", "nested", networks=20_000)[0]
    geo_v6 = f'database_v6 = "{found.database_v6}"\n' if found and found.database_v6 else ""
    geo = f'[geo]\ndatabase = "{geo_db}"\n{geo_v6}'
    lists = mix.lists_toml()  # the real shield lists, so the IP and referrer shields do real work
    if not lists:
        print("shared/eval lists not found: the list-based shields run empty", file=sys.stderr)
    variants = {
        "gateway": geo + lists,
        "no spool": geo + lists + '[spool]\nmode = "memory"\n',
    }
    for name, extra in variants.items():
        cfg = write_config(tmp / name.replace(" ", "-"), workers=args.workers, batch_size=5000,
                           flush_interval=1.0, extra=extra)
        if lists:
            subprocess.run([sys.executable, "-m", "gateway.cli", "lists", "update", "--config", str(cfg)],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/ready", gw)
            run_wrk(f"http://127.0.0.1:{port}", lua, 2, args.connections)  # warm caches, as in steady state
            results[name] = run_wrk(f"http://127.0.0.1:{port}", lua, args.seconds, args.connections)
            results[name]["rss"] = max(rss_mb(gw.pid) or [0])
            if name == "gateway" and not args.skip_latency:
                # Latency at 80 % of the measured throughput (wrk2-style fixed rate is not in
                # Debian's wrk, so the rate is held by connections that pause between requests).
                rate = int(results[name]["rps"] * 0.8)
                results["gateway @80%"] = run_wrk(f"http://127.0.0.1:{port}", lua, args.seconds,
                                                  args.connections, rate=rate)
                results["gateway @80%"]["rss"] = max(rss_mb(gw.pid) or [0])
        finally:
            _stop(gw)

    print(f"\nthroughput: {args.workers} worker(s), {args.connections} connections, {args.seconds}s each, wrk -t1 on loopback")
    print(f"{'server':<12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'RSS/worker MB':>14}")
    for name, r in results.items():
        print(f"{name:<12} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8.0f} {r['rss']:>14.1f}")
    ratio = results["gateway"]["rps"] / results["bare sanic"]["rps"]
    print(f"ratio gateway / bare sanic: {ratio:.2f} (target >= 0.70)")
    spool = results["gateway"]["rps"] / results["no spool"]["rps"]
    print(f"ratio durable spool / memory buffer: {spool:.2f} (the cost of a 202 meaning 'on disk')")

    if not args.skip_steps:
        import bench_steps

        bench_steps.main()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
