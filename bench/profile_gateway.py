"""`make profile`: where a gateway worker's time goes under load, by function.

Starts the gateway as `make bench` does (one worker, a geo database, the real shield lists),
drives it with wrk and a bench mix (`--mix server-api`: the 1000-event batches of
bench/bench_server_api.py, with an ingest key), and samples the busiest worker with py-spy (`--gil`: only
the thread holding the GIL, which is what limits a worker's throughput). Prints the functions
with the largest inclusive and self shares of the samples. Shares, not times: sampling slows
the worker down, and the figures are only compared with each other.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from bench_gateway import _stop, _wait, gateway_config, gateway_extra, serve_command, setup, start_server  # noqa: E402
from bench_server_api import _create_key, server_api_lua  # noqa: E402
from gatewayproc import free_port  # noqa: E402


def busiest_child(pid: int) -> int:
    """The child process that has used the most CPU time (the HTTP worker, not the shipper)."""
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,cputimes="], capture_output=True, text=True).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    if not rows:
        raise RuntimeError("no worker process found")
    return max(rows, key=lambda r: r[1])[0]


def aggregate(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """py-spy's raw (collapsed) output → (samples, inclusive counts, self counts) per function."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        self_[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, inclusive, self_


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true",
                    help="C frames too (py-spy --native): inside the compiled modules and C extensions")
    ap.add_argument("--mix", choices=("repeat", "visitors", "flood", "server-api"), default="repeat",
                    help="bench/mix.py traffic, or bench/bench_server_api.py's 1000-event batches")
    args = ap.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if shutil.which("wrk") is None or not Path(py_spy).exists():
        print("needs wrk (Debian) and py-spy (pip install -e '.[load]'); make profile installs both", file=sys.stderr)
        return 2
    server_api = args.mix == "server-api"
    tmp, lua, env = setup("gw-profile-", "repeat" if server_api else args.mix)
    extra = gateway_extra(tmp)
    if server_api:  # the bucket out of the way, as in bench/bench_server_api.py
        extra += "[server_api]\nevents_per_minute = 100000000\nburst = 100000000\n"
    cfg = gateway_config(tmp / "gw", 1, extra, env)
    if server_api:
        lua.write_text(server_api_lua(_create_key(cfg, env)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = start_server(serve_command(cfg, port), env)
    raw = tmp / "profile.txt"
    try:
        _wait(f"{url}/ready", gw)
        subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d3s", "-s", str(lua), url],
                       check=True, stdout=subprocess.DEVNULL)  # warm caches
        worker = busiest_child(gw.pid)
        load = subprocess.Popen(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 2}s", "-s", str(lua), url],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        subprocess.run([py_spy, "record", "--pid", str(worker), "--gil", "--format", "raw", "--rate",
                        str(args.rate), "--duration", str(args.seconds), "--output", str(raw),
                        *(["--native"] if args.native else [])],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, _ = load.communicate()
    finally:
        _stop(gw)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out or "")
    total, inclusive, self_ = aggregate(raw)
    print(f"\nworker {worker} under wrk -c{args.connections} ({rps.group(1) if rps else '?'} req/s while sampled); "
          f"{total} samples holding the GIL")
    for title, counts in (("inclusive", inclusive), ("self", self_)):
        print(f"\n{title} share  function")
        # Frames on every stack (process start-up, the server loop) say nothing: left out.
        shown = [(name, n) for name, n in counts.most_common() if n < total][:args.top]
        for name, n in shown:
            print(f"{n / total:>14.1%}  {name}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
