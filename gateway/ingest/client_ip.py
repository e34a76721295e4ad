"""Who is the client: the socket peer, or what a trusted proxy says it forwarded.

Forwarding headers are honoured only when the socket peer is one of `trusted_proxies`:
anyone else could write them. With a trusted peer, `X-Forwarded-For` is walked from the right
and the first hop that is not itself a trusted proxy is the client; without that header,
`CF-Connecting-IP` then `X-Real-IP` are used. IPv4-mapped IPv6 addresses become IPv4.
Malformed values never raise: they are skipped.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from functools import lru_cache

from shields.intervals import IntervalSet, unmapped
from shields.model import IPAddress

__all__ = ["IP_TYPES", "ClientIPResolver", "parse_ip"]

IP_TYPES = frozenset({"dc_ip", "threat_ip", "anonymous_vpn_ip"})


def parse_ip(value: str) -> IPAddress | None:
    """One address as written in a header: optional brackets and port; None if unusable."""
    s = value.strip().strip('"')
    if not s or len(s) > 64:
        return None
    if s.startswith("["):  # [v6] or [v6]:port
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # v4:port
        s = s.split(":", 1)[0]
    # The C parser first (a quarter of ipaddress's cost); it accepts no more than ipaddress does,
    # and what it refuses (a zone id, a malformed address) goes through ipaddress's rules.
    try:
        if ":" in s:
            ip: IPAddress = ipaddress.IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, s), "big"))
        else:
            return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big"))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            return None
    return normalise(ip)


def normalise(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 as IPv4, and no IPv6 zone (`%eth0`)."""
    ip = unmapped(ip)
    if ip.version == 6 and ip.scope_id:
        return ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    return ip


_MAX_CACHED_HOP = 80  # an address with port, brackets and some blanks is shorter
_NO_HOP: tuple[IPAddress | None, bool] = (None, False)


class ClientIPResolver:
    """Resolves (peer address, headers) to the client IP and the trusted IP-type header."""

    __slots__ = ("_hop", "_trusted")

    def __init__(self, trusted_proxies: IntervalSet) -> None:
        self._trusted = trusted_proxies
        # Header text → (address, trusted): what parsing an address and checking it against the
        # proxies costs (a few µs) for each hop and peer, keyed by the text itself, since hashing
        # a short string is far cheaper than hashing an address object and the same proxies and
        # clients come back all the time. Pure: the proxies are fixed for the process. Bounded.
        self._hop = lru_cache(maxsize=32768)(self._read_hop)

    def _read_hop(self, text: str) -> tuple[IPAddress | None, bool]:
        ip = parse_ip(text)
        return ip, ip is not None and self._trusted.contains(ip)

    def _hop_of(self, text: str) -> tuple[IPAddress | None, bool]:
        if len(text) > _MAX_CACHED_HOP:  # never an address: not worth a cache entry
            return self._read_hop(text)
        return self._hop(text)

    def trusts(self, peer: str) -> bool:
        """Whether the socket peer is a trusted proxy (whose forwarding headers count)."""
        return bool(peer) and self._hop_of(peer)[1]

    def resolve(self, peer: str, headers: Mapping[str, str]) -> tuple[IPAddress | None, str | None]:
        """Return (client ip, ip type). `headers` must have lower-case keys (Sanic's do)."""
        peer_ip, trusted = self._hop_of(peer) if peer else _NO_HOP
        if not trusted:
            return peer_ip, None
        ip_type = headers.get("x-plausible-ip-type")
        if ip_type is not None:
            ip_type = ip_type.strip().lower()
            if ip_type not in IP_TYPES:
                ip_type = None
        xff = headers.get("x-forwarded-for")
        if xff:
            client = peer_ip
            for hop in reversed(xff.split(",")):
                ip, trusted = self._hop_of(hop)
                if ip is None:
                    break  # a hop we cannot read: trust nothing to its left
                client = ip
                if not trusted:
                    return ip, ip_type
            return client, ip_type
        for name in ("cf-connecting-ip", "x-real-ip"):
            value = headers.get(name)
            if value:
                ip = self._hop_of(value)[0]
                if ip is not None:
                    return ip, ip_type
        return peer_ip, ip_type
