"""Who is the client: the socket peer, or what a trusted proxy says it forwarded.

Forwarding headers are honoured only when the socket peer is one of `trusted_proxies`:
anyone else could write them. With a trusted peer, `X-Forwarded-For` is walked from the right
and the first hop that is not itself a trusted proxy is the client; without that header,
`CF-Connecting-IP` then `X-Real-IP` are used. IPv4-mapped IPv6 addresses become IPv4.
Malformed values never raise: they are skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

from shields.model import IPAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IP_TYPES = frozenset({"dc_ip", "threat_ip", "anonymous_vpn_ip"})


@lru_cache(maxsize=32768)  # bounded; the same clients and proxies come back again and again
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
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    return normalise(ip)


def normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
        if ip.scope_id:
            return ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    return ip


_MAX_CACHED_HOP = 80  # an address with port, brackets and some blanks is shorter
_NO_HOP: tuple[IPAddress | None, bool] = (None, False)


class ClientIPResolver:
    """Resolves (peer address, headers) to the client IP and the trusted IP-type header."""

    __slots__ = ("_hop", "_v4", "_v6")

    def __init__(self, trusted_proxies: Sequence[Network]) -> None:
        self._v4 = tuple(n for n in trusted_proxies if n.version == 4)
        self._v6 = tuple(n for n in trusted_proxies if n.version == 6)
        # Header text → (address, trusted), keyed by the text itself: hashing a short string is
        # far cheaper than hashing an address object, and the same hops come back all the time.
        self._hop = lru_cache(maxsize=32768)(self._read_hop)

    def _read_hop(self, text: str) -> tuple[IPAddress | None, bool]:
        ip = parse_ip(text)
        return ip, self._is_trusted(ip)

    def _hop_of(self, text: str) -> tuple[IPAddress | None, bool]:
        if len(text) > _MAX_CACHED_HOP:  # never an address: not worth a cache entry
            return self._read_hop(text)
        return self._hop(text)  # type: ignore[no-any-return]

    def _is_trusted(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return False
        nets = self._v4 if ip.version == 4 else self._v6
        for net in nets:
            if ip in net:
                return True
        return False

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
                ip = parse_ip(value)
                if ip is not None:
                    return ip, ip_type
        return peer_ip, ip_type
