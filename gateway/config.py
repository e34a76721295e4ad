"""The gateway file: read once, validated, and turned into typed sections.

Paths in the file are relative to the file itself. Every table is read key by key; a key the
gateway does not use is an error, not silently accepted. Every problem is reported as a
`ConfigError` naming the file, the key and the reason. Nothing here runs on the hot path: the
rest of the gateway reads the typed sections (`GatewayConfig.server`, `.sink`, `.geo`...), never
the raw tables. The site files are read by `gateway.ingest.sites`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from redis.connection import parse_url as parse_redis_url

from geo import GeoConfigError, GeoSettings
from gateway.errors import ConfigError
from shields.intervals import IntervalSet, parse_network
from shields.lists import DATACENTER_IPS, LIST_KINDS, REFERRER_SPAM, THREAT_IPS

__all__ = [
    "DEFAULT_LIST_SOURCES",
    "IDENTIFIER",
    "LOOPBACK_HOSTS",
    "GatewayConfig",
    "LimitsConfig",
    "ListSettings",
    "RetentionConfig",
    "ServerApiConfig",
    "ServerConfig",
    "SharedConfig",
    "SinkConfig",
    "SpoolConfig",
    "TrackerConfig",
    "Table",
    "load_gateway_config",
    "parse_lists",
    "parse_shared",
    "parse_sink",
    "read_toml",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
LOG_LEVELS = ("debug", "info", "warning", "error")

_RAW = "https://raw.githubusercontent.com"
DEFAULT_LIST_SOURCES: dict[str, tuple[str, ...]] = {
    REFERRER_SPAM: (f"{_RAW}/matomo-org/referrer-spam-list/HEAD/spammers.txt",),
    DATACENTER_IPS: (
        f"{_RAW}/X4BNet/lists_vpn/HEAD/output/datacenter/ipv4.txt",
        f"{_RAW}/X4BNet/lists_vpn/HEAD/output/datacenter/ipv6.txt",
        # The clouds' own published ranges catch new blocks before aggregate lists do.
        "https://ip-ranges.amazonaws.com/ip-ranges.json",
        "https://www.gstatic.com/ipranges/cloud.json",
    ),
    THREAT_IPS: (f"{_RAW}/stamparm/ipsum/HEAD/levels/3.txt",),
}
DEFAULT_REFRESH_SECONDS = 24 * 3600
DEFAULT_MAX_AGE_SECONDS = 7 * 24 * 3600


# --- the typed sections ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """`[sink]`: the embedded SQLite file, or a ClickHouse server (the keys after `path`)."""

    type: str = "sqlite"
    batch_size: int = 5000  # rows per write; SQLite is much faster with large batches
    flush_interval: float = 1.0  # seconds an accepted event may wait in memory
    path: Path | None = None  # sqlite file; default <data_dir>/events.sqlite3
    url: str = ""  # clickhouse HTTP URL
    database: str = "default"
    table: str = "events"
    user: str | None = None
    password: str | None = None  # from `password`, or from the variable `password_env` names
    timeout: float = 30.0
    sessions_view: str = "sessions"
    create_schema: bool = True


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 64 * 1024
    max_batch_events: int = 100


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    fsync: str = "interval"  # "interval": group fsync every fsync_interval; "always": per request
    fsync_interval: float = 0.2
    segment_bytes: int = 4 * 1024 * 1024
    max_disk_bytes: int = 1024 * 1024 * 1024  # past it the gateway answers 503
    mode: str = "disk"  # "memory": no durability, for measuring its cost (docs/configuration.md)
    shipper: str = "process"  # "process": one shipper process; "worker": a thread in each worker


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """`[retention]`: how long drop records and per-minute counts are kept, and how many drop
    records a worker writes per site and minute (past it, drops are only counted)."""

    drops_days: int = 7
    counts_days: int = 400
    drop_records_per_minute: int = 60


@dataclass(frozen=True, slots=True)
class ServerApiConfig:
    """`[server_api]`: the server-side events API (`POST /api/v1/events`, docs/server-api.md)."""

    max_age_seconds: float = 7 * 86400.0  # `max_age`: how far back an event's timestamp may be
    max_events: int = 1000  # events in one batch
    max_body_bytes: int = 4 * 1024 * 1024  # the body, after gzip is undone
    max_inflation_ratio: int = 50  # a gzip body inflating more than this is refused (413)
    events_per_minute: int = 1000  # each key's token bucket, unless the site file says otherwise
    burst: int | None = None  # None: one minute's worth (or max_events, if larger)


@dataclass(frozen=True, slots=True)
class SharedConfig:
    """`[shared]`: salts and rate limits in Redis, for many gateway nodes."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "gw:"
    salt_refresh_seconds: float = 60.0
    timeout: float = 0.5
    password: str | None = None  # from the variable `password_env` names


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    alias_path: str | None = None  # a second path serving the script
    script_path: Path | None = None  # None: the script shipped in the package


