"""Loading and validating the gateway TOML and the per-site TOML files.

Paths in the gateway file are relative to the file itself. Every problem is reported as a
`ConfigError` naming the file, the key and the reason; nothing here is read on the hot path.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from shields.model import RateLimit, SiteConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_GATEWAY_KEYS = {
    "data_dir", "sites_dir", "trusted_proxies", "server", "sink", "limits", "salts",
    "geo", "lists", "shared", "tracker", "spool", "log_level",
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1


@dataclass(frozen=True, slots=True)
class SinkConfig:
    type: str = "sqlite"
    batch_size: int = 5000  # rows per write; SQLite is much faster with large batches
    flush_interval: float = 1.0  # seconds an accepted event may wait in memory
    path: Path | None = None  # sqlite file; default <data_dir>/events.sqlite3
    url: str = ""  # clickhouse HTTP URL
    database: str = "default"
    options: dict[str, Any] = field(default_factory=dict)


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
class GatewayConfig:
    source: Path
    data_dir: Path
    sites_dir: Path
    trusted_proxies: tuple[Network, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    sections: dict[str, Any] = field(default_factory=dict)  # raw tables for optional features (geo, lists, ...)

    @property
    def sqlite_path(self) -> Path:
        return self.sink.path or self.data_dir / "events.sqlite3"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot be read: {exc.strerror}") from None


def _expect(src: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; a TOML `true` is never a valid port or count.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(src, key, f"must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(src, key, f"must be {what}, got {value!r}")
    return value


def _positive_int(src: str, key: str, value: Any, *, minimum: int = 1) -> int:
    _expect(src, key, value, int, "an integer")
    if value < minimum:
        raise ConfigError(src, key, f"must be at least {minimum}, got {value}")
    return int(value)


def _positive_number(src: str, key: str, value: Any) -> float:
    _expect(src, key, value, (int, float), "a number")
    if value <= 0:
        raise ConfigError(src, key, f"must be greater than 0, got {value}")
    return float(value)


def parse_network(src: str, key: str, value: Any) -> Network:
    _expect(src, key, value, str, "an address or CIDR string")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ConfigError(src, key, f"{value!r} is not an address or network") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None and net.prefixlen >= 96:
        # ::ffff:a.b.c.d/n written for a v4 proxy: clients are normalised to v4, so match v4.
        v4 = net.network_address.ipv4_mapped
        net = ipaddress.ip_network(f"{v4}/{net.prefixlen - 96}", strict=False)
    return net


def load_gateway_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the gateway TOML. Raises ConfigError."""
    cfg_path = Path(path).resolve()
    src = str(path)
    raw = _read_toml(cfg_path)
    base = cfg_path.parent
    unknown = sorted(set(raw) - _GATEWAY_KEYS)
    if unknown:
        raise ConfigError(src, unknown[0], f"unknown key (expected one of {', '.join(sorted(_GATEWAY_KEYS))})")

    def rel(key: str, default: str) -> Path:
        value = raw.get(key, default)
        _expect(src, key, value, str, "a path string")
        return (base / value).resolve()

    proxies_raw = raw.get("trusted_proxies", [])
    _expect(src, "trusted_proxies", proxies_raw, list, "a list of addresses or CIDRs")
    proxies = tuple(parse_network(src, f"trusted_proxies[{i}]", v) for i, v in enumerate(proxies_raw))

    server_raw = raw.get("server", {})
    _expect(src, "server", server_raw, dict, "a table")
    host = _expect(src, "server.host", server_raw.get("host", "127.0.0.1"), str, "a host string")
    port = _positive_int(src, "server.port", server_raw.get("port", 8000), minimum=0)
    if port > 65535:
        raise ConfigError(src, "server.port", f"must be at most 65535, got {port}")
    workers = _positive_int(src, "server.workers", server_raw.get("workers", 1))
    server = ServerConfig(host=host, port=port, workers=workers)

    sink_raw = raw.get("sink", {})
    _expect(src, "sink", sink_raw, dict, "a table")
    sink_type = sink_raw.get("type", "sqlite")
    if sink_type not in ("sqlite", "clickhouse"):
        raise ConfigError(src, "sink.type", f"must be 'sqlite' or 'clickhouse', got {sink_type!r}")
    sink_path = None
    if "path" in sink_raw:
        _expect(src, "sink.path", sink_raw["path"], str, "a path string")
        sink_path = (base / sink_raw["path"]).resolve()
    sink = SinkConfig(
        type=sink_type,
        batch_size=_positive_int(src, "sink.batch_size", sink_raw.get("batch_size", 5000)),
        flush_interval=_positive_number(src, "sink.flush_interval", sink_raw.get("flush_interval", 1.0)),
        path=sink_path,
        url=_expect(src, "sink.url", sink_raw.get("url", ""), str, "a URL string"),
        database=_expect(src, "sink.database", sink_raw.get("database", "default"), str, "a name"),
        options={k: v for k, v in sink_raw.items()
                 if k not in ("type", "batch_size", "flush_interval", "path", "url", "database")},
    )

    limits_raw = raw.get("limits", {})
    _expect(src, "limits", limits_raw, dict, "a table")
    limits = LimitsConfig(
        max_body_bytes=_positive_int(src, "limits.max_body_bytes", limits_raw.get("max_body_bytes", 64 * 1024)),
        max_batch_events=_positive_int(src, "limits.max_batch_events", limits_raw.get("max_batch_events", 100)),
    )
    spool_raw = raw.get("spool", {})
    _expect(src, "spool", spool_raw, dict, "a table")
    unknown = sorted(set(spool_raw) - {"fsync", "fsync_interval", "segment_bytes", "max_disk_bytes", "mode", "shipper"})
    if unknown:
        raise ConfigError(src, f"spool.{unknown[0]}", "unknown key")
    fsync = spool_raw.get("fsync", "interval")
    if fsync not in ("interval", "always", "never"):
        raise ConfigError(src, "spool.fsync", f"must be 'interval', 'always' or 'never', got {fsync!r}")
    mode = spool_raw.get("mode", "disk")
    if mode not in ("disk", "memory"):
        raise ConfigError(src, "spool.mode", f"must be 'disk' or 'memory', got {mode!r}")
    shipper = spool_raw.get("shipper", "process")
    if shipper not in ("process", "worker"):
        raise ConfigError(src, "spool.shipper", f"must be 'process' or 'worker', got {shipper!r}")
    spool = SpoolConfig(
        mode=mode,
        shipper=shipper,
        fsync=fsync,
        fsync_interval=_positive_number(src, "spool.fsync_interval", spool_raw.get("fsync_interval", 0.2)),
        segment_bytes=_positive_int(src, "spool.segment_bytes", spool_raw.get("segment_bytes", 4 * 1024 * 1024)),
        max_disk_bytes=_positive_int(src, "spool.max_disk_bytes", spool_raw.get("max_disk_bytes", 1024**3)),
    )
    sections = {k: raw[k] for k in ("geo", "lists", "shared", "tracker", "salts") if k in raw}
    for k, v in sections.items():
        _expect(src, k, v, dict, "a table")
    return GatewayConfig(
        source=cfg_path,
        data_dir=rel("data_dir", "data"),
        sites_dir=rel("sites_dir", "sites"),
        trusted_proxies=proxies,
        server=server,
        sink=sink,
        limits=limits,
        spool=spool,
        sections=sections,
    )


