"""Address sets: sorted, merged integer intervals per IP family, found by binary search.

Address lists (datacenter ranges, threat addresses, a site's own IP rules, the gateway's trusted
proxies) become an `IntervalSet`. Fifty thousand CIDRs cost a few hundred kilobytes and one
binary search (about a microsecond) per lookup. Entries are addresses, CIDRs or ranges `a-b`,
IPv4 and IPv6; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports
for an IPv4 client) is the IPv4 address it maps (`unmapped`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

_IPV4 = ipaddress.IPv4Address

__all__ = ["IPAddress", "Interval", "IntervalSet", "parse_asn_lines", "parse_network", "unmapped"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Interval = tuple[int, int]

_V4_MAPPED_BITS = 96  # ::ffff:0:0/96


def unmapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped IPv6 address stands for; any other address unchanged."""
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


def parse_network(text: str, *, mapped_as_v4: bool = False) -> tuple[int, Interval]:
    """Parse an address, a CIDR or a range `a-b` into (IP version, (first, last)).

    Raises ValueError with a message fit for the operator. A CIDR with host bits set
    (`10.0.0.1/24`) is accepted as its network, as firewall configs usually mean it. With
    `mapped_as_v4`, an IPv4-mapped IPv6 address or network of /96 or longer
    (`::ffff:10.0.0.0/104`) is the IPv4 one it maps: for sets checked against addresses that
    were already `unmapped` (the gateway's trusted proxies). Lists keep such entries as IPv6;
    `IntervalSet.contains` finds a mapped client in them as written.
    """
    text = text.strip()
    if not text:
        raise ValueError("is empty")
    fast = _parse_v4_fast(text)
    if fast is not None:
        return 4, fast
    if "-" in text and "/" not in text:
        lo_text, hi_text = (part.strip() for part in text.split("-", 1))
        try:
            lo, hi = ipaddress.ip_address(lo_text), ipaddress.ip_address(hi_text)
        except ValueError:
            raise ValueError(f"{text!r} is not an address range") from None
        if lo.version != hi.version:
            raise ValueError(f"{text!r} mixes IPv4 and IPv6")
        if int(hi) < int(lo):
            raise ValueError(f"{text!r} ends before it starts")
        return lo.version, (int(lo), int(hi))
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if mapped_as_v4 and net.version == 6 and net.prefixlen >= _V4_MAPPED_BITS:
                first = net.network_address.ipv4_mapped
                if first is not None:
                    v4 = ipaddress.ip_network(f"{first}/{net.prefixlen - _V4_MAPPED_BITS}", strict=False)
                    return 4, (int(v4.network_address), int(v4.broadcast_address))
            return net.version, (int(net.network_address), int(net.broadcast_address))
        addr = ipaddress.ip_address(text)
        if mapped_as_v4:
            addr = unmapped(addr)
    except ValueError:
        kind = "a network" if "/" in text else "an IP address"
        raise ValueError(f"{text!r} is not {kind}") from None
    return addr.version, (int(addr), int(addr))


def _parse_v4_fast(text: str) -> Interval | None:
    """Plain dotted-quad address or CIDR without calling ipaddress (lists have ~50k lines and
    workers reload them while serving). None when `text` is anything else: the slow path
    then parses it and produces the error message."""
    addr, _, bits_text = text.partition("/")
    parts = addr.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    if not bits_text:
        return value, value
    if not bits_text.isdigit() or len(bits_text) > 2:
        return None
    bits = int(bits_text)
    if bits > 32:
        return None
    host = (1 << (32 - bits)) - 1
    first = value & ~host & 0xFFFFFFFF
    return first, first | host


