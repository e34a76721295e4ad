"""A site's `[shields]` table read and written through the console API.

A write is validated by the same code as a file edit (`gateway.ingest.sites.parse_site` on the
whole file as it would be written), so a refused PUT names the field just as the gateway's log
would. The new file is written beside the old one and renamed over it (a reader never sees half
a file); everything else in the file, comments included, is kept (tomlkit). Every worker picks
the change up within a second, as it does any edit of the sites folder.

History: the last `HISTORY` versions of each site's shields, as saved (by which key, when), in
`<data_dir>/shield_history/<domain>.json`; the version in the file before the first API write
is kept as the first entry, so it can be restored too. Rolling back is a PUT of an old version.
A lock file serialises writers across workers and processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import tomlkit

from gateway.errors import ConfigError
from gateway.ingest.sites import parse_site
from shields.model import SiteConfig

__all__ = ["HISTORY", "SiteFiles", "VersionConflict"]

HISTORY = 20


class VersionConflict(Exception):
    """The file changed since the version the writer read."""


def _version(shields: Any) -> str:
    return hashlib.sha256(orjson.dumps(shields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """tomlkit/tomllib values as plain JSON-able Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "unwrap"):
        return _plain(value.unwrap())
    return value


def _check_values(value: Any, where: str) -> None:
    """What TOML cannot hold (null, nesting a site file never has) is refused before tomlkit sees it."""
    if value is None:
        raise ConfigError("request", where, "null is not allowed")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_values(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(v, f"{where}[{i}]")
    elif not isinstance(value, (str, bool, int, float)):
        raise ConfigError("request", where, f"{type(value).__name__} is not allowed")


def _toml(value: Any) -> Any:
    """A JSON value as the TOML a site owner would write: rules with options as inline tables."""
    if isinstance(value, list):
        arr = tomlkit.array()
        arr.extend(_toml(v) for v in value)
        return arr
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        inline.update({k: _toml(v) for k, v in value.items()})
        return inline
    return value


def _update(doc: tomlkit.TOMLDocument, shields: dict[str, Any]) -> None:
    """Change the document's [shields] table key by key, so the comments and layout of what
    did not change stay as the site owner wrote them."""
    if not shields:
        doc.pop("shields", None)
        return
    table = doc.get("shields")
    if not isinstance(table, dict):
        doc["shields"] = {k: _toml(v) for k, v in shields.items()}
        return
    for key in [k for k in table if k not in shields]:
        del table[key]
    for key, value in shields.items():
        if key not in table or _plain(table[key]) != value:
            table[key] = _toml(value)


class SiteFiles:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "shield_history"

    def _history_path(self, domain: str) -> Path:
        return self.dir / f"{domain}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self, site: SiteConfig) -> dict[str, Any]:
        """The site's `[shields]` table as JSON, with its version."""
        raw = tomllib.loads(Path(site.source).read_text(encoding="utf-8"))
        shields = _plain(raw.get("shields", {}))
        return {"site": site.domain, "file": Path(site.source).name, "version": _version(shields),
                "shields": shields}

    def history(self, site: SiteConfig) -> list[dict[str, Any]]:
        path = self._history_path(site.domain)
        try:
            entries: list[dict[str, Any]] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return []
        return entries

    def _save_history(self, domain: str, entries: list[dict[str, Any]]) -> None:
        path = self._history_path(domain)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(entries[-HISTORY:]))
        os.replace(tmp, path)

    def write(self, site: SiteConfig, shields: Any, *, key_id: str, expect_version: str | None = None) -> dict[str, Any]:
        """Validate and write `shields` as the site's `[shields]` table. Raises ConfigError (the
        field and reason, as a file edit would be reported) or VersionConflict."""
        if not isinstance(shields, dict):
            raise ConfigError("request", "shields", "must be an object with the keys of a site file's [shields] table")
        _check_values(shields, "shields")
        path = Path(site.source)
        with self._locked():
            text = path.read_text(encoding="utf-8")
            doc = tomlkit.parse(text)
            current = _plain(doc.get("shields", {}))
            if expect_version is not None and expect_version != _version(current):
                raise VersionConflict(f"the shields of {site.domain} changed since version {expect_version}")
            _update(doc, shields)
            new_text = tomlkit.dumps(doc)
            try:
                parsed = tomllib.loads(new_text)
            except tomllib.TOMLDecodeError as exc:  # a key TOML cannot write back, say
                raise ConfigError("request", "shields", f"cannot be written as TOML: {exc}") from None
            checked = parse_site(parsed, path.name)
            if checked.domain != site.domain:  # cannot happen: only [shields] changes
                raise ConfigError("request", "domain", "the site's domain cannot change here")
            entries = self.history(site)
            now = time.time()
            if not entries:
                entries.append({"version": _version(current), "saved_at": now, "saved_by": "file",
                                "shields": current})
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(new_text, encoding="utf-8")
            os.replace(tmp, path)
            saved = _plain(parsed.get("shields", {}))
            entries.append({"version": _version(saved), "saved_at": now, "saved_by": f"key {key_id}",
                            "shields": saved})
            self._save_history(site.domain, entries)
        return {"site": site.domain, "file": path.name, "version": _version(saved), "shields": saved}