def normalise_domain(domain: str) -> str:
    """Site keys are compared lower-cased, without one leading 'www.' (as events are)."""
    d = domain.strip().lower().rstrip(".")
    return d[4:] if d.startswith("www.") else d


_SITE_KEYS = {"domain", "aliases", "shields", "rate_limit", "velocity"}


def parse_site(raw: dict[str, Any], src: str) -> SiteConfig:
    """Validate one site table. Shield rules are compiled by shields/ when it provides a parser."""
    unknown = sorted(set(raw) - _SITE_KEYS)
    if unknown:
        raise ConfigError(src, unknown[0], f"unknown key (expected one of {', '.join(sorted(_SITE_KEYS))})")
    if "domain" not in raw:
        raise ConfigError(src, "domain", "is required")
    domain = normalise_domain(_expect(src, "domain", raw["domain"], str, "a domain string"))
    if not domain or " " in domain or "/" in domain:
        raise ConfigError(src, "domain", f"{raw['domain']!r} is not a domain")
    aliases_raw = raw.get("aliases", [])
    _expect(src, "aliases", aliases_raw, list, "a list of domains")
    aliases = []
    for i, a in enumerate(aliases_raw):
        a = normalise_domain(_expect(src, f"aliases[{i}]", a, str, "a domain string"))
        if not a or " " in a or "/" in a:
            raise ConfigError(src, f"aliases[{i}]", f"{aliases_raw[i]!r} is not a domain")
        aliases.append(a)

    rl_raw = raw.get("rate_limit", {})
    _expect(src, "rate_limit", rl_raw, dict, "a table")
    epm = rl_raw.get("events_per_minute")
    burst = rl_raw.get("burst")
    rate_limit = RateLimit(
        events_per_minute=None if epm is None else _positive_int(src, "rate_limit.events_per_minute", epm),
        burst=None if burst is None else _positive_int(src, "rate_limit.burst", burst),
    )
    vel_raw = raw.get("velocity", {})
    _expect(src, "velocity", vel_raw, dict, "a table")
    max_events = vel_raw.get("max_events_per_visit")
    window = vel_raw.get("window_seconds", 1800)

    shields_raw = raw.get("shields", {})
    _expect(src, "shields", shields_raw, dict, "a table")
    site_shields = _parse_shields(shields_raw, src)
    return SiteConfig(
        domain=domain,
        aliases=tuple(aliases),
        source=src,
        shields=site_shields,
        rate_limit=rate_limit,
        max_events_per_visit=None if max_events is None else _positive_int(src, "velocity.max_events_per_visit", max_events),
        velocity_window_seconds=_positive_int(src, "velocity.window_seconds", window),
    )


