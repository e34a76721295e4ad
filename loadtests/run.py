"""`make loadtest`: run the Locust mix against a fresh gateway and decide pass or fail.

    python loadtests/run.py [--run-time 60s] [--users 200] [--spawn-rate 50] [--workers 2]
                            [--mix 'BrowserUser=80 BotUser=8 ...'] [--break shields]
                            [--host http://127.0.0.1:8000] [UserClass ...]

Without `--host` it starts its own gateway: a temporary data dir, two site files (the main
site and a rate-limited one), and the sample spam and datacenter lists of `loadtests/data/`
installed with `edge-gateway lists update`. Locust runs headless for a fixed time, the gateway's
`/metrics` is read, the gateway is stopped with SIGTERM (which flushes every buffered event) and
its SQLite sink is counted. The run passes only if:

- no response was a 5xx and every request got an answer;
- Locust's failure ratio (answers that differ from what the locustfile expects) and p99
  latency are within the thresholds below;
- every drop the mix implies is counted by the gateway under its reason, and nothing else is;
- the accepted events the mix implies equal the gateway's accepted count and the rows in the sink;
- the 400s and 429s the gateway counted equal the ones Locust saw;
- the rate-limited site accepted no more than its limit allows, and answered 429 beyond it;
- the gateway stopped cleanly.

With `--host URL` the mix runs against a gateway that is already running (loopback only); the
checks use the difference of its `/metrics` before and after, and the sink is not read. That
gateway needs the sample lists and the rate-limited site for the matching classes to pass.

`--break shields` (or LOADTEST_BREAK=shields) starts the gateway with every shield disabled in
the site files, to show that the run then fails. Reports go to `loadtests/reports/<time>/`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# --- pass/fail thresholds ------------------------------------------------------------------
# Measured on the 2-core reference machine, Locust and a 2-worker gateway sharing the cores:
# see docs/loadtesting.md for the numbers these leave room above.
MAX_FAILURE_RATIO = 0.001  # answers that differ from what the locustfile expects
MAX_P99_MS = 50.0  # over every request of the mix
MAX_P50_MS = 10.0

# --- the default run -----------------------------------------------------------------------
USERS = 200
SPAWN_RATE = 50
RUN_TIME = "60s"
WORKERS = 2
STOP_TIMEOUT_S = 10  # users finish the task in hand, so every request sent is answered and tallied
SITE = "example.com"
FLOOD_SITE = "flood.example.net"
FLOOD_EVENTS_PER_MINUTE = 600
FLOOD_BURST = 60
# Every shield a site file may disable (docs/shields.md, rows 1-9).
ALL_SHIELDS = ("spam_referrer", "verification_agent", "dc_ip", "threat_ip", "site_hostname_allowlist",
               "site_page_blocklist", "site_ip_blocklist", "site_country_blocklist", "bot")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
LOCUSTFILE = HERE / "locustfile.py"
LOCUST_CONF = HERE / "locust.conf"
REPORTS = HERE / "reports"

# Local requests must never go through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_seconds(text: str) -> int:
    """'60', '60s', '2m', '1h30m' -> seconds (Locust's own format)."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 60s, 2m or 1h30m")
    h, m, s = (int(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


# --- the gateway under test ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write_gateway(base: Path, *, port: int, workers: int, broken: bool) -> Path:
    """A gateway config with its own data dir, the sample lists as sources and two sites."""
    sites = base / "sites"
    sites.mkdir(parents=True)
    shields = f"\n[shields]\ndisabled = {_toml_list(ALL_SHIELDS)}\n" if broken else ""
    (sites / "site.toml").write_text(f"domain = {json.dumps(SITE)}\n{shields}")
    (sites / "flood.toml").write_text(
        f"domain = {json.dumps(FLOOD_SITE)}\n\n[rate_limit]\n"
        f"events_per_minute = {FLOOD_EVENTS_PER_MINUTE}\nburst = {FLOOD_BURST}\n{shields}")
    cfg = base / "gateway.toml"
    cfg.write_text(f"""\
data_dir = "data"
sites_dir = "sites"
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[server]
host = "127.0.0.1"
port = {port}
workers = {workers}

[sink]
type = "sqlite"
batch_size = 5000
flush_interval = 1.0

[limits]
max_body_bytes = 65536
max_batch_events = 100

[lists]
refresh_interval = 0   # the load test never fetches anything
[lists.referrer_spam]
sources = [{json.dumps(str(DATA / "spam_referrers.txt"))}]
[lists.datacenter_ips]
sources = [{json.dumps(str(DATA / "datacenter_ips.txt"))}]
""")
    return cfg


@dataclass
class Gateway:
    config: Path
    port: int
    workers: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.config.parent / "data"

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "GATEWAY_LOG_LEVEL": "WARNING"}

    def install_lists(self) -> None:
        cmd = [sys.executable, "-m", "gateway.cli", "lists", "update", "--config", str(self.config),
               "referrer_spam", "datacenter_ips"]
        out = subprocess.run(cmd, check=False, cwd=ROOT, env=self._env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"`edge-gateway lists update` failed:\n{out.stdout}{out.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config), "--port", str(self.port)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # Every worker must be up, or the first seconds measure start-up.
                workers_up = len(list((self.data_dir / "metrics").glob("worker-*.json")))
                if http_get(f"{self.url}/ready", timeout=1)[0] == 200 and workers_up >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not become ready in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the gateway flushes its buffer and exits), SIGKILL only if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                self.exit_code = None  # did not stop by itself
                return None
        self.exit_code = self.proc.returncode
        return self.exit_code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def sink_counts(self) -> Counter[str]:
        """Rows in the SQLite sink, by domain."""
        path = self.data_dir / "events.sqlite3"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return Counter(dict(conn.execute("SELECT domain, count(*) FROM events GROUP BY domain").fetchall()))
        finally:
            conn.close()


# --- what the gateway says -----------------------------------------------------------------

_SAMPLE = re.compile(r"^(gateway_[a-z_]+)(?:\{(.*)\})?\s+([-+0-9.eE]+|NaN)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    accepted: Counter[str] = field(default_factory=Counter)  # by site
    dropped: Counter[str] = field(default_factory=Counter)  # by reason, all sites
    dropped_by_site: Counter[tuple[str, str]] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    workers: int = 0

    @classmethod
    def parse(cls, text: str) -> Metrics:
        m = cls()
        for line in text.splitlines():
            match = _SAMPLE.match(line.strip())
            if not match:
                continue
            name, labels_text, value = match.groups()
            labels = dict(_LABEL.findall(labels_text or ""))
            n = int(float(value))
            if name == "gateway_events_accepted_total":
                m.accepted[labels.get("site", "")] += n
            elif name == "gateway_events_dropped_total":
                m.dropped[labels.get("reason", "")] += n
                m.dropped_by_site[(labels.get("site", ""), labels.get("reason", ""))] += n
            elif name == "gateway_http_responses_total":
                m.responses[int(labels.get("code", "0"))] += n
            elif name == "gateway_workers":
                m.workers = n
        return m

    def minus(self, before: Metrics) -> Metrics:
        return Metrics(accepted=self.accepted - before.accepted, dropped=self.dropped - before.dropped,
                       dropped_by_site=self.dropped_by_site - before.dropped_by_site,
                       responses=self.responses - before.responses, workers=self.workers)


def settled_metrics(url: str, out: Path | None = None, min_wait: float = 1.5, timeout: float = 15.0) -> Metrics:
    """/metrics once every worker has published its last counts (each does once a second)."""
    start = time.monotonic()
    last = None
    while True:
        status, text = http_get(f"{url}/metrics")
        if status != 200:
            raise RuntimeError(f"GET {url}/metrics answered {status}")
        if last == text and time.monotonic() - start >= min_wait:
            break
        if time.monotonic() - start > timeout:
            break
        last = text
        time.sleep(0.6)
    if out is not None:
        out.write_text(text)
    return Metrics.parse(text)


# --- what Locust says ----------------------------------------------------------------------


def percentile(hist: Counter[int], q: float) -> float:
    """q-quantile in ms of a histogram of 0.1 ms buckets (nan when empty)."""
    n = sum(hist.values())
    if not n:
        return float("nan")
    rank = q * n
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket / 10
    return max(hist) / 10


@dataclass
class Tally:
    """Sum of the locustfile's per-process tallies (see the locustfile's `Tally`)."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    unanswered: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    mismatches: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: dict[str, Counter[int]] = field(default_factory=dict)
    steady_seconds: float = 0.0
    files: int = 0

    @classmethod
    def read(cls, path: Path) -> Tally:
        t = cls()
        for p in sorted(path.parent.glob(path.name + "*")):
            if p.suffix == ".tmp":
                continue
            data = json.loads(p.read_text())
            t.files += 1
            for name, codes in data.get("statuses", {}).items():
                c = t.statuses.setdefault(name, Counter())
                for code, n in codes.items():
                    c[int(code)] += n
            for name, buckets in data.get("latency_tenth_ms", {}).items():
                h = t.latency.setdefault(name, Counter())
                for bucket, n in buckets.items():
                    h[int(bucket)] += n
            t.unanswered.update(data.get("unanswered", {}))
            t.accepted.update(data.get("accepted", {}))
            t.dropped.update(data.get("dropped", {}))
            t.mismatches.update(data.get("mismatches", {}))
            for name, msg, n in data.get("failures", []):
                t.failures[(name, msg)] += n
            if data.get("steady_since") and data.get("stopped_at"):
                t.steady_seconds = max(t.steady_seconds, data["stopped_at"] - data["steady_since"])
        return t

    def status_total(self, code: int) -> int:
        return sum(c[code] for c in self.statuses.values())

    def requests(self, name: str | None = None) -> int:
        if name is not None:
            return sum(self.statuses.get(name, Counter()).values()) + self.unanswered[name]
        return sum(sum(c.values()) for c in self.statuses.values()) + sum(self.unanswered.values())

    def failed(self, name: str | None = None) -> int:
        if name is not None:
            return self.mismatches[name] + self.unanswered[name]
        return sum(self.mismatches.values()) + sum(self.unanswered.values())

    def names(self) -> list[str]:
        return sorted(set(self.statuses) | set(self.unanswered))

    def steady(self, name: str | None = None) -> Counter[int]:
        if name is not None:
            return self.latency.get(name, Counter())
        total: Counter[int] = Counter()
        for h in self.latency.values():
            total.update(h)
        return total

    def steady_rps(self, name: str | None = None) -> float:
        n = sum(self.steady(name).values())
        return n / self.steady_seconds if self.steady_seconds > 0 else float("nan")


# --- checks --------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def evaluate(*, tally: Tally, metrics: Metrics, sink: Counter[str] | None, run_seconds: int,
             own_gateway: bool, gateway_exit: int | None) -> list[Check]:
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    requests, failed = tally.requests(), tally.failed()
    steady = tally.steady()
    p50, p99 = percentile(steady, 0.50), percentile(steady, 0.99)
    add("traffic was sent", requests > 0 and sum(steady.values()) > 0,
        f"{requests} requests, {sum(steady.values())} of them once every user had started, "
        f"tallies from {tally.files} Locust process(es)")
    fivexx_locust = sum(n for c in tally.statuses.values() for code, n in c.items() if code >= 500)
    fivexx_gateway = sum(n for code, n in metrics.responses.items() if code >= 500)
    add("no 5xx", fivexx_locust == 0 and fivexx_gateway == 0,
        f"Locust saw {fivexx_locust}, the gateway counted {fivexx_gateway}")
    unanswered = sum(tally.unanswered.values())
    add("every request answered", unanswered == 0, f"{unanswered} request(s) without an HTTP answer")
    ratio = failed / requests if requests else 1.0
    add(f"failure ratio <= {MAX_FAILURE_RATIO:.2%}", ratio <= MAX_FAILURE_RATIO,
        f"{failed} of {requests} answers not as expected ({ratio:.3%})")
    add(f"p99 <= {MAX_P99_MS:g} ms", p99 <= MAX_P99_MS, f"p99 {p99:g} ms (steady state)")
    add(f"p50 <= {MAX_P50_MS:g} ms", p50 <= MAX_P50_MS, f"p50 {p50:g} ms (steady state)")

    for reason in sorted(set(tally.dropped) | {r for r, n in metrics.dropped.items() if n}):
        want, got = tally.dropped[reason], metrics.dropped[reason]
        add(f"drops counted as {reason}", want == got, f"sent {want}, gateway counted {got}")
    want_acc, got_acc = sum(tally.accepted.values()), sum(metrics.accepted.values())
    add("accepted events counted", want_acc == got_acc, f"sent {want_acc} to be accepted, gateway counted {got_acc}")
    for code in (400, 429):
        want, got = tally.status_total(code), metrics.responses[code]
        add(f"{code} answers counted", want == got, f"Locust saw {want}, gateway counted {got}")

    if sink is not None:
        rows_total = sum(sink.values())
        add("sink rows == accepted", rows_total == got_acc,
            f"{rows_total} rows in the sink, {got_acc} accepted (" + ", ".join(
                f"{d}: {n} rows / {metrics.accepted[d]} accepted" for d, n in sorted(sink.items())) + ")")
    if own_gateway:
        flood = tally.statuses.get("flood: pageview", Counter())
        sent = sum(flood.values())
        if sent:
            # Token bucket: a full burst at the start, then the refill rate, for as long as the run lasts.
            allowed = FLOOD_BURST + FLOOD_EVENTS_PER_MINUTE * (run_seconds + STOP_TIMEOUT_S) / 60
            accepted = metrics.accepted[FLOOD_SITE]
            ok = accepted <= allowed and (flood[429] > 0 or sent <= allowed)
            add("rate limit enforced", ok,
                f"flood site accepted {accepted} of {sent} (limit allows at most {allowed:.0f}), {flood[429]} x 429")
        add("gateway stopped cleanly on SIGTERM", gateway_exit == 0, f"exit code {gateway_exit}")
    return checks


# --- running -------------------------------------------------------------------------------


def run_locust(args: argparse.Namespace, host: str, prefix: Path, tally_path: Path, log_path: Path,
               out_path: Path) -> int:
    cmd = [sys.executable, "-m", "locust", "--config", str(LOCUST_CONF), "-f", str(LOCUSTFILE),
           "--headless", "--only-summary", "--reset-stats", "-u", str(args.users), "-r", str(args.spawn_rate),
           "-t", f"{args.run_time}s", "--stop-timeout", str(STOP_TIMEOUT_S), "--host", host,
           "--csv", str(prefix), "--html", str(prefix.parent / "report.html"),
           "--tally-file", str(tally_path), "--site", SITE, "--flood-site", FLOOD_SITE,
           "--logfile", str(log_path)]
    if args.mix:
        cmd += ["--mix", args.mix]
    cmd += args.classes
    print(f"locust: {args.users} users, {args.spawn_rate:g}/s, {args.run_time} s against {host}"
          + (f", mix '{args.mix}'" if args.mix else "") + "".join(f" {c}" for c in args.classes)
          + f" (its own summary: {out_path.relative_to(ROOT)})", flush=True)
    with out_path.open("wb") as out:
        return subprocess.run(cmd, check=False, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode


def print_report(tally: Tally, metrics: Metrics, sink: Counter[str] | None) -> None:
    print(f"\nrequests by kind (latency and req/s over the {tally.steady_seconds:.0f} s after every user had started)")
    print(f"  {'name':<24} {'reqs':>7} {'fails':>6} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  statuses")

    def line(label: str, name: str | None, statuses: str) -> None:
        h = tally.steady(name)
        print(f"  {label:<24} {tally.requests(name):>7} {tally.failed(name):>6} {tally.steady_rps(name):>7.1f} "
              f"{percentile(h, 0.5):>6g} {percentile(h, 0.95):>6g} {percentile(h, 0.99):>6g}  {statuses}")

    for name in tally.names():
        codes = tally.statuses.get(name, Counter())
        line(name, name, " ".join(f"{c}:{n}" for c, n in sorted(codes.items())))
    line("all", None, "(ms)")
    print("\nexpected by the mix vs counted by the gateway")
    print(f"  {'accepted':<24} {sum(tally.accepted.values()):>7} {sum(metrics.accepted.values()):>7}"
          + (f"  rows in the sink: {sum(sink.values())}" if sink is not None else ""))
    for reason in sorted(set(tally.dropped) | set(metrics.dropped)):
        print(f"  {'dropped: ' + reason:<24} {tally.dropped[reason]:>7} {metrics.dropped[reason]:>7}")
    if tally.failures:
        print("\nmost frequent failures")
        for (name, msg), n in tally.failures.most_common(12):
            print(f"  {n:>6} x {name}: {msg[:200]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", "-u", type=int, default=USERS, help=f"concurrent Locust users (default {USERS})")
    ap.add_argument("--spawn-rate", "-r", type=float, default=SPAWN_RATE, help=f"users started per second (default {SPAWN_RATE})")
    ap.add_argument("--run-time", "-t", type=parse_seconds, default=parse_seconds(RUN_TIME),
                    help=f"how long the mix runs, e.g. 30s, 2m (default {RUN_TIME})")
    ap.add_argument("--workers", type=int, default=WORKERS, help=f"gateway worker processes (default {WORKERS})")
    ap.add_argument("--mix", default=os.environ.get("LOADTEST_MIX", ""),
                    help="class weights, overriding loadtests/locust.conf, e.g. 'BrowserUser=90 Flooder=0'")
    ap.add_argument("--host", help="run against this already running gateway (loopback only) instead of starting one")
    ap.add_argument("--break", dest="breakage", choices=["shields"], default=os.environ.get("LOADTEST_BREAK") or None,
                    help="start the gateway with every shield disabled in the site files: the run must fail")
    ap.add_argument("--keep", action="store_true", help="keep the gateway's temporary directory")
    ap.add_argument("classes", nargs="*", help="user classes to run (default: all, weighted by the mix)")
    args = ap.parse_args(argv)

    if args.host and not is_loopback_url(args.host):
        print(f"refusing to load {args.host}: only loopback addresses (127.0.0.0/8, ::1, localhost) are targets",
              file=sys.stderr)
        return 2
    if args.host and args.breakage:
        print("--break needs the gateway this runner starts; it cannot be combined with --host", file=sys.stderr)
        return 2

    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-broken" if args.breakage else "") + ("-host" if args.host else "")
    report_dir = REPORTS / stamp
    report_dir.mkdir(parents=True, exist_ok=True)
    prefix = report_dir / "locust"
    tally_path = report_dir / "tally.json"
    tmp = Path(tempfile.mkdtemp(prefix="gw-loadtest-"))
    gateway: Gateway | None = None
    sink: Counter[str] | None = None
    try:
        if args.host:
            host = args.host.rstrip("/")
            before = settled_metrics(host, min_wait=0)
        else:
            port = free_port()
            gateway = Gateway(write_gateway(tmp, port=port, workers=args.workers, broken=bool(args.breakage)),
                              port, args.workers, report_dir / "gateway.log")
            gateway.install_lists()
            gateway.start()
            host = gateway.url
            before = Metrics()
            print(f"gateway: {host}, {args.workers} worker(s), data in {gateway.data_dir}"
                  + (" — BROKEN: every shield disabled" if args.breakage else ""), flush=True)
        t0 = time.monotonic()
        locust_rc = run_locust(args, host, prefix, tally_path, report_dir / "locust.log",
                               report_dir / "locust.out")
        elapsed = time.monotonic() - t0
        metrics = settled_metrics(host, report_dir / "metrics.txt").minus(before)
        if gateway is not None:
            gateway.stop()
            sink = gateway.sink_counts()
    except (RuntimeError, OSError, sqlite3.Error) as exc:
        print(f"load test could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if gateway is not None:
            gateway.stop()
        if args.keep:
            print(f"gateway files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if not tally_path.exists():
        tail = "\n".join((report_dir / "locust.out").read_text(errors="replace").splitlines()[-20:])
        print(f"Locust wrote no tally (exit code {locust_rc}):\n{tail}", file=sys.stderr)
        return 2
    tally = Tally.read(tally_path)
    print_report(tally, metrics, sink)
    checks = evaluate(tally=tally, metrics=metrics, sink=sink, run_seconds=args.run_time,
                      own_gateway=gateway is not None, gateway_exit=gateway.exit_code if gateway else None)
    steady = tally.steady()
    p50, p95, p99 = (percentile(steady, q) for q in (0.5, 0.95, 0.99))
    print(f"\nchecks ({tally.requests()} requests in {elapsed:.0f} s; steady state {tally.steady_rps():.0f} req/s, "
          f"p50 {p50:g} ms, p95 {p95:g} ms, p99 {p99:g} ms)")
    for c in checks:
        print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    failed = [c for c in checks if not c.ok]
    summary = {"passed": not failed, "requests": tally.requests(), "failures": tally.failed(),
               "steady_rps": tally.steady_rps(), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "broken": args.breakage,
               "host": args.host, "checks": [c.__dict__ for c in checks]}
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nreports: {report_dir.relative_to(ROOT)}/ (report.html, locust.out, locust_*.csv, metrics.txt, "
          "tally.json, summary.json)")
    if failed:
        print(f"\nLOAD TEST FAILED: {len(failed)} check(s)")
        for c in failed:
            print(f"  - {c.name}: {c.detail}")
        if args.host:
            print("\nA gateway started by hand needs the sample lists and the rate-limited site for the whole mix\n"
                  "(docs/loadtesting.md), or a choice of classes: run.py --host URL BrowserUser BotUser Abuser")
        return 1
    print("\nload test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
