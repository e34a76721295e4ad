"""Downloaded detection lists: fetch, validate, store atomically, and hot-reload in every worker.

Three kinds of list come from outside the registries and are never committed to the repository:

| kind             | default sources (HTTPS)                                        | parsed as            |
|------------------|----------------------------------------------------------------|----------------------|
| `referrer_spam`  | Matomo's referrer-spam list                                    | one host per line    |
| `datacenter_ips` | X4BNet lists_vpn datacenter IPv4 + IPv6, AWS and Google Cloud  | CIDRs, addresses, ranges; JSON range files |
| `threat_ips`     | stamparm/ipsum level 3 (addresses on three or more blacklists) | first field per line |

`ListStore.update` fetches every source of a kind (an `https://` URL, or a local path),
parses and validates the union (it parses, it is not empty, it does not shrink by more than half
unless forced), then writes `<data_dir>/lists/<kind>.txt` and `<kind>.json` (count, fetch time,
sources, errors) by write-to-temporary-then-rename, so a reader sees the old file or the new one,
never half of one. Worker processes call `maybe_reload()` now and then (a stat at most every few
seconds); when a file changed they parse it and swap the new matcher into `LiveLists` with one
attribute assignment. The gateway runs without any list: the shields then simply find nothing,
`status()` says which lists are missing or stale, and a warning is logged once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shields.errors import RuleError
from shields.iplists import IntervalSet, load_hosting_asns, parse_network
from shields.referrers import SpamReferrerList, normalise_host

__all__ = [
    "DEFAULT_SOURCES",
    "LIST_KINDS",
    "ListSettings",
    "ListStatus",
    "ListStore",
    "LiveLists",
    "UpdateResult",
    "parse_lists_config",
]

log = logging.getLogger(__name__)

REFERRER_SPAM = "referrer_spam"
DATACENTER_IPS = "datacenter_ips"
THREAT_IPS = "threat_ips"
LIST_KINDS: tuple[str, ...] = (REFERRER_SPAM, DATACENTER_IPS, THREAT_IPS)

_RAW = "https://raw.githubusercontent.com"
DEFAULT_SOURCES: dict[str, tuple[str, ...]] = {
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
MAX_SOURCE_BYTES = 64 * 1024 * 1024  # far above any real list; stops a runaway download
USER_AGENT = "edge-gateway-lists/1"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class LiveLists:
    """The matchers the shields read on every event. Replaced attribute by attribute on reload.

    Assigning an attribute is atomic for readers in the same process, so a shield sees either
    the old list or the new one. Empty lists match nothing.
    """

    __slots__ = ("referrer_spam", "datacenter_ips", "threat_ips", "hosting_asns")

    def __init__(
        self,
        referrer_spam: SpamReferrerList | None = None,
        datacenter_ips: IntervalSet | None = None,
        threat_ips: IntervalSet | None = None,
        hosting_asns: frozenset[int] | None = None,
    ) -> None:
        self.referrer_spam = referrer_spam if referrer_spam is not None else SpamReferrerList(())
        self.datacenter_ips = datacenter_ips if datacenter_ips is not None else IntervalSet()
        self.threat_ips = threat_ips if threat_ips is not None else IntervalSet()
        self.hosting_asns = hosting_asns if hosting_asns is not None else frozenset()


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What `ListStore.update` did for one kind. `ok` False means the stored list is unchanged."""

    kind: str
    ok: bool
    count: int  # entries in the new list (when ok) or parsed before refusal
    previous_count: int | None
    message: str
    errors: tuple[str, ...] = ()  # per-source problems (a failed source among good ones)


@dataclass(frozen=True, slots=True)
class ListStatus:
    """One list's state, for metrics and the health endpoint."""

    kind: str
    loaded: bool
    count: int
    age_seconds: float | None  # since it was fetched; None when missing
    stale: bool  # missing, or older than max_age

    @property
    def missing(self) -> bool:
        return not self.loaded


