"""Start the real gateway as a subprocess on a loopback port, talk HTTP to it, read its sink."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from browser_headers import browser_headers, claims_a_browser

ROOT = Path(__file__).resolve().parent.parent
# libfaketime (Debian's faketime), for a gateway whose clock is set back or ahead.
FAKETIME_LIB = next(iter(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(base: Path, *, sites: dict[str, str] | None = None, workers: int = 1,
                 trusted_proxies: list[str] | None = None, extra: str = "",
                 flush_interval: float = 0.1, batch_size: int = 500) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "sites").mkdir(exist_ok=True)
    if sites is None:
        sites = {"site": 'domain = "site.test"\n'}
    for name, text in sites.items():
        (base / "sites" / f"{name}.toml").write_text(text)
    proxies = ["127.0.0.1/32", "::1/128"] if trusted_proxies is None else trusted_proxies
    cfg = base / "gateway.toml"
    cfg.write_text(
        f'data_dir = "data"\nsites_dir = "sites"\ntrusted_proxies = {json.dumps(proxies)}\n'
        f"{extra}\n"
        f'[server]\nhost = "127.0.0.1"\nport = 8000\nworkers = {workers}\n'
        f'[sink]\ntype = "sqlite"\nbatch_size = {batch_size}\nflush_interval = {flush_interval}\n'
    )
    return cfg


def faketime_env(offset_seconds: int) -> dict[str, str]:
    """The environment that runs a gateway (every process of it) `offset_seconds` from now."""
    assert FAKETIME_LIB is not None
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": f"{offset_seconds:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1", "TZ": "UTC"}


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels in a /metrics answer, or None."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


class Gateway:
    def __init__(self, config: Path, *, workers: int | None = None, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.config = config
        self.cwd = cwd
        self.base = config.parent
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / f"gateway-{self.port}.log"
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    def start(self, timeout: float = 20.0) -> "Gateway":
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config), "--port", str(self.port)]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # Every worker must be fully up (its first metrics snapshot is written once
                # startup is done): tests spread requests over them, and a stop signal that
                # arrives before Sanic's manager has every worker's start-up acknowledgement
                # leaves the manager waiting for it.
                if (self.client.get("/ready").status_code == 200
                        and len(list((self.data_dir / "metrics").glob("worker-*.json"))) >= (self.workers or 1)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def post(self, body: Any = None, *, content: bytes | str | None = None,
             headers: dict[str, str] | None = None, ip: str | None = None,
             ua: str | None = CHROME, browser: bool | None = None, new_connection: bool = False) -> httpx.Response:
        """POST /api/event. A User-Agent that claims a browser comes with what that browser sends
        (tests/browser_headers.py) unless `browser=False`: the test gateway is on a loopback
        address, which browsers treat as secure. `new_connection`: not over the kept-alive
        connection (which one worker holds), so that the kernel hands it to any worker."""
        h = {"content-type": "text/plain"}
        if ua is not None:
            if browser is None:
                browser = claims_a_browser(ua)
            if browser:
                first = body[0] if isinstance(body, list) and body else body
                page = first.get("u") if isinstance(first, dict) else None
                h.update(browser_headers(ua, page if isinstance(page, str) else "https://site.test/"))
            h["user-agent"] = ua
        if ip is not None:
            h["x-forwarded-for"] = ip
        h.update(headers or {})
        if content is None:
            content = json.dumps(body)
        if new_connection:
            return httpx.post(f"{self.url}/api/event", content=content, headers=h, timeout=10)
        return self.client.post("/api/event", content=content, headers=h)

    def worker_dropped(self, site: str, reason: str) -> dict[int, int]:
        """Events of `site` each worker (by pid) has dropped for `reason`, from the snapshots the
        workers publish every second (data/metrics/worker-<pid>.json)."""
        out: dict[int, int] = {}
        for path in (self.data_dir / "metrics").glob("worker-*.json"):
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            out[int(snap["pid"])] = sum(n for s, r, n in snap["dropped"] if s == site and r == reason)
        return out

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `edge-gateway <args> --config <this gateway's file>` for real."""
        cmd = [sys.executable, "-m", "gateway.cli", *args, "--config", str(self.config)]
        return subprocess.run(cmd, cwd=self.cwd, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env})

    def key(self, site: str, scope: str, label: str = "") -> str:
        """A new API key made by `edge-gateway keys create`: the secret, its output's last line."""
        done = self.cli("keys", "create", "--site", site, "--scope", scope, *(["--label", label] if label else []))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
        """A console API request with `Authorization: Bearer <key>` (none when key is None)."""
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return self.client.request(method, path, headers=headers, **kw)

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of the sink's console tables (drops, counts)."""
        if not self.sqlite_path.exists():
            return []
        conn = sqlite3.connect(self.sqlite_path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f'SELECT * FROM "{table}"')]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the gateway's /metrics, by name and labels."""
        return metric_value(self.client.get("/metrics").text, name, **labels)

    def rows(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not self.sqlite_path.exists():
            return []
        conn = sqlite3.connect(self.sqlite_path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"SELECT * FROM events WHERE {where} ORDER BY timestamp, rowid", params)]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_rows(self, n: int, where: str = "1", params: tuple[Any, ...] = (), timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.rows(where, params)
            if len(rows) >= n:
                return rows
            time.sleep(0.05)
        return rows

    def close(self) -> None:
        self.stop()
        self.client.close()
