"""The server-side events API under load: 1000-event batches into the durable spool.

Part of `make bench` (or alone: `make bench-server-api ARGS="--rounds 3"`). Four servers with
the same workers, driven by `wrk` in the same run, rounds in rotating order:

* **server API**: the gateway's `POST /api/v1/events` with an ingest key, batches of 1000 events
  from never-seen visitors (each 1 to 5 events from one new address and one of the common
  User-Agents, forwarded as `ip` and `userAgent`), every event with its own `eventId`, a
  timestamp and, for some, properties: the full path (validation, the shields, visitor ids,
  geo, rows) up to a 202 that means the rows are in the spool on disk;
* **/api/event batches**: the gateway's tracker endpoint with Plausible's batch form, 100 events
  per request from one browser client (a new address each request, dressed as that browser);
* **bare sanic**: the same 1000-event bodies decoded with `orjson` and answered 202, nothing else;
* **server API, plain Python**: the same gateway from a copy of its sources without the compiled
  modules (gateway/compiled.py), with its own data folder and key: what compiling is worth.

Figures: events per second (accepted, as each answer says), the worker processes' CPU per event,
and what that makes per second of one worker's CPU. The load generator builds every body as it
goes and shares the two cores with the worker and the shipper, so the wall-clock figure
understates what a worker does with a core of its own; both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import mix  # noqa: E402
from bench_gateway import (  # noqa: E402
    _parse_wrk, _stop, _wait, bare_command, drain, gateway_config, gateway_extra, serve_command, setup,
    start_server, wrk_missing,
)
from gatewayproc import free_port  # noqa: E402

GOAL = 100_000  # events per second per worker
BATCH = 1000
TRACKER_BATCH = 100


def _lua_list(items: list[str]) -> str:
    return "{" + ",".join(json.dumps(s) for s in items) + "}"


# Shared by both gateway scripts: never-seen addresses (the Park-Miller generator of bench/mix.py,
# seeded by the clock), and the sum of the `accepted` counts of the answers, printed at the end.
_COMMON = """
local x = 1
local run = ""
accepted = 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  x = os.time() % 2147483646 + 1
  run = string.format("%d", os.time())
end
""" + mix.LUA_ADDRESS + """
response = function(status, headers, body)
  local n = body:match('"accepted":(%d+)')
  if n then accepted = accepted + tonumber(n) end