@dataclass(frozen=True, slots=True)
class ListSettings:
    """`[lists]` settings from the gateway TOML."""

    sources: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SOURCES))
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS


def parse_lists_config(table: Mapping[str, Any], source: str, base_dir: Path | None = None) -> ListSettings:
    """Validate the gateway TOML's `[lists]` table.

    ```toml
    [lists]
    refresh_interval = "24h"   # or seconds; 0 disables the background refresh
    max_age = "7d"             # older lists are reported stale
    [lists.referrer_spam]
    sources = ["https://...", "/etc/edge-gateway/extra-spam.txt"]
    ```
    A kind without a table keeps its default sources. Relative paths are relative to `base_dir`.
    Raises `RuleError(source, "lists.<key>", reason)`.
    """
    sources: dict[str, tuple[str, ...]] = dict(DEFAULT_SOURCES)
    refresh = float(DEFAULT_REFRESH_SECONDS)
    max_age = float(DEFAULT_MAX_AGE_SECONDS)
    for key, value in table.items():
        if key == "refresh_interval":
            refresh = _duration(value, source, "lists.refresh_interval")
        elif key == "max_age":
            max_age = _duration(value, source, "lists.max_age")
        elif key in LIST_KINDS:
            if not isinstance(value, Mapping):
                raise RuleError(source, f"lists.{key}", "must be a table with sources = [...]")
            unknown = set(value) - {"sources"}
            if unknown:
                raise RuleError(source, f"lists.{key}.{sorted(unknown)[0]}", "unknown key")
            raw = value.get("sources", list(DEFAULT_SOURCES[key]))
            if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
                raise RuleError(source, f"lists.{key}.sources", "must be a list of URLs or paths")
            checked: list[str] = []
            for i, item in enumerate(raw):
                try:
                    checked.append(_check_source(item, base_dir))
                except ValueError as exc:
                    raise RuleError(source, f"lists.{key}.sources[{i}]", str(exc)) from None
            sources[key] = tuple(checked)
        else:
            raise RuleError(source, f"lists.{key}", f"unknown key (expected one of {', '.join(LIST_KINDS)}, "
                            "refresh_interval, max_age)")
    return ListSettings(sources=sources, refresh_seconds=refresh, max_age_seconds=max_age)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object, source: str, key: str) -> float:
    if isinstance(value, bool):
        raise RuleError(source, key, "must be seconds or a duration such as '12h'")
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:] in _UNITS:
        return float(int(value[:-1]) * _UNITS[value[-1]])
    raise RuleError(source, key, f"{value!r} is not a duration (seconds, or a number with s, m, h or d)")


def _check_source(item: str, base_dir: Path | None) -> str:
    parsed = urllib.parse.urlsplit(item)
    if parsed.scheme in ("https", "http"):
        if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK_HOSTS:
            raise ValueError(f"{item!r}: only https:// URLs (plain http only on loopback)")
        if not parsed.hostname:
            raise ValueError(f"{item!r} has no host")
        return item
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"{item!r}: unsupported scheme {parsed.scheme!r} (https URL or local path)")
    path = Path(item)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return str(path)


# --- parsing per kind ------------------------------------------------------------------------


def _iter_json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _iter_json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _iter_json_strings(v)


def _parse_entries(kind: str, text: str) -> tuple[list[str], int]:
    """Canonical entries of one source and the number of lines that did not parse."""
    if kind == REFERRER_SPAM:
        hosts: list[str] = []
        bad = 0
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            host = normalise_host(line)
            if host and "." in host:
                hosts.append(host)
            else:
                bad += 1
        return hosts, bad
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        # Cloud range files (AWS, Google, Oracle...) are JSON of many shapes; every string in
        # them that is a network is an entry, everything else (regions, services) is ignored.
        try:
            doc = json.loads(stripped)
        except ValueError:
            return [], 1
        nets = [s.strip() for s in _iter_json_strings(doc) if "/" in s and _is_network(s.strip())]
        return nets, 0
    entries: list[str] = []
    bad = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        token = line.replace(",", " ").split()[0]
        if _is_network(token):
            entries.append(token)
        else:
            bad += 1
    return entries, bad


