"""Daily salts for visitor ids, shared by every worker through files in the data dir.

One salt per UTC day: 16 random bytes in `<data_dir>/salts/<YYYY-MM-DD>.salt`, mode 0600. The
salt of day D is the current one during D and the previous one during D+1; anything older is
destroyed (overwritten with random bytes, flushed, then unlinked) by the first worker that sees
the new day, and again at every start. Creation is race-free across processes: a salt is written
to a private temporary file and published with link(2), which fails if another worker got there
first, in which case that worker's salt is used.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from pathlib import Path
from typing import Protocol

SALT_BYTES = 16
_DAY = 86400


class SaltStore(Protocol):
    def salts(self) -> tuple[bytes, bytes | None]:
        """(current, previous) for the present UTC day."""
        ...


def day_name(day: int) -> str:
    """The UTC date of day number `day` (days since 1970-01-01), as salts are named."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def day_of(name: str) -> int | None:
    try:
        return (dt.date.fromisoformat(name) - dt.date(1970, 1, 1)).days
    except ValueError:
        return None


def destroy_file(path: Path) -> None:
    """Overwrite a salt file in place before unlinking it, so the bytes do not linger on disk."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, secrets.token_bytes(max(size, SALT_BYTES)))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _abandoned(tmp: Path) -> bool:
    """A temporary salt file whose writer is gone (or that is over a minute old): another
    worker may be between writing and publishing its own, which must not be destroyed."""
    try:
        pid = int(tmp.name.split("-")[1])
        age = time.time() - tmp.stat().st_mtime
    except (IndexError, ValueError, OSError):
        return True
    if age > 60:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class FileSaltStore:
    """Salts in the data dir. Reads touch the disk once per day per process."""

    def __init__(self, data_dir: Path, clock: "Clock | None" = None) -> None:
        self.dir = data_dir / "salts"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self._clock = clock or time.time
        self._day = -1
        self._current = b""
        self._previous: bytes | None = None

    def salts(self) -> tuple[bytes, bytes | None]:
        day = int(self._clock() // _DAY)
        if day != self._day:
            self._rotate(day)
        return self._current, self._previous

    def _rotate(self, day: int) -> None:
        current = self._get_or_create(day)
        previous = self._read(day - 1)
        self.purge(day)
        self._day, self._current, self._previous = day, current, previous

    def purge(self, today: int | None = None) -> list[str]:
        """Destroy every salt older than yesterday. Returns the names destroyed."""
        if today is None:
            today = int(self._clock() // _DAY)
        destroyed = []
        for p in self.dir.iterdir():
            if p.suffix == ".salt":
                d = day_of(p.stem)
                if d is None or d < today - 1:
                    destroy_file(p)
                    destroyed.append(p.name)
            elif p.name.startswith(".tmp-") and _abandoned(p):
                # A worker killed between write and link leaves this; it was never published.
                destroy_file(p)
        return destroyed

    def _path(self, day: int) -> Path:
        return self.dir / f"{day_name(day)}.salt"

    def _read(self, day: int) -> bytes | None:
        try:
            data = self._path(day).read_bytes()
        except FileNotFoundError:
            return None
        return data if len(data) == SALT_BYTES else None

    def _get_or_create(self, day: int) -> bytes:
        existing = self._read(day)
        if existing is not None:
            return existing
        tmp = self.dir / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SALT_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self._path(day))
        except FileExistsError:
            pass  # another worker published first; use theirs
        except FileNotFoundError:
            return self._get_or_create(day)  # our temporary file was taken for abandoned: again
        finally:
            tmp.unlink(missing_ok=True)
        data = self._read(day)
        if data is None:  # published by someone else with a bad size: replace it
            destroy_file(self._path(day))
            return self._get_or_create(day)
        return data


class Clock(Protocol):
    def __call__(self) -> float: ...
