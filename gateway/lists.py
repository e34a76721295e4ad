"""Downloaded shield lists: fetch, validate, store atomically, and hot-reload in every worker.

The list kinds, their formats and the matchers are the shields' (shields/lists.py); this module
is the part that touches the network and the disk, which shields/ must not.

`ListStore.update` fetches every source of a kind (an `https://` URL, or a local path), parses
and validates the union (it parses, it is not empty, it does not shrink by more than half
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import LOOPBACK_HOSTS, ListSettings
from geo import AsnTable, AsnTableError, installed_asn
from shields.hosting import DATA as SHIELD_DATA
from shields.hosting import classify_networks
from shields.iplists import load_hosting_asns
from shields.lists import LIST_KINDS, LiveLists, build_matcher, check_kind, parse_entries

__all__ = ["ListStatus", "ListStore", "UpdateResult"]

log = logging.getLogger("gateway.lists")

MAX_SOURCE_BYTES = 64 * 1024 * 1024  # far above any real list; stops a runaway download
USER_AGENT = "edge-gateway-lists/1"


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
        self.data_dir = Path(data_dir)
        self.lists = LiveLists(hosting_asns=load_hosting_asns() if hosting_asns is None else hosting_asns)
        self._seen: dict[str, tuple[int, int] | None] = {kind: None for kind in LIST_KINDS}
        self._asn_seen: tuple[int, int] | None = None
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
        check_kind(kind)
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
        matcher = build_matcher(kind, text.splitlines())
        self.lists.replace(kind, matcher)
        self._seen[kind] = (stat.st_mtime_ns, stat.st_size)
        self._warned.discard(kind)
        return True

    def load_all(self) -> dict[str, bool]:
        loaded = {kind: self.load(kind) for kind in LIST_KINDS}
        self.load_asn()
        return loaded

    def _asn_signature(self) -> tuple[int, int] | None:
        found = installed_asn(self.data_dir)
        if found is None:
            return None
        try:
            st = Path(found["table"]).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def load_asn(self) -> bool:
        """Load the ASN table `geo install` put in the data dir, and which of its networks are
        hosting or VPN services; False (with one warning) when there is none."""
        found = installed_asn(self.data_dir)
        if found is None:
            if "asn" not in self._warned:
                self._warned.add("asn")
                log.warning("no ASN table installed: the dc_ip shield judges networks by the geo database's ASN "
                            "alone (run `edge-gateway geo install`)")
            return False
        try:
            table = AsnTable.open(Path(found["table"]), Path(found["orgs"]))
        except AsnTableError as exc:
            log.warning("ASN table unusable, keeping what was loaded: %s", exc)
            return False
        hosting, vpn = self._classes(table, str(found.get("integrity", "")))
        self.lists.hosting_asns, self.lists.vpn_asns = hosting, vpn
        self.lists.asn_table = table
        self._asn_seen = self._asn_signature()
        self._warned.discard("asn")
        return True

    def _classes(self, table: AsnTable, version: str) -> tuple[frozenset[int], frozenset[int]]:
        """`classify_networks` over the table's organisations, kept in the lists folder keyed by
        the table and the classification data, so each worker does not redo it (~0.6 s)."""
        digest = hashlib.sha256(version.encode())
        for name in ("hosting_asns.txt", "vpn_asns.txt", "people_asns.txt", "hosting_names.txt", "hosting_brands.txt"):
            digest.update((SHIELD_DATA / name).read_bytes())
        key = digest.hexdigest()
        cache = self.dir / "asn-classes.json"
        try:
            kept = json.loads(cache.read_text())
            if kept.get("key") == key:
                return frozenset(kept["hosting"]), frozenset(kept["vpn"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        hosting, vpn = classify_networks(table.orgs)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(cache, json.dumps({"key": key, "hosting": sorted(hosting), "vpn": sorted(vpn)}).encode())
        except OSError as exc:
            log.warning("could not keep the ASN classes in %s: %s", cache, exc)
        return hosting, vpn

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
        signature = self._asn_signature()
        if signature is not None and signature != self._asn_seen and self.load_asn():
            reloaded.append("asn")
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
        check_kind(kind)
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
                parsed, bad = parse_entries(kind, text)
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
            if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
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