end
done = function(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("accepted") end
  io.write(string.format("accepted events: %d\\n", total))
end
"""


def server_api_lua(key: str, domain: str = "site.test") -> str:
    """1000 events a request, visitor after never-seen visitor, each event with its own id."""
    pages = [json.loads(b) for b in mix.bodies(domain)]
    return _COMMON + f"""
local uas = {_lua_list(mix.user_agents())}
local urls = {_lua_list([p["u"] for p in pages])}
local refs = {_lua_list([p.get("r", "") for p in pages])}
local seq = 0
local left, ip, ua = 0, "", ""
local headers = {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json"}}
request = function()
  local parts = {{}}
  local now = string.format("%d", os.time() * 1000)
  for i = 1, {BATCH} do
    if left == 0 then
      ip = address()
      ua = uas[x % #uas + 1]
      left = x % 5 + 1
    end
    left = left - 1
    seq = seq + 1
    local p = (x + seq) % #urls + 1
    local ref = refs[p] ~= "" and (',"referrer":"' .. refs[p] .. '"') or ""
    local name, props = "pageview", ""
    if seq % 10 == 0 then
      name, props = "Signup", ',"properties":{{"plan":"pro","step":' .. (seq % 7) .. '}}'
    end
    parts[i] = '{{"eventName":"' .. name .. '","url":"' .. urls[p] .. '"' .. ref .. props ..
      ',"ip":"' .. ip .. '","userAgent":"' .. ua .. '","timestamp":' .. now ..
      ',"eventId":"' .. run .. '-' .. seq .. '"}}'
  end
  return wrk.format("POST", "/api/v1/events", headers, '{{"events":[' .. table.concat(parts, ",") .. ']}}')
end
"""


def tracker_batch_lua(domain: str = "site.test") -> str:
    """100 events a request in Plausible's batch form, one dressed browser client per request."""
    uas = mix.user_agents()
    dress = "{" + ",".join("{" + ",".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in mix._dress(ua, domain).items())
                           + "}" for ua in uas) + "}"
    return _COMMON + f"""
local uas = {_lua_list(uas)}
local dress = {dress}
local bodies = {_lua_list(mix.bodies(domain))}
request = function()
  local ip = address()
  local k = x % #uas + 1
  local h = {{}}
  for name, value in pairs(dress[k]) do h[name] = value end
  h["Content-Type"] = "text/plain"
  h["User-Agent"] = uas[k]
  h["X-Forwarded-For"] = ip
  local parts = {{}}
  for i = 1, {TRACKER_BATCH} do parts[i] = bodies[(x + i * 7919) % #bodies + 1] end
  return wrk.format("POST", "/api/event", h, "[" .. table.concat(parts, ",") .. "]")
end
"""


def _ticks(pid: int) -> dict[str, int]:
    """CPU clock ticks (user + system) of a server's workers and of its shipper process."""
    out = subprocess.run(["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True).stdout.split()
    ticks = {"worker": 0, "shipper": 0}
    for p in out:
        if int(p) == pid:
            continue  # the main process only supervises
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" in cmdline:
            continue
        kind = "shipper" if b"gateway.store.shipper" in cmdline else "worker"
        ticks[kind] += int(fields[11]) + int(fields[12])
    return ticks


def run(url: str, lua: Path, seconds: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = _parse_wrk(out)
    m = re.search(r"accepted events: (\d+)", out)
    r["accepted"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = float(m.group(1)) if m else 0.0
    r["events_s"] = r["accepted"] / seconds
    return r


def _create_key(cfg: Path, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--config", str(cfg),
                          "--site", "site.test", "--scope", "ingest", "--label", "bench"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


PLAIN = "server API, plain Python"


def plain_tree(tmp: Path) -> Path:
    """The gateway's packages copied without their compiled modules: served from there, the
    gateway runs them as plain Python."""
    plain = tmp / "plain"
    for package in ("gateway", "shields", "geo"):
        shutil.copytree(ROOT / package, plain / package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    check = "from gateway.compiled import status; print(len(status()[0]))"
    compiled = subprocess.run([sys.executable, "-c", check], cwd=plain, env={**os.environ, "PYTHONPATH": str(plain)},
                              capture_output=True, text=True, check=True).stdout.strip()
    if compiled != "0":
        raise RuntimeError(f"the plain-Python copy still loads {compiled} compiled modules")
    return plain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if wrk_missing("bench"):
        return 2
    tmp, _lua, env = setup("gw-bench-api-")
    # The bucket out of the way: the figure is the path's, not the limit's.
    extra = gateway_extra(tmp) + "[server_api]\nevents_per_minute = 100000000\nburst = 100000000\n"
    cfg = gateway_config(tmp / "gateway", args.workers, extra, env)
    key = _create_key(cfg, env)
    luas = {"server API": tmp / "server-api.lua", "bare sanic": tmp / "bare.lua",
            "/api/event batches": tmp / "tracker.lua"}
    luas["server API"].write_text(server_api_lua(key))
    luas["bare sanic"].write_text(server_api_lua(key))
    luas["/api/event batches"].write_text(tracker_batch_lua())
    plain = plain_tree(tmp)
    plain_env = {**env, "PYTHONPATH": str(plain)}
    plain_cfg = gateway_config(tmp / "plain-gateway", args.workers, extra, plain_env)
    luas[PLAIN] = tmp / "plain.lua"
    luas[PLAIN].write_text(server_api_lua(_create_key(plain_cfg, plain_env)))

    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    gateways = {"server API", "/api/event batches", PLAIN}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in luas}
    gw: tuple[subprocess.Popen[bytes], str] | None = None
    try:
        port = free_port()
        procs["bare sanic"] = (start_server(bare_command(port, args.workers), env), f"http://127.0.0.1:{port}")
        port = free_port()
        gw = (start_server(serve_command(cfg, port), env), f"http://127.0.0.1:{port}")
        procs["server API"] = procs["/api/event batches"] = gw
        port = free_port()
        # cwd: `python -m` puts it first on the path, before PYTHONPATH
        procs[PLAIN] = (start_server(serve_command(plain_cfg, port), plain_env, cwd=plain), f"http://127.0.0.1:{port}")
        _wait(procs["bare sanic"][1] + "/health", procs["bare sanic"][0])
        _wait(gw[1] + "/ready", gw[0])
        _wait(procs[PLAIN][1] + "/ready", procs[PLAIN][0])
        names = list(luas)
        for name in names:  # warm up
            run(procs[name][1], luas[name], 2, args.connections)
        drain(gw[1])
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                proc, base = procs[name]
                before = _ticks(proc.pid)
                r = run(base, luas[name], args.seconds, args.connections)
                after = _ticks(proc.pid)
                r["drain"] = drain(base) if name in gateways else 0.0
                if name in gateways:
                    after["shipper"] = _ticks(proc.pid)["shipper"]  # the backlog shipped too
                hz = os.sysconf("SC_CLK_TCK")
                # CPU per event handled (a dropped event costs too); the shipper's per event stored
                handled = (r["requests"] - r["non2xx"]) * (TRACKER_BATCH if name == "/api/event batches" else BATCH)
                r["worker_us"] = (after["worker"] - before["worker"]) / hz * 1e6 / max(handled, 1.0)
                r["shipper_us"] = (after["shipper"] - before["shipper"]) / hz * 1e6 / max(r["accepted"], 1.0)
                runs[name].append(r)
    finally:
        if "bare sanic" in procs:
            _stop(procs["bare sanic"][0])
        if gw is not None:
            _stop(gw[0])
        if PLAIN in procs:
            _stop(procs[PLAIN][0])

    w = args.workers
    print(f"\nserver API: {BATCH}-event batches (/api/event: {TRACKER_BATCH}), {w} worker(s), {args.connections} "
          f"connections, {args.seconds}s each, {args.rounds} round(s), wrk -t1 on loopback; median of the rounds")
    print(f"{'server':<24} {'req/s':>7} {'events/s':>9} {'per worker':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>7} {'worker µs/event':>15} {'events per worker-CPU-s':>23} {'shipper µs/event':>16}")
    med: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        m = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        med[name] = m
        shipper = f"{m['shipper_us']:>16.2f}" if name in gateways else f"{'':>16}"
        print(f"{name:<24} {m['rps']:>7.0f} {m['events_s']:>9.0f} {m['events_s'] / w:>10.0f} {m['p50']:>7.1f} "
              f"{m['p99']:>7.1f} {m['non2xx']:>7.0f} {m['worker_us']:>15.2f} {1e6 / m['worker_us']:>23.0f} "
              f"{shipper}")

    def ratio(a: str, b: str, key: str = "events_s") -> str:
        values = sorted(x[key] / y[key] for x, y in zip(runs[a], runs[b]))
        return f"{statistics.median(values):.2f} (rounds {values[0]:.2f} to {values[-1]:.2f})"

    print(f"server API / bare sanic, events/s in the same round: {ratio('server API', 'bare sanic')}")
    print(f"server API / /api/event batches, events/s in the same round: {ratio('server API', '/api/event batches')}")
    print(f"server API compiled / plain Python, worker CPU per event in the same round: "
          f"{ratio('server API', PLAIN, 'worker_us')}")
    wall = med["server API"]["events_s"] / w
    cpu = 1e6 / med["server API"]["worker_us"]
    print(f"goal: {GOAL} events/s per worker into the spool. Wall clock, sharing the cores with wrk and the "
          f"shipper: {wall:.0f} ({'met' if wall >= GOAL else 'NOT MET'}); per second of one worker's CPU: "
          f"{cpu:.0f} ({'met' if cpu >= GOAL else 'NOT MET'})")
    accepted_share = med["server API"]["accepted"] / max(med["server API"]["requests"] * BATCH, 1.0)
    print(f"share of the server API's events accepted (the rest dropped by the IP lists): {accepted_share:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
