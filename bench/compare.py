"""`make compare ARGS="--against REF"`: this work tree's gateway against another commit's, in one run.

The machine's speed drifts within minutes, so figures from two separate `make bench` runs do
not tell a small change from noise. This script serves bare Sanic, the gateway at REF (checked
out into a temporary git worktree) and the gateway of this work tree side by side, with the
same configuration, and drives them with the bench mix in turn, round after round. Per round
it reads each server's worker CPU time per request from /proc, so a slow patch of the machine
hits all three in the same round; the medians of the per-round ratios are the result.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from bench_gateway import (  # noqa: E402
    _stop,
    _wait,
    bare_command,
    cpu_ticks,
    drain,
    gateway_config,
    gateway_extra,
    run_wrk,
    serve_command,
    setup,
    start_server,
    worker_us_per_request,
    wrk_missing,
)
import mix  # noqa: E402
from gatewayproc import free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--against", required=True, help="the commit (or branch, tag) to compare with")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--mix", default="repeat", choices=mix.MIXES,
                    help="repeat: clients and bodies come back; visitors: every client new; flood: nothing repeats")
    args = ap.parse_args()
    if wrk_missing("compare"):
        return 2

    tmp, lua, env = setup("gw-compare-", args.mix)
    extra = gateway_extra(tmp)
    other = Path(tempfile.mkdtemp(prefix="gw-compare-ref-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(other), args.against], cwd=ROOT, check=True)
    label = f"gateway at {args.against}"
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        port = free_port()
        procs["bare sanic"] = (start_server(bare_command(port, 1), env), f"http://127.0.0.1:{port}")
        for name, root in ((label, other), ("gateway, this tree", ROOT)):
            server_env = {**env, "PYTHONPATH": str(root)}
            cfg = gateway_config(tmp / name.replace(" ", "-").replace(",", ""), 1, extra, server_env)
            port = free_port()
            procs[name] = (start_server(serve_command(cfg, port), server_env, cwd=root), f"http://127.0.0.1:{port}")
        for name, (proc, base) in procs.items():
            _wait(base + ("/health" if name == "bare sanic" else "/ready"), proc)
            run_wrk(base, lua, 2, args.connections)  # warm caches

        rps: dict[str, list[float]] = {name: [] for name in procs}
        cpu: dict[str, list[float]] = {name: [] for name in procs}
        for _ in range(args.rounds):
            for name, (proc, base) in procs.items():
                before = cpu_ticks(proc.pid)
                r = run_wrk(base, lua, args.seconds, args.connections)
                cpu[name].append(worker_us_per_request(before, cpu_ticks(proc.pid), r["rps"] * args.seconds))
                rps[name].append(r["rps"])
                if name != "bare sanic":
                    drain(base)  # or the next server's run shares the cores with this shipper
    finally:
        for proc, _base in procs.values():
            _stop(proc)
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
        shutil.rmtree(other.parent, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n1 worker, {args.connections} connections, {args.rounds} rounds of {args.seconds} s, wrk -t1 on loopback, "
          f"mix {args.mix!r}")
    print(f"{'server':<32} {'best req/s':>10} {'median worker CPU µs/request':>30}")
    for name in procs:
        print(f"{name:<32} {max(rps[name]):>10.0f} {statistics.median(cpu[name]):>30.1f}")
    for name in procs:
        print(f"  {name}, per round: req/s {[round(v) for v in rps[name]]}, CPU µs/request {[round(v) for v in cpu[name]]}")
    bare = "bare sanic"
    for name in (label, "gateway, this tree"):
        per_round = statistics.median(b / g for b, g in zip(cpu[bare], cpu[name]))
        print(f"{name}: bare Sanic's CPU per request / the gateway's, median of rounds {per_round:.3f}; "
              f"best req/s / bare's best {max(rps[name]) / max(rps[bare]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