def _found(starts: list[int], ends: list[int], value: int) -> bool:
    """Membership of an address (as an integer) in the merged intervals `starts`/`ends`.

    No memo in front: the request path keeps each client's IP-list verdicts with the client
    (gateway/ingest/clients.py), so a lookup here is for a client not seen before, which a memo
    keyed by address would miss anyway. A plain function, called directly: compiled, a closure
    kept per set was a call through Python's protocol (its arguments parsed) on every lookup.

    The search is written out rather than `bisect_right`'s: compiled, each step of it compares
    two machine integers (an IPv4 address fits in one), where `bisect` compares two Python
    objects through the generic protocol (a lookup in 50,000 ranges is 16 steps)."""
    lo = 0
    hi = len(starts)
    while lo < hi:
        mid = (lo + hi) >> 1
        if value < starts[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo > 0 and value <= ends[lo - 1]


def _merge(intervals: list[Interval]) -> tuple[list[int], list[int]]:
    intervals.sort()
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in intervals:
        if ends and lo <= ends[-1] + 1:  # overlapping or adjacent: extend
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


class IntervalSet:
    """An immutable set of IPv4 and IPv6 addresses held as sorted, merged intervals."""

    __slots__ = ("_v4_starts", "_v4_ends", "_v6_starts", "_v6_ends", "invalid")

    def __init__(self, v4: Iterable[Interval] = (), v6: Iterable[Interval] = (), invalid: int = 0) -> None:
        self._v4_starts, self._v4_ends = _merge(list(v4))
        self._v6_starts, self._v6_ends = _merge(list(v6))
        self.invalid = invalid  # lines skipped while parsing, for list validation and status

    @classmethod
    def from_lines(cls, lines: Iterable[str], strict: bool = False) -> IntervalSet:
        """Build from address/CIDR/range entries, one per line.

        Blank lines and `#` or `;` comments are skipped, and only the first whitespace- or
        comma-separated field counts, so list formats such as ipsum's `ip<TAB>count` load as
        they are. With `strict`, a bad entry raises ValueError; otherwise it is counted in
        `invalid` and skipped.
        """
        v4: list[Interval] = []
        v6: list[Interval] = []
        invalid = 0
        for raw in lines:
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not line:
                continue
            token = line.replace(",", " ").split()[0]
            try:
                version, interval = parse_network(token)
            except ValueError:
                if strict:
                    raise
                invalid += 1
                continue
            (v4 if version == 4 else v6).append(interval)
        return cls(v4, v6, invalid)

    @classmethod
    def from_file(cls, path: Path) -> IntervalSet:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return cls.from_lines(fh)

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip)
            except ValueError:
                return False
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return self.contains(ip)
        return False

    def contains(self, ip: IPAddress) -> bool:
        """Membership of a parsed address (the hot path: no parsing, one binary search).

        An IPv4-mapped address (`unmapped`) is in the set when its IPv4 address is, or when an
        IPv6 entry contains it as written."""
        if type(ip) is _IPV4 or ip.version == 4:  # the type test first: no property call
            return _found(self._v4_starts, self._v4_ends, int(ip))
        v4 = unmapped(ip)
        if v4 is not ip and _found(self._v4_starts, self._v4_ends, int(v4)):
            return True
        return _found(self._v6_starts, self._v6_ends, int(ip))

    def __len__(self) -> int:
        """Number of merged intervals (not addresses)."""
        return len(self._v4_starts) + len(self._v6_starts)

    def __bool__(self) -> bool:
        return bool(self._v4_starts or self._v6_starts)

    def __or__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet(
            list(zip(self._v4_starts + other._v4_starts, self._v4_ends + other._v4_ends)),
            list(zip(self._v6_starts + other._v6_starts, self._v6_ends + other._v6_ends)),
            self.invalid + other.invalid,
        )


def parse_asn_lines(lines: Iterable[str]) -> frozenset[int]:
    """AS numbers from lines like `16509  Amazon` or `AS16509`; comments with `#`."""
    asns: set[int] = set()
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0].upper().removeprefix("AS")
        if token.isdigit():
            asns.add(int(token))
    return frozenset(asns)