def _is_network(token: str) -> bool:
    try:
        parse_network(token)
    except ValueError:
        return False
    return True


def _build(kind: str, entries: Sequence[str]) -> SpamReferrerList | IntervalSet:
    if kind == REFERRER_SPAM:
        return SpamReferrerList(entries)
    return IntervalSet.from_lines(entries)


# --- the store -------------------------------------------------------------------------------


class ListStore:
    """Downloaded lists under `<data_dir>/lists/`, and the live matchers built from them.

    One instance per process. `update` may run in any process (a file lock keeps two from
    fetching at once); `maybe_reload` runs in every worker.
    """

    def __init__(
        self,
        data_dir: Path,
        settings: ListSettings | None = None,
        *,
        check_interval: float = 5.0,
        timeout: float = 30.0,
        hosting_asns: frozenset[int] | None = None,
    ) -> None:
        self.dir = Path(data_dir) / "lists"
        self.settings = settings or ListSettings()
        self.check_interval = check_interval
        self.timeout = timeout
        self.lists = LiveLists(hosting_asns=load_hosting_asns() if hosting_asns is None else hosting_asns)
        self._seen: dict[str, tuple[int, int] | None] = {kind: None for kind in LIST_KINDS}
        self._next_check = 0.0
        self._warned: set[str] = set()

    # paths and metadata

    def path(self, kind: str) -> Path:
        return self.dir / f"{kind}.txt"

    def meta_path(self, kind: str) -> Path:
        return self.dir / f"{kind}.json"

    def metadata(self, kind: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.meta_path(kind).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # loading

    def load(self, kind: str) -> bool:
        """Parse the stored list into `lists`; False (with one warning) when it is missing."""
        _check_kind(kind)
        path = self.path(kind)
        try:
            stat = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError:
            self._seen[kind] = None
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning("shield list %s is missing (%s): its shield matches nothing until "
                            "`edge-gateway lists update` fetches it", kind, path)
            return False
        matcher = _build(kind, text.splitlines())
        setattr(self.lists, kind, matcher)
        self._seen[kind] = (stat.st_mtime_ns, stat.st_size)
        self._warned.discard(kind)
        return True

    def load_all(self) -> dict[str, bool]:
        return {kind: self.load(kind) for kind in LIST_KINDS}

    def maybe_reload(self, now: float | None = None) -> list[str]:
        """Reload the lists whose files changed since the last look; cheap when none did.

        Call it from each worker's event loop every second or so: it only stats the files every
        `check_interval` seconds. Returns the kinds reloaded.
        """
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return []
        self._next_check = now + self.check_interval
        reloaded = []
        for kind in LIST_KINDS:
            try:
                stat = self.path(kind).stat()
                key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = None
            if key != self._seen[kind] and key is not None and self.load(kind):
                reloaded.append(kind)
        return reloaded

    # status

    def status(self, now: float | None = None) -> list[ListStatus]:
        """Per kind: loaded in this process, entry count, age since fetch, stale."""
        now = time.time() if now is None else now
        out = []
        for kind in LIST_KINDS:
            meta = self.metadata(kind)
            loaded = self._seen[kind] is not None
            fetched = meta.get("fetched_at") if meta else None
            age = now - float(fetched) if isinstance(fetched, (int, float)) else None
            count = int(meta.get("count", 0)) if meta else 0
            stale = not loaded or age is None or age > self.settings.max_age_seconds
            out.append(ListStatus(kind, loaded, count, age, stale))
        return out

    def due(self, now: float | None = None) -> list[str]:
        """Kinds whose last successful fetch is older than the refresh interval (or never)."""
        if self.settings.refresh_seconds <= 0:
            return []
        now = time.time() if now is None else now
        due = []
        for kind in LIST_KINDS:
            meta = self.metadata(kind)
            fetched = meta.get("fetched_at") if meta else None
            if not isinstance(fetched, (int, float)) or now - fetched >= self.settings.refresh_seconds:
                due.append(kind)
        return due

    def refresh_due(self, force: bool = False) -> list[UpdateResult]:
        """The background refresh: update every kind that is due."""
        return [self.update(kind, force=force) for kind in self.due()]

    # updating

    def update_all(self, force: bool = False) -> list[UpdateResult]:
        return [self.update(kind, force=force) for kind in LIST_KINDS]

    def update(self, kind: str, sources: Sequence[str] | None = None, force: bool = False) -> UpdateResult:
        """Fetch, validate and store one kind; the stored list is unchanged unless `ok`.

        A source that fails (network, HTTP status, no parsable entries) is reported in `errors`;
        the others still count, and the shrink rule guards against a large source going missing.
        """
        _check_kind(kind)
        sources = tuple(sources) if sources is not None else tuple(self.settings.sources.get(kind, ()))
        previous = self.metadata(kind)
        previous_count = int(previous["count"]) if previous and "count" in previous else None
        if not sources:
            return UpdateResult(kind, False, 0, previous_count, "no sources configured")
        self.dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.dir / f".{kind}.lock") as got_lock:
            if not got_lock:
                return UpdateResult(kind, False, 0, previous_count, "another update of this list is running")
            entries: list[str] = []
            errors: list[str] = []
            good_sources: list[str] = []
            for src in sources:
                try:
                    text = self._fetch(src)
                except (OSError, ValueError, urllib.error.URLError) as exc:
                    errors.append(f"{src}: {exc}")
                    continue
                parsed, bad = _parse_entries(kind, text)
                if not parsed:
                    errors.append(f"{src}: no {kind} entries found ({bad} lines did not parse)")
                    continue
                if bad > len(parsed):
                    errors.append(f"{src}: {bad} of {bad + len(parsed)} lines did not parse; not a {kind} list?")
                    continue
                entries.extend(parsed)
                good_sources.append(src)
            unique = list(dict.fromkeys(entries))
            count = len(unique)
            if not unique:
                msg = "no source gave a usable list; the stored list is unchanged"
                return UpdateResult(kind, False, 0, previous_count, msg, tuple(errors))
            if previous_count and count < previous_count / 2 and not force:
                msg = (f"refused: {count} entries would replace {previous_count} (shrinks by more than half); "
                       "re-run with --force if that is intended")
                return UpdateResult(kind, False, count, previous_count, msg, tuple(errors))
            body = "\n".join(unique) + "\n"
            _atomic_write(self.path(kind), body.encode("utf-8"))
            meta = {
                "kind": kind,
                "count": count,
                "fetched_at": time.time(),
                "sources": good_sources,
                "errors": errors,
                "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
            }
            _atomic_write(self.meta_path(kind), json.dumps(meta, indent=2).encode("utf-8"))
        self.load(kind)
        msg = f"stored {count} entries" + (f" (previously {previous_count})" if previous_count is not None else "")
        return UpdateResult(kind, True, count, previous_count, msg, tuple(errors))

    def _fetch(self, source: str) -> str:
        parsed = urllib.parse.urlsplit(source)
        if parsed.scheme in ("http", "https"):
            if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK_HOSTS:
                raise ValueError("plain http is only allowed on loopback")
            request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (scheme checked)
                data: bytes = response.read(MAX_SOURCE_BYTES + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise ValueError(f"larger than {MAX_SOURCE_BYTES} bytes")
        return data.decode("utf-8", errors="replace")


def _check_kind(kind: str) -> None:
    if kind not in LIST_KINDS:
        raise ValueError(f"unknown list {kind!r} (expected one of {', '.join(LIST_KINDS)})")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write next to `path`, flush to disk, then rename over it: readers never see a torn file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """A non-blocking inter-process lock; yields False when another process holds it."""
    fh = open(lock_path, "a+b")  # noqa: SIM115 (held for the duration of the block)
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()