@dataclass(frozen=True, slots=True)
class ListSettings:
    """`[lists]`: where each shield list comes from and how often it is fetched again. The
    background refresh runs only when the gateway file has a `[lists]` table (`background`)."""

    sources: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_LIST_SOURCES))
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    background: bool = False


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    source: Path
    data_dir: Path
    sites_dir: Path
    trusted_proxies: IntervalSet = field(default_factory=IntervalSet)
    log_level: str = "info"
    server: ServerConfig = field(default_factory=ServerConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    geo: GeoSettings = field(default_factory=GeoSettings)
    lists: ListSettings = field(default_factory=ListSettings)
    shared: SharedConfig | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    server_api: ServerApiConfig = field(default_factory=ServerApiConfig)

    @property
    def sqlite_path(self) -> Path:
        return self.sink.path or self.data_dir / "events.sqlite3"

    @property
    def retention_days(self) -> dict[str, int]:
        """Days each console table (gateway.schema.TABLES) is kept."""
        return {"drops": self.retention.drops_days, "counts": self.retention.counts_days}

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def logging_level(self) -> int:
        """The level to log at: `GATEWAY_LOG_LEVEL` from the environment, else `log_level`."""
        name = os.environ.get("GATEWAY_LOG_LEVEL") or self.log_level
        level = logging.getLevelName(name.upper())
        return level if isinstance(level, int) else logging.INFO


# --- reading tables ----------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot be read: {exc.strerror}") from None


_MISSING: Any = object()


class Table:
    """One TOML table being read. Each key is taken once, with its type checked; `done()`
    refuses whatever was not taken, naming the first unknown key and the keys that exist."""

    def __init__(self, raw: Any, source: str, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(raw, Mapping):
            raise ConfigError(source, prefix.rstrip(".") or "(file)", f"must be a table, got {raw!r}")
        self.raw = raw
        self._known: list[str] = []

    def key(self, name: str) -> str:
        return self.prefix + name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), reason)

    def has(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The raw value (of any type), or `default`; marks the key as known."""
        self._known.append(name)
        value = self.raw.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self.error(name, "is required")
            return default
        return value

    def typed(self, name: str, kind: type | tuple[type, ...], what: str, default: Any = _MISSING) -> Any:
        value = self.get(name, default)
        if value is default and default is not _MISSING:
            return value
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` is never a valid port or count.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.error(name, f"must be {what}, got {value!r}")
        return value

    def text(self, name: str, default: Any = _MISSING, what: str = "a string") -> Any:
        return self.typed(name, str, what, default)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, default)
        if value not in choices:
            spelled = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
            raise self.error(name, f"must be {spelled}, got {value!r}")
        return str(value)

    def integer(self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        value = self.typed(name, int, "an integer", default)
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return int(value)

    def positive(self, name: str, default: float) -> float:
        value = self.typed(name, (int, float), "a number", default)
        if value <= 0:
            raise self.error(name, f"must be greater than 0, got {value}")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        return bool(self.typed(name, bool, "true or false", default))

    def path(self, name: str, base: Path, default: str | None = None) -> Path | None:
        value = self.text(name, default, "a path string")
        return None if value is None else (base / value).resolve()

    def table(self, name: str) -> Table:
        return Table(self.get(name, {}), self.source, self.key(name) + ".")

    def done(self) -> None:
        unknown = [k for k in self.raw if k not in self._known]
        if unknown:
            expected = ", ".join(sorted(set(self._known)))
            raise self.error(unknown[0], f"unknown key (expected one of {expected})")


def _secret_from_env(table: Table, name: str) -> str | None:
    """The value of the environment variable named by key `name`, when the key is given."""
    var = table.text(name, None, "the name of an environment variable")
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise table.error(name, f"environment variable {var!r} is not set")
    return value


# --- sections ----------------------------------------------------------------------------------


def _server(t: Table) -> ServerConfig:
    server = ServerConfig(host=t.text("host", "127.0.0.1", "a host string"),
                          port=t.integer("port", 8000, minimum=0, maximum=65535),
                          workers=t.integer("workers", 1))
    t.done()
    return server


#: A ClickHouse database, table or view name the gateway accepts (it is put into SQL).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_sink(raw: Mapping[str, Any], source: str, base: Path) -> SinkConfig:
    """Validate `[sink]`. A ClickHouse sink takes `url`, `database`, `table`, `user`, `password`
    or `password_env` (the name of an environment variable holding it, to keep secrets out of
    the file), `timeout` (seconds), `sessions_view` and `create_schema`."""
    t = Table(raw, source, "sink.")
    kind = t.choice("type", ("sqlite", "clickhouse"), "sqlite")
    common = {"batch_size": t.integer("batch_size", 5000), "flush_interval": t.positive("flush_interval", 1.0)}
    if kind == "sqlite":
        sink = SinkConfig(type=kind, path=t.path("path", base), **common)  # type: ignore[arg-type]
        t.done()
        return sink
    url = t.text("url", "", "a URL string")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise t.error("url", f"must be the HTTP interface URL, like http://127.0.0.1:8123/, got {url!r}")
    names = {}
    for key, default in (("database", "default"), ("table", "events"), ("sessions_view", "sessions")):
        value = t.text(key, default, "a name")
        if not IDENTIFIER.match(value):
            raise t.error(key, f"{value!r} must be letters, digits and _ (not starting with a digit)")
        names[key] = value
    password = t.text("password", None)
    from_env = _secret_from_env(t, "password_env")
    if from_env is not None:
        if password is not None:
            raise t.error("password_env", "give either password or password_env, not both")
        password = from_env
    sink = SinkConfig(type=kind, url=url, user=t.text("user", None), password=password,
                      timeout=t.positive("timeout", 30.0), create_schema=t.flag("create_schema", True),
                      **names, **common)  # type: ignore[arg-type]
    t.done()
    return sink


def _limits(t: Table) -> LimitsConfig:
    limits = LimitsConfig(max_body_bytes=t.integer("max_body_bytes", 64 * 1024),
                          max_batch_events=t.integer("max_batch_events", 100))
    t.done()
    return limits


def _retention(t: Table) -> RetentionConfig:
    retention = RetentionConfig(drops_days=t.integer("drops_days", 7, maximum=3660),
                                counts_days=t.integer("counts_days", 400, maximum=36600),
                                drop_records_per_minute=t.integer("drop_records_per_minute", 60, minimum=0,
                                                                  maximum=100_000))
    t.done()
    return retention


_MAX_AGE_RANGE = (60.0, 3660 * 86400.0)


def _server_api(t: Table) -> ServerApiConfig:
    if t.has("max_age_days"):
        raise t.error("max_age_days", 'is now max_age, a duration such as "7d" or "36h"')
    # A duration as in [lists]: "7d", "36h", "90m", or seconds. Under a minute is refused, so a
    # bare `max_age = 7` meant as days fails loudly instead of refusing every event.
    max_age = _duration(t, "max_age", 7 * 86400.0)
    if not _MAX_AGE_RANGE[0] <= max_age <= _MAX_AGE_RANGE[1]:
        raise t.error("max_age", 'must be from 1 minute to 3660 days ("7d", "36h", "90m", or seconds), '
                                 f"got {t.get('max_age')!r}")
    burst = t.get("burst", None)
    api = ServerApiConfig(
        max_age_seconds=max_age,
        max_events=t.integer("max_events", 1000, maximum=10_000),
        max_body_bytes=t.integer("max_body_bytes", 4 * 1024 * 1024, minimum=1024, maximum=256 * 1024 * 1024),
        max_inflation_ratio=t.integer("max_inflation_ratio", 50, minimum=2, maximum=10_000),
        events_per_minute=t.integer("events_per_minute", 1000, maximum=100_000_000),
        burst=None if burst is None else t.integer("burst", 1000, maximum=100_000_000),
    )
    t.done()
    return api


def _spool(t: Table) -> SpoolConfig:
    spool = SpoolConfig(
        fsync=t.choice("fsync", ("interval", "always", "never"), "interval"),
        fsync_interval=t.positive("fsync_interval", 0.2),
        segment_bytes=t.integer("segment_bytes", 4 * 1024 * 1024),
        max_disk_bytes=t.integer("max_disk_bytes", 1024**3),
        mode=t.choice("mode", ("disk", "memory"), "disk"),
        shipper=t.choice("shipper", ("process", "worker"), "process"),
    )
    t.done()
    return spool


def parse_shared(raw: Mapping[str, Any], source: str) -> SharedConfig | None:
    """Validate `[shared]`; None when the table is absent or empty, meaning "single machine: keep
    salts and limits in the data dir". Keys:

    - `type`: "redis" (required when the table is present)
    - `url`: "redis://127.0.0.1:6379/0" (default), `rediss://` for TLS, `unix:///path?db=0`
    - `key_prefix`: "gw:" (default): lets several gateways share one Redis
    - `salt_refresh_seconds`: 60 (default): how stale a node's copy of the salts may be
    - `timeout`: 0.5 (default): seconds per Redis command before it counts as down
    - `password_env`: name of an environment variable holding the password (keeps it out of files)
    """
    if not raw:
        return None
    t = Table(raw, source, "shared.")
    kind = t.get("type", None)
    if kind != "redis":
        raise t.error("type", f"must be 'redis', got {kind!r}")
    url = t.typed("url", str, "a URL string", "redis://127.0.0.1:6379/0")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("redis", "rediss", "unix") or (parsed.scheme != "unix" and not parsed.hostname):
        raise t.error("url", f"must look like redis://127.0.0.1:6379/0, got {url!r}")
    try:
        parse_redis_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise t.error("url", f"{url!r}: {exc}") from None
    prefix = t.get("key_prefix", "gw:")
    if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
        raise t.error("key_prefix", f"must be a non-empty string without spaces, got {prefix!r}")

    def seconds(name: str, default: float, maximum: float) -> float:
        value = t.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= maximum:
            raise t.error(name, f"must be a number of seconds in (0, {maximum:g}], got {value!r}")
        return float(value)

    shared = SharedConfig(url=url, key_prefix=prefix, salt_refresh_seconds=seconds("salt_refresh_seconds", 60.0, 3600.0),
                          timeout=seconds("timeout", 0.5, 60.0), password=_secret_from_env(t, "password_env"))
    t.done()
    return shared


def _tracker(t: Table, base: Path) -> TrackerConfig:
    alias = t.text("alias_path", None)
    if alias is not None and (not alias.startswith("/") or alias == "/js/script.js"):
        raise t.error("alias_path", f"must be a path starting with / other than /js/script.js, got {alias!r}")
    tracker = TrackerConfig(alias_path=alias, script_path=t.path("script_path", base))
    t.done()
    return tracker


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(t: Table, name: str, default: float) -> float:
    value = t.get(name, default)
    if isinstance(value, bool):
        raise t.error(name, "must be seconds or a duration such as '12h'")
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:] in _UNITS:
        return float(int(value[:-1]) * _UNITS[value[-1]])
    raise t.error(name, f"{value!r} is not a duration (seconds, or a number with s, m, h or d)")


def _list_source(item: str, base: Path | None) -> str:
    parsed = urllib.parse.urlsplit(item)
    if parsed.scheme in ("https", "http"):
        if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"{item!r}: only https:// URLs (plain http only on loopback)")
        if not parsed.hostname:
            raise ValueError(f"{item!r} has no host")
        return item
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"{item!r}: unsupported scheme {parsed.scheme!r} (https URL or local path)")
    path = Path(item)
    if base is not None and not path.is_absolute():
        path = base / path
    return str(path)


def parse_lists(raw: Mapping[str, Any] | None, source: str, base: Path | None = None) -> ListSettings:
    """Validate the `[lists]` table (None when the file has none).

    ```toml
    [lists]
    refresh_interval = "24h"   # or seconds; 0 disables the background refresh
    max_age = "7d"             # older lists are reported stale
    [lists.referrer_spam]
    sources = ["https://...", "/etc/edge-gateway/extra-spam.txt"]
    ```
    A kind without a table keeps its default sources. Relative paths are relative to `base`.
    """
    if raw is None:
        return ListSettings()
    t = Table(raw, source, "lists.")
    refresh = _duration(t, "refresh_interval", DEFAULT_REFRESH_SECONDS)
    max_age = _duration(t, "max_age", DEFAULT_MAX_AGE_SECONDS)
    sources = dict(DEFAULT_LIST_SOURCES)
    for kind in LIST_KINDS:
        if not t.has(kind):
            t.get(kind, None)
            continue
        kt = t.table(kind)
        items = kt.get("sources", list(DEFAULT_LIST_SOURCES[kind]))
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise kt.error("sources", "must be a list of URLs or paths")
        checked = []
        for i, item in enumerate(items):
            try:
                checked.append(_list_source(item, base))
            except ValueError as exc:
                raise kt.error(f"sources[{i}]", str(exc)) from None
        sources[kind] = tuple(checked)
        kt.done()
    t.done()
    return ListSettings(sources=sources, refresh_seconds=refresh, max_age_seconds=max_age, background=refresh > 0)


def _trusted_proxies(t: Table) -> IntervalSet:
    raw = t.typed("trusted_proxies", list, "a list of addresses or CIDRs", [])
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for i, value in enumerate(raw):
        key = f"trusted_proxies[{i}]"
        if not isinstance(value, str):
            raise t.error(key, f"must be an address or CIDR string, got {value!r}")
        try:
            ipaddress.ip_network(value.strip(), strict=False)  # a proxy is an address or a network
            version, interval = parse_network(value, mapped_as_v4=True)  # peers are compared unmapped
        except ValueError:
            raise t.error(key, f"{value!r} is not an address or network") from None
        (v4 if version == 4 else v6).append(interval)
    return IntervalSet(v4, v6)


def load_gateway_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the gateway TOML. Raises ConfigError."""
    cfg_path = Path(path).resolve()
    src = str(path)
    t = Table(read_toml(cfg_path), src)
    base = cfg_path.parent
    data_dir = t.path("data_dir", base, "data")
    sites_dir = t.path("sites_dir", base, "sites")
    assert data_dir is not None and sites_dir is not None
    geo_raw = t.get("geo", None)
    try:
        geo = GeoSettings.from_table(geo_raw, base_dir=base)
    except GeoConfigError as exc:
        raise ConfigError(src, exc.key, exc.reason) from None
    if not (isinstance(geo_raw, Mapping) and "cache_size" in geo_raw):
        # The gateway remembers each client with its geo answer (gateway/ingest/clients.py): a
        # lookup reaches the reader for an address not seen before, which the reader's own
        # cache would miss too. Off unless the operator asks for it.
        geo = replace(geo, cache_size=0)
    lists_raw = t.get("lists", None)
    if lists_raw is not None and not isinstance(lists_raw, Mapping):
        raise t.error("lists", f"must be a table, got {lists_raw!r}")
    shared_raw = t.get("shared", {})
    if not isinstance(shared_raw, Mapping):
        raise t.error("shared", f"must be a table, got {shared_raw!r}")
    config = GatewayConfig(
        source=cfg_path,
        data_dir=data_dir,
        sites_dir=sites_dir,
        trusted_proxies=_trusted_proxies(t),
        log_level=t.choice("log_level", LOG_LEVELS, "info"),
        server=_server(t.table("server")),
        sink=parse_sink(t.get("sink", {}), src, base),
        limits=_limits(t.table("limits")),
        spool=_spool(t.table("spool")),
        geo=geo,
        lists=parse_lists(lists_raw, src, base),
        shared=parse_shared(shared_raw, src),
        tracker=_tracker(t.table("tracker"), base),
        retention=_retention(t.table("retention")),
        server_api=_server_api(t.table("server_api")),
    )
    t.done()
    return config