def _parse_shields(table: dict[str, Any], src: str) -> Any:
    from shields.model import SiteShields

    try:
        from shields import rules  # type: ignore[attr-defined]
    except ImportError:  # rule compilation not available: accept an empty table only
        if table:
            raise ConfigError(src, "shields", "site shield rules are not supported by this build") from None
        return SiteShields()
    try:
        return rules.parse_site_shields(table, src)
    except rules.RuleError as exc:
        raise ConfigError(src, getattr(exc, "key", "shields"), getattr(exc, "reason", str(exc))) from None


@dataclass(frozen=True, slots=True)
class Sites:
    """Every site, keyed by its domain and each alias (lower-cased)."""

    by_domain: dict[str, SiteConfig]
    sites: tuple[SiteConfig, ...]
    fingerprint: tuple[tuple[str, int, int], ...] = ()

    def get(self, domain: str) -> SiteConfig | None:
        return self.by_domain.get(domain)


def sites_fingerprint(sites_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap identity of the sites folder: (name, mtime_ns, size) of each *.toml file."""
    out = []
    try:
        for p in sorted(sites_dir.glob("*.toml")):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((p.name, st.st_mtime_ns, st.st_size))
    except OSError:
        pass
    return tuple(out)


def load_sites(sites_dir: Path) -> Sites:
    """Read every `*.toml` in the sites folder. Raises ConfigError on the first bad file."""
    if not sites_dir.is_dir():
        raise ConfigError(str(sites_dir), "sites_dir", "is not a directory")
    fingerprint = sites_fingerprint(sites_dir)
    by_domain: dict[str, SiteConfig] = {}
    sites = []
    for p in sorted(sites_dir.glob("*.toml")):
        site = parse_site(_read_toml(p), str(p))
        for key in (site.domain, *site.aliases):
            if key in by_domain:
                raise ConfigError(str(p), "domain" if key == site.domain else "aliases",
                                  f"{key!r} is already declared by {by_domain[key].source}")
            by_domain[key] = site
        sites.append(site)
    return Sites(by_domain=by_domain, sites=tuple(sites), fingerprint=fingerprint)
