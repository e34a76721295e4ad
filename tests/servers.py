"""Real ClickHouse and Redis servers for tests, started from Debian's packages on loopback.

Each server gets a free 127.0.0.1 port and its own config and data under a temporary
directory, runs as a child process in the foreground (so it dies with the test run and never
touches a system-wide instance) and is stopped by its process id. When the Debian package is
not installed the fixtures skip with a message naming it, and fail instead under `make test`
or CI (tests/prerequisites.py), so a machine that lost a package cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from prerequisites import unavailable

CLICKHOUSE_PACKAGE = "clickhouse-server"
REDIS_PACKAGE = "redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(package: str, what: str) -> None:
    """Skip (or fail under `make test` or CI) because a Debian package is not installed."""
    unavailable(f"{what} not found: install Debian's {package} (apt-get install -y {package})")


def clickhouse_command() -> list[str] | None:
    """The command that runs a ClickHouse server: Debian's `clickhouse-server`, or the single
    `clickhouse` binary of upstream packages (`clickhouse server`)."""
    for path in (shutil.which("clickhouse-server"), "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"):
        if path and os.access(path, os.X_OK):
            return [path]
    single = shutil.which("clickhouse")
    return [single, "server"] if single else None


def redis_command() -> str | None:
    for path in (shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if path and os.access(path, os.X_OK):
            return path
    return None


class _Proc:
    name = "server"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _spawn(self, argv: list[str]) -> None:
        self.log = (self.base / "stdout.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.base,
                                     start_new_session=True)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout}s: {self.tail()}")

    def tail(self) -> str:
        texts = []
        for p in sorted(self.base.glob("*.log")):
            try:
                texts.append(p.read_text(errors="replace")[-2000:])
            except OSError:
                pass
        return "\n".join(texts)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), by its own process id only."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{base}/server.log</log>
    <errorlog>{base}/server.err.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{base}/data/</path>
  <tmp_path>{base}/tmp/</tmp_path>
  <user_files_path>{base}/user_files/</user_files_path>
  <format_schema_path>{base}/format_schemas/</format_schema_path>
  <users_config>{base}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>{timezone}</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <keep_alive_timeout>{keep_alive}</keep_alive_timeout>
</yandex>
"""

_CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
    <gateway>
      <password>{password}</password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </gateway>
  </users>
  <quotas>
    <default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
      <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default>
  </quotas>
</yandex>
"""


class ClickHouseServer(_Proc):
    """A ClickHouse server on 127.0.0.1 with users `default` (no password) and `gateway`.

    `timezone` is the server's own zone (UTC unless a test passes another, to show that stored
    times and days do not depend on it). Restarting keeps the data and the port.
    """

    name = "clickhouse-server"
    password = "gw-test-pass"

    def __init__(self, base: Path, *, timezone: str = "UTC", keep_alive: int = 3) -> None:
        super().__init__(base)
        cmd = clickhouse_command()
        if cmd is None:
            raise FileNotFoundError(CLICKHOUSE_PACKAGE)
        self.command = cmd
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.port = self.http_port
        (base / "config.xml").write_text(_CH_CONFIG.format(
            base=base, http_port=self.http_port, tcp_port=self.tcp_port, timezone=timezone,
            keep_alive=keep_alive))
        (base / "users.xml").write_text(_CH_USERS.format(password=self.password))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self, timeout: float = 30.0) -> ClickHouseServer:
        self._spawn([*self.command, f"--config-file={self.base / 'config.xml'}"])
        self._wait_ready(timeout)
        return self

    def _ready(self) -> bool:
        try:
            return self.query("SELECT 1").strip() == b"1"
        except (OSError, urllib.error.URLError):
            return False

    def query(self, sql: str) -> bytes:
        """Run SQL as `default` over HTTP (for test set-up and checks, not the code under test)."""
        req = urllib.request.Request(self.url, data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{exc}: {exc.read().decode(errors='replace')[:1000]}") from None


class RedisServer(_Proc):
    """A redis-server on 127.0.0.1 without persistence. Restarting keeps the port (data is lost)."""

    name = "redis-server"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        cmd = redis_command()
        if cmd is None:
            raise FileNotFoundError(REDIS_PACKAGE)
        self.command = cmd
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        self._spawn([self.command, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.base), "--logfile", str(self.base / "redis.log"),
                     "--protected-mode", "yes"])
        self._wait_ready(timeout)
        return self

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _server_dir(prefix: str) -> Path:
    # Short paths: redis and clickhouse put sockets/paths in messages; a test tmp_path is long.
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="module")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    """One ClickHouse server per test module (starting one takes about a second)."""
    if clickhouse_command() is None:
        missing(CLICKHOUSE_PACKAGE, "ClickHouse server")
    base = _server_dir("gw-ch-")
    server = ClickHouseServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if redis_command() is None:
        missing(REDIS_PACKAGE, "Redis server")
    base = _server_dir("gw-redis-")
    server = RedisServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
