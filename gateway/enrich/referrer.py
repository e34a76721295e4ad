"""Referrer, referrer source and UTM medium of an event, as Plausible derives them.

From the raw `referrer` the client sent and the query-string fields already on the `Event`:

* a referrer is *valid* when its scheme is http, https or android-app, it has a host, the host is
  not `localhost`, and it is not the page's own host (`www.` ignored): a self-referral is not a
  source. An invalid referrer is stored as `""`.
* the stored `referrer` is `[android-app://]host/path`: the host lower-cased without a leading `www.`,
  the path as sent without trailing slashes, no scheme, port, query or fragment.
* `referrer_source` is the tagged source (`utm_source`, else `source`, else `ref`; an empty value
  counts) when there is one, otherwise the known name of the referrer (`KnownSources`), otherwise
  its registrable domain (`news.example.co.uk` → `example.co.uk`) or, for an Android app, its
  `android-app://id`. Any result that spells a known source (`facebook`, `ig`, `GOOGLE`) is replaced
  by its canonical name (`Facebook`, `Instagram`, `Google`).
* `utm_medium` is the tagged medium, or `(gclid)` for a Google click id / `(msclkid)` for a Bing one
  when no medium was tagged.

The known-source table is data (`gateway/enrich/data/referrer_sources.json`), loaded once; the source of a
referrer host is memoised in a bounded LRU cache.
"""

from __future__ import annotations

import json
import re
import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final, NamedTuple

from gateway.enrich.domains import ICANN, registrable_domain
from gateway.errors import ConfigError
from shields.hosts import split_url, strip_www
from shields.model import Event

__all__ = [
    "KnownSources",
    "ParsedReferrer",
    "ReferrerClassifier",
    "ReferrerInfo",
    "infer_medium",
    "parse_referrer",
]

_VALID_SCHEMES: Final = frozenset({"http", "https", "android-app"})
ANDROID_APP: Final = "android-app"
_IPV4 = re.compile(r"[0-9.]+\Z")
_MAX_CACHED_HOST: Final = 253  # the longest DNS name; longer "hosts" are looked up uncached

_CLICK_ID_MEDIUM: Final[dict[tuple[str, str], str]] = {
    ("Google", "gclid"): "(gclid)",
    ("Bing", "msclkid"): "(msclkid)",
}


# These two are NamedTuples rather than frozen dataclasses because one of each is built for every
# stored event, and a tuple is several times cheaper to construct.
class ReferrerInfo(NamedTuple):
    """The three derived columns. `""` means none."""

    referrer: str = ""
    referrer_source: str = ""
    utm_medium: str = ""


class ParsedReferrer(NamedTuple):
    """A valid, external referrer."""

    scheme: str  # "http", "https" or "android-app"
    host: str  # lower-case, one leading "www." removed; the app id for android-app
    stored: str  # the value of the `referrer` column

    @property
    def is_app(self) -> bool:
        return self.scheme == ANDROID_APP


def parse_referrer(raw: str | None, hostname: str) -> ParsedReferrer | None:
    """The referrer if it is valid and not the page's own host (`hostname`, as on `Event`), else None."""
    if not raw:
        return None
    scheme, authority, path = split_url(raw)
    if scheme not in _VALID_SCHEMES or not authority:
        return None
    if "@" in authority:
        authority = authority.rpartition("@")[2]
    if authority.startswith("["):  # IPv6 literal: keep what is inside the brackets, as URI.parse does
        host = authority[1:].partition("]")[0]
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
        if port and not (port.isascii() and port.isdigit()):  # not a port: leave the "host" as it came
            host = authority
    else:
        host = authority
    host = strip_www(host.strip().rstrip(".").lower())
    if not host or host == "localhost" or host == hostname or host == strip_www(hostname.lower()):
        return None
    path = path.rstrip("/")
    prefix = "android-app://" if scheme == ANDROID_APP else ""
    return ParsedReferrer(scheme, host, f"{prefix}{host}{path}")


def infer_medium(utm_medium: str | None, source: str, click_id_param: str | None) -> str:
    """The tagged medium, else `(gclid)` / `(msclkid)` when a Google / Bing click id names the source."""
    if utm_medium is not None:
        return utm_medium
    if click_id_param is None:
        return ""
    return _CLICK_ID_MEDIUM.get((source, click_id_param), "")


