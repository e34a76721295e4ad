"""The site files: one TOML file per site in the sites folder, which site owners edit.

```toml
domain = "example.com"          # required; compared lower-cased, one leading "www." removed
aliases = ["example.org"]       # other domains counted as this site
[rate_limit]                    # events_per_minute, burst
[velocity]                      # max_events_per_visit, window_seconds
[shields]                       # the site owner's rules: shields/rules.py
```

`load_sites` reads the folder; a bad file is a `ConfigError` naming the file, the key and the
reason (the running gateway then keeps the last good set). The names `disabled` and
`report_only` accept are the steps' (`gateway.ingest.steps.SWITCHABLE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Table, read_toml
from gateway.errors import ConfigError
from gateway.ingest.steps import EVIDENCE, SWITCHABLE, UNKNOWN
from shields.errors import RuleError
from shields.hosts import strip_www
from shields.model import RateLimit, SiteConfig
from shields.rules import parse_site_shields

__all__ = ["Sites", "load_sites", "normalise_domain", "parse_site", "sites_fingerprint"]


def normalise_domain(domain: str) -> str:
    """Site keys are compared lower-cased, without one leading 'www.' (as events are)."""
    return strip_www(domain.strip().lower().rstrip("."))


def _domain(t: Table, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise t.error(key, f"must be a domain string, got {value!r}")
    domain = normalise_domain(value)
    if not domain or any(c in domain for c in " /()") or domain == UNKNOWN.domain:
        raise t.error(key, f"{value!r} is not a domain")
    return domain


def parse_site(raw: Mapping[str, Any], src: str) -> SiteConfig:
    """Validate one site table."""
    t = Table(raw, src)
    domain = _domain(t, "domain", t.get("domain"))
    aliases_raw = t.typed("aliases", list, "a list of domains", [])
    aliases = tuple(_domain(t, f"aliases[{i}]", a) for i, a in enumerate(aliases_raw))

    rl = t.table("rate_limit")
    epm = rl.get("events_per_minute", None)
    burst = rl.get("burst", None)
    rate_limit = RateLimit(
        events_per_minute=None if epm is None else rl.integer("events_per_minute", 0),
        burst=None if burst is None else rl.integer("burst", 0),
    )
    rl.done()
    vel = t.table("velocity")
    max_events = vel.get("max_events_per_visit", None)
    cap = None if max_events is None else vel.integer("max_events_per_visit", 0)
    window = vel.integer("window_seconds", 1800)
    vel.done()

    api = t.table("server_api")
    api_epm = api.get("events_per_minute", None)
    api_burst = api.get("burst", None)
    server_api_rate = RateLimit(
        events_per_minute=None if api_epm is None else api.integer("events_per_minute", 1000, maximum=100_000_000),
        burst=None if api_burst is None else api.integer("burst", 1000, maximum=100_000_000),
    )
    api.done()

    shields_raw = t.typed("shields", dict, "a table", {})
    try:
        site_shields = parse_site_shields(shields_raw, src, switchable=SWITCHABLE, evidence=EVIDENCE)
    except RuleError as exc:
        raise ConfigError(src, exc.key, exc.reason) from None
    t.done()
    return SiteConfig(domain=domain, aliases=aliases, source=src, shields=site_shields, rate_limit=rate_limit,
                      max_events_per_visit=cap, velocity_window_seconds=window, server_api_rate=server_api_rate)


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
        site = parse_site(read_toml(p), str(p))
        for key in (site.domain, *site.aliases):
            if key in by_domain:
                raise ConfigError(str(p), "domain" if key == site.domain else "aliases",
                                  f"{key!r} is already declared by {by_domain[key].source}")
            by_domain[key] = site
        sites.append(site)
    return Sites(by_domain=by_domain, sites=tuple(sites), fingerprint=fingerprint)
