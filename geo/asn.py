"""IP address → autonomous system number and organisation, from a table of address ranges.

The ip-location-db ASN package (RouteViews, the RIRs and DB-IP's ASN Lite, CC BY 4.0) ships
CSV ranges `first,last,asn,organisation`. ``write_table`` turns them, once at install, into a
compact binary file: sorted range starts and ends with their AS numbers, as machine integers
(IPv6 as high and low halves), and the organisations beside it as JSON. ``AsnTable.open`` reads
that back in well under a second, and ``lookup`` is one binary search: about a microsecond.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["AsnTable", "AsnTableError", "write_table"]

_MAGIC = b"GWASN1\n\0"
_COUNTS = struct.Struct("<II")


class AsnTableError(Exception):
    """An ASN table file is missing, truncated or not one."""


def _array(code: str, values: Iterable[int] = ()) -> array[int]:
    a = array(code, values)
    if a.itemsize not in (4, 8):  # pragma: no cover - platform guard
        raise AsnTableError(f"array code {code!r} has {a.itemsize}-byte items on this platform")
    return a


def _u32() -> str:
    return "I" if array("I").itemsize == 4 else "L"


def write_table(v4_rows: Iterable[list[str]], v6_rows: Iterable[list[str]], path: Path, orgs_path: Path) -> int:
    """Write the binary table from the numeric CSV rows of both files; returns the range count."""
    u32 = _u32()
    s4, e4, a4 = _array(u32), _array(u32), _array(u32)
    s6h, s6l, e6h, e6l, a6 = _array("Q"), _array("Q"), _array("Q"), _array("Q"), _array(u32)
    orgs: dict[int, str] = {}
    mask = (1 << 64) - 1
    for version, rows in ((4, v4_rows), (6, v6_rows)):
        ranges = []
        for row in rows:
            if len(row) < 3 or not row[2].isdigit():
                continue
            first, last, asn = int(row[0]), int(row[1]), int(row[2])
            if asn <= 0 or last < first:
                continue
            ranges.append((first, last, asn))
            if len(row) > 3 and row[3]:
                orgs.setdefault(asn, row[3])
        ranges.sort()
        for first, last, asn in ranges:
            if version == 4:
                s4.append(first)
                e4.append(last)
                a4.append(asn)
            else:
                s6h.append(first >> 64)
                s6l.append(first & mask)
                e6h.append(last >> 64)
                e6l.append(last & mask)
                a6.append(asn)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(_MAGIC + _COUNTS.pack(len(s4), len(s6h)))
        for a in (s4, e4, a4, s6h, s6l, e6h, e6l, a6):
            a.tofile(out)
    tmp.replace(path)
    orgs_tmp = orgs_path.with_name(f".{orgs_path.name}.tmp")
    orgs_tmp.write_text(json.dumps({str(k): v for k, v in sorted(orgs.items())}))
    orgs_tmp.replace(orgs_path)
    return len(s4) + len(s6h)


def read_csv(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.reader(fh)


class AsnTable:
    """Read-only ranges → AS numbers, and the organisation of each AS number."""

    __slots__ = ("_s4", "_e4", "_a4", "_s6", "_e6", "_a6", "orgs")

    def __init__(self, s4: Any, e4: Any, a4: Any, s6: list[int], e6: list[int], a6: Any,
                 orgs: dict[int, str]) -> None:
        self._s4, self._e4, self._a4 = s4, e4, a4
        self._s6, self._e6, self._a6 = s6, e6, a6
        self.orgs = orgs

    @classmethod
    def open(cls, path: Path, orgs_path: Path) -> AsnTable:
        try:
            data = path.read_bytes()
            orgs_raw = json.loads(orgs_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AsnTableError(f"cannot read the ASN table {path}: {exc}") from exc
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _COUNTS.size:
            raise AsnTableError(f"{path} is not an ASN table")
        n4, n6 = _COUNTS.unpack_from(data, len(_MAGIC))
        u32 = _u32()
        sizes = [(u32, n4)] * 3 + [("Q", n6)] * 4 + [(u32, n6)]
        if len(data) != len(_MAGIC) + _COUNTS.size + sum(array(c).itemsize * n for c, n in sizes):
            raise AsnTableError(f"{path} is truncated")
        pos = len(_MAGIC) + _COUNTS.size
        parts = []
        for code, n in sizes:
            a = array(code)
            end = pos + a.itemsize * n
            a.frombytes(data[pos:end])
            parts.append(a)
            pos = end
        s4, e4, a4, s6h, s6l, e6h, e6l, a6 = parts
        s6 = [(h << 64) | lo for h, lo in zip(s6h, s6l)]
        e6 = [(h << 64) | lo for h, lo in zip(e6h, e6l)]
        orgs = {int(k): str(v) for k, v in orgs_raw.items()} if isinstance(orgs_raw, dict) else {}
        return cls(s4, e4, a4, s6, e6, a6, orgs)

    def __len__(self) -> int:
        return len(self._s4) + len(self._s6)

    def ipv4_sizes(self) -> dict[int, int]:
        """How many IPv4 addresses each AS number announces (for evaluation and reports)."""
        sizes: dict[int, int] = {}
        for start, end, asn in zip(self._s4, self._e4, self._a4):
            sizes[asn] = sizes.get(asn, 0) + end - start + 1
        return sizes

    def lookup(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
        """The AS number announcing `ip`, or None. IPv4-mapped IPv6 is looked up as IPv4."""
        if ip.version == 6:
            mapped = ip.ipv4_mapped
            if mapped is None:
                value = int(ip)
                i = bisect_right(self._s6, value) - 1
                return int(self._a6[i]) if i >= 0 and value <= self._e6[i] else None
            ip = mapped
        value = int(ip)
        i = bisect_right(self._s4, value) - 1
        return int(self._a4[i]) if i >= 0 and value <= self._e4[i] else None