class KnownSources:
    """The known-referrer table: host, brand and app-id lookups, and canonical spellings."""

    __slots__ = ("_apps", "_brands", "_hosts", "_names", "version")

    def __init__(
        self,
        *,
        version: str = "",
        hosts: Mapping[str, str] | None = None,
        brands: Mapping[str, str] | None = None,
        apps: Mapping[str, str] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        self._hosts = dict(hosts or {})
        self._brands = dict(brands or {})
        self._apps = dict(apps or {})
        self._names = dict(names or {})

    @classmethod
    def load(cls, path: Path | None = None) -> KnownSources:
        """Read the table from `path`, or the one shipped in `gateway/enrich/data/`. Raises ConfigError."""
        if path is None:
            origin = "gateway/enrich/data/referrer_sources.json"
            text = resources.files("gateway.enrich").joinpath("data/referrer_sources.json").read_text("utf-8")
        else:
            origin = str(path)
            try:
                text = path.read_text("utf-8")
            except OSError as exc:
                raise ConfigError(origin, "", f"cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(origin, "", f"not valid JSON: {exc}") from None
        return cls.from_data(data, origin)

    @classmethod
    def from_data(cls, data: Any, origin: str = "<data>") -> KnownSources:
        """Build from the JSON structure documented in the shipped file. Raises ConfigError."""
        if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
            raise ConfigError(origin, "sources", "must be a list of source objects")
        hosts: dict[str, str] = {}
        brands: dict[str, str] = {}
        apps: dict[str, str] = {}
        names: dict[str, str] = {}

        def put(table: dict[str, str], key: str, name: str, where: str) -> None:
            if key in table and table[key] != name:
                raise ConfigError(origin, where, f"{key!r} already belongs to {table[key]!r}")
            table[key] = name

        for i, entry in enumerate(data["sources"]):
            where = f"sources[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(origin, where, "must be an object")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(origin, f"{where}.name", "must be a non-empty string")
            put(names, name.lower(), name, f"{where}.name")
            for field, table in (("hosts", hosts), ("brands", brands), ("apps", apps), ("aliases", names)):
                values = entry.get(field, [])
                if not isinstance(values, list):
                    raise ConfigError(origin, f"{where}.{field}", "must be a list of strings")
                for j, value in enumerate(values):
                    if not isinstance(value, str) or not value.strip():
                        raise ConfigError(origin, f"{where}.{field}[{j}]", "must be a non-empty string")
                    key = value.strip().lower()
                    if field == "hosts":
                        key = strip_www(key)
                    put(table, key, name, f"{where}.{field}[{j}]")
        # A source tagged with one of its hosts or app ids (utm_source=t.co) means that source too.
        for key, name in hosts.items():
            names.setdefault(key, name)
        for key, name in apps.items():
            names.setdefault(f"android-app://{key}", name)
        version = data.get("version", "")
        return cls(version=str(version), hosts=hosts, brands=brands, apps=apps, names=names)

    def for_host(self, host: str) -> str | None:
        """The source whose host is `host` or the nearest parent of it (`l.facebook.com` → Facebook)."""
        hosts = self._hosts
        while True:
            name = hosts.get(host)
            if name is not None:
                return name
            dot = host.find(".")
            if dot < 0:
                return None
            host = host[dot + 1 :]

    def for_brand(self, label: str) -> str | None:
        return self._brands.get(label)

    def for_app(self, app_id: str) -> str | None:
        return self._apps.get(app_id)

    def canonical(self, value: str) -> str:
        """The canonical name for any known spelling of a source (case-insensitive), else `value`."""
        return self._names.get(value.lower(), value)


class ReferrerClassifier:
    """Event → `ReferrerInfo`. Build once at start-up (the public suffix list takes ~0.2 s to load)."""

    __slots__ = ("_cached", "_sources")

    def __init__(self, sources: KnownSources | None = None, *, cache_size: int = 10000) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._sources = sources if sources is not None else KnownSources.load()
        # The source of a referrer host: the known-source table and the suffix lists cost several
        # µs, and a few hosts (search engines, social sites) bring most visitors. An event's
        # columns are worked out once per distinct body (gateway/ingest/row.py), so whole
        # answers are not cached here as well.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._host_source) if cache_size else None

    @property
    def sources(self) -> KnownSources:
        return self._sources

    def classify(self, event: Event) -> ReferrerInfo:
        """The referrer, referrer_source and utm_medium columns for `event`. Never raises."""
        return self.classify_fields(event.referrer, event.hostname, event.utm_source, event.utm_medium,
                                    event.click_id_param)

    def classify_fields(self, referrer: str | None, hostname: str, utm_source: str | None, utm_medium: str | None,
                        click_id_param: str | None) -> ReferrerInfo:
        """`classify` from the five event fields it reads."""
        parsed = parse_referrer(referrer, hostname)
        if utm_source is not None:
            source = self._sources.canonical(utm_source)
        elif parsed is not None:
            source = self.source_of(parsed)
        else:
            source = ""
        return ReferrerInfo(
            referrer=parsed.stored if parsed is not None else "",
            referrer_source=source,
            utm_medium=infer_medium(utm_medium, source, click_id_param),
        )

    def source_of(self, parsed: ParsedReferrer) -> str:
        """The source name of a valid referrer, without looking at any tag."""
        if parsed.is_app:
            name = self._sources.for_app(parsed.host)
            return name if name is not None else self._sources.canonical(f"android-app://{parsed.host}")
        host = parsed.host
        cached = self._cached
        if cached is None or len(host) > _MAX_CACHED_HOST:
            return self._host_source(host)
        return cached(host)

    def cache_info(self) -> tuple[int, int]:
        """(entries, capacity) of the host-to-source cache."""
        if self._cached is None:
            return 0, 0
        info = self._cached.cache_info()
        return info.currsize, int(info.maxsize or 0)

    def _host_source(self, host: str) -> str:
        sources = self._sources
        name = sources.for_host(host)
        if name is not None:
            return name
        if ":" in host or _IPV4.match(host):  # an address has no registrable domain
            return host
        # Brands are matched under ICANN suffixes only, so google.blogspot.com is not Google;
        # the fallback keeps private suffixes, so user.github.io and shop.myshopify.com stay apart.
        try:
            icann = ICANN.privatesuffix(host)
        except Exception:  # noqa: BLE001  # a malformed host is its own source, not a failed request
            icann = None
        if icann is not None:
            name = sources.for_brand(str(icann).partition(".")[0])
            if name is not None:
                return name
        return sources.canonical(registrable_domain(host))
