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
import statistics
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


def start_server(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """A server in its own session (so `_stop` can end its whole group), output discarded."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def bare_command(port: int, workers: int, parse: bool = False, mode: str = "") -> list[str]:
    """The bare Sanic reference (`bench/bare_app.py`), with the gateway's parser if `parse`, or
    in another of its modes ("floor")."""
    mode = "parse" if parse else mode
    return [sys.executable, str(ROOT / "bench" / "bare_app.py"), str(port), str(workers), *([mode] if mode else [])]


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


def run_wrk(url: str, lua: Path, seconds: int, connections: int, delay_ms: float | None = None) -> dict[str, float]:
    if delay_ms is not None:
        paced = lua.with_name("paced.lua")
        # wrk truncates a delay to whole milliseconds, which at ~8 ms per cycle would be 10 %
        # off: draw floor or floor + 1 so that the mean is the fractional delay asked for.
        base = int(delay_ms)
        paced.write_text(lua.read_text() + f"\nlocal base, frac = {base}, {delay_ms - base:.4f}\n"
                         "delay = function() if math.random() < frac then return base + 1 end return base end\n")
        lua = paced
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out)


def run_wrk_at(url: str, lua: Path, seconds: int, connections: int, rate: float) -> dict[str, float]:
    """About `rate` req/s: Debian's wrk has no fixed-rate mode (wrk2's), so each connection
    pauses between requests. A connection's cycle is pause + response time, so 3 s trial runs
    measure the response time at that load and the pause is set to make up the rest (twice:
    the response time depends on the load)."""
    cycle = connections * 1000 / rate
    delay = cycle
    for _ in range(2):
        trial = run_wrk(url, lua, 3, connections, delay)
        response_ms = max(0.0, connections * 1000 / max(trial["rps"], 1.0) - delay)
        delay = max(0.0, cycle - response_ms)
    return run_wrk(url, lua, seconds, connections, delay)


def drain(base: str, timeout: float = 180) -> float:
    """Wait until the gateway's spool has no segment waiting to be shipped; seconds waited.

    Runs at full load leave a backlog that the shipper works off afterwards, on the cores the
    worker and wrk use: a latency run started then would measure that catch-up, not the load."""
    t0 = time.monotonic()
    quiet = 0
    while time.monotonic() - t0 < timeout:
        try:
            quiet = quiet + 1 if httpx.get(base + "/ready", timeout=5).json().get("spool_segments") == 0 else 0
        except (httpx.HTTPError, ValueError):
            quiet = 0
        if quiet >= 3:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def cpu_ticks(pid: int) -> dict[int, int]:
    """user + system clock ticks of every process in `pid`'s process group."""
    out = subprocess.run(["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True).stdout.split()
    ticks = {}
    for p in out:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(p)] = int(fields[11]) + int(fields[12])
    return ticks


def worker_us_per_request(before: dict[int, int], after: dict[int, int], requests: float) -> float:
    """CPU µs per request of the busiest process (the HTTP worker, with one worker)."""
    hz = os.sysconf("SC_CLK_TCK")
    busiest = max(after[p] - before.get(p, 0) for p in after)
    return busiest / hz * 1e6 / max(requests, 1.0)


def memory_mb(pid: int) -> list[tuple[float, float]]:
    """(RSS, private anonymous memory) in MB of each worker process under a server's main process.

    RSS also counts the pages of the memory-mapped geo database that lookups have touched: those
    are page cache, shared by every worker and the OS, so the private figure is given too."""
    out = []
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        return out
    for c in children:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{c}/status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if "VmRSS" in fields and "RssAnon" in fields:
            out.append((int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024))
    return out


def gateway_extra(tmp: Path) -> str:
    """Gateway file additions for a benchmark: a geo database, so geo lookups are part of the
    measured path (the one `make run` installed when present, else a generated file of 20k
    networks), and the real shield lists from ../shared/eval, so the IP and referrer shields do
    real work."""
    from geo.install import installed
    from geo.testdb import write_random_db

    found = installed(ROOT / "data")
    geo_db = found.database if found else write_random_db(tmp / "city.mmdb", "nested", networks=20_000)[0]
    geo_v6 = f'database_v6 = "{found.database_v6}"\n' if found and found.database_v6 else ""
    print(f"geo database: {geo_db}")
    lists = mix.lists_toml()
    if not lists:
        print("shared/eval lists not found: the list-based shields run empty", file=sys.stderr)
    return f'[geo]\ndatabase = "{geo_db}"\n{geo_v6}' + lists


def wrk_missing(target: str) -> bool:
    """True, after saying so, when wrk is not installed (`make <target>` installs it)."""
    if shutil.which("wrk") is not None:
        return False
    print(f"wrk is not installed (Debian package 'wrk'): make {target} installs it", file=sys.stderr)
    return True


def setup(prefix: str, traffic: str = "repeat") -> tuple[Path, Path, dict[str, str]]:
    """A scratch folder, the wrk script of a bench mix in it, and the servers' environment."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    lua = tmp / "mix.lua"
    lua.write_text(mix.wrk_lua(mix=traffic))
    return tmp, lua, {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_LOG_LEVEL": "WARNING"}


def gateway_config(base: Path, workers: int, extra: str, env: dict[str, str]) -> Path:
    """A benchmark gateway file (one site, loopback trusted as a proxy), its lists fetched."""
    cfg = write_config(base, workers=workers, batch_size=5000, flush_interval=1.0, extra=extra)
    if "[lists]" in extra:
        subprocess.run([sys.executable, "-m", "gateway.cli", "lists", "update", "--config", str(cfg)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return cfg


def serve_command(cfg: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]


GOALS = {"repeat": 0.70, "visitors": 0.75, "flood": 0.60}
EXTRA_SERVERS = ("parse only", "memory buffer")  # measured in the repeat mix only


def measure(procs: dict[str, tuple[subprocess.Popen[bytes], str]], names: list[str], lua: Path,
            args: argparse.Namespace, gateways: set[str]) -> dict[str, list[dict[str, float]]]:
    """Each of `names` measured once per round with `lua`; the order rotates every round so that
    none is always first after a gateway's backlog has shipped."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            proc, base = procs[name]
            before = cpu_ticks(proc.pid)
            r = run_wrk(base, lua, args.seconds, args.connections)
            r["cpu"] = worker_us_per_request(before, cpu_ticks(proc.pid), r["rps"] * args.seconds)
            runs[name].append(r)
            if name in gateways:
                drain(base)  # or the next server's run shares the cores with this shipper
    return runs


def per_round(runs: dict[str, list[dict[str, float]]], name: str, of: str = "bare sanic",
              key: str = "rps") -> list[float]:
    return sorted(a[key] / b[key] for a, b in zip(runs[name], runs[of]))


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (rounds {values[0]:.2f} to {values[-1]:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5,
                    help="each server is measured once per round, in an order that rotates every round")
    ap.add_argument("--mix", choices=mix.MIXES, action="append",
                    help="traffic mixes to run (bench/mix.py); default all three")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-server-api", action="store_true", help="leave out bench/bench_server_api.py")
    args = ap.parse_args()
    if wrk_missing("bench"):
        return 2
    mixes = args.mix or list(mix.MIXES)

    tmp, _lua, env = setup("gw-bench-")
    luas = {name: tmp / f"{name}.lua" for name in mixes}
    for name, path in luas.items():
        path.write_text(mix.wrk_lua(mix=name))
    extra = gateway_extra(tmp)

    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def start(name: str, cmd: list[str], port: int) -> None:
        procs[name] = (start_server(cmd, env), f"http://127.0.0.1:{port}")

    variants = {"gateway": extra}
    extras = "repeat" in mixes
    if extras:
        variants["memory buffer"] = extra + '[spool]\nmode = "memory"\n'
    results: dict[str, dict[str, dict[str, float]]] = {}
    all_runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        port = free_port()
        start("bare sanic", bare_command(port, args.workers), port)
        port = free_port()
        start("floor", bare_command(port, args.workers, mode="floor"), port)
        if extras:
            port = free_port()
            start("parse only", bare_command(port, args.workers, parse=True), port)
        for name, more in variants.items():
            cfg = gateway_config(tmp / name.replace(" ", "-"), args.workers, more, env)
            port = free_port()
            start(name, serve_command(cfg, port), port)
        for name, (proc, base) in procs.items():
            _wait(base + ("/ready" if name in variants else "/health"), proc)

        # Every server is up for the whole run (idle ones cost nothing). The machine's speed
        # drifts within seconds: the ratio that counts is taken within each round, and the
        # median of the rounds is reported.
        for traffic in mixes:
            lua = luas[traffic]
            names = list(procs) if traffic == "repeat" else ["bare sanic", "floor", "gateway"]
            for name in names:
                run_wrk(procs[name][1], lua, 2, args.connections)  # warm up, as in steady state
                if name in variants:
                    drain(procs[name][1])
            runs = measure(procs, names, lua, args, set(variants))
            all_runs[traffic] = runs
            results[traffic] = {name: max(rs, key=lambda r: r["rps"]) for name, rs in runs.items()}
            for name in names:
                mem = memory_mb(procs[name][0].pid) or [(0.0, 0.0)]
                results[traffic][name]["rss"] = max(m[0] for m in mem)
                results[traffic][name]["anon"] = max(m[1] for m in mem)
        if not args.skip_latency and "repeat" in mixes:
            # Latency at 80 % of the gateway's throughput: the median of its rounds, as for the
            # ratio (its best round may have been a fast patch of the machine).
            rate = int(statistics.median(r["rps"] for r in all_runs["repeat"]["gateway"]) * 0.8)
            proc, base = procs["gateway"]
            waited = drain(base)
            print(f"spool backlog of the throughput runs shipped in {waited:.1f} s before the latency run")
            r = run_wrk_at(base, luas["repeat"], args.seconds, args.connections, rate)
            mem = memory_mb(proc.pid) or [(0.0, 0.0)]
            r["rss"], r["anon"] = max(m[0] for m in mem), max(m[1] for m in mem)
            results["repeat"][f"gateway @80% ({r['rps'] / rate:.0%} of {rate}/s)"] = r
    finally:
        for proc, _base in procs.values():
            _stop(proc)

    for traffic in mixes:
        print(f"\n{traffic} mix: {args.workers} worker(s), {args.connections} connections, {args.seconds}s each, "
              f"{args.rounds} round(s), wrk -t1 on loopback; each server's best run")
        print(f"{'server':<34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'RSS MB':>7} "
              f"{'private MB':>10} {'worker CPU µs/req':>17}")
        for name, r in results[traffic].items():
            cpu = f"{r['cpu']:>17.1f}" if "cpu" in r else f"{'':>17}"
            print(f"{name:<34} {r['rps']:>8.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['non2xx']:>8.0f} "
                  f"{r['rss']:>7.1f} {r['anon']:>10.1f} {cpu}")
        runs = all_runs[traffic]
        print(f"floor / bare sanic: {describe(per_round(runs, 'floor'))} (headers read and one write per request: "
              "the most a durable gateway reaches here)")
        if traffic == "repeat":
            print(f"parse only / bare sanic: {describe(per_round(runs, 'parse only'))} (the body parser and nothing else)")
            print(f"durable spool / memory buffer: {describe(per_round(runs, 'gateway', 'memory buffer'))} "
                  f"(the cost of a 202 meaning 'on disk')")

    print(f"\nratios against bare Sanic in the same rounds, median of {args.rounds} ({args.workers} worker(s)):")
    print(f"{'mix':<10} {'req/s ratio':<36} {'CPU/request ratio':<36} goal")
    for traffic in mixes:
        runs = all_runs[traffic]
        rps = per_round(runs, "gateway")
        cpu = sorted(b["cpu"] / g["cpu"] for b, g in zip(runs["bare sanic"], runs["gateway"]))
        goal = GOALS[traffic] if args.workers == 1 else 0.70
        verdict = "met" if statistics.median(rps) >= goal else "NOT MET"
        print(f"{traffic:<10} {describe(rps):<36} {describe(cpu):<36} >= {goal:.2f} {verdict}")
    print("(CPU/request ratio: bare Sanic's worker CPU per request over the gateway's; the load generator\n"
          " shares the cores, so req/s ratios understate what a separate load machine would show)")

    if not args.skip_steps:
        import bench_steps

        bench_steps.main()
    if not args.skip_server_api:
        import bench_server_api

        bench_server_api.main(["--workers", str(args.workers)])
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
