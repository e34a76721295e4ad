"""Anonymous visitor ids: a keyed 64-bit hash that cannot be reversed or recomputed later.

user_id = SipHash-2-4(daily salt; UA, client IP, site domain, registrable domain of hostname),
with the four field lengths in front so no two different inputs give the same bytes (the IP as
its 4 or 16 packed bytes). The result is stored as a signed 64-bit integer (the same bits as the
unsigned hash) so that every sink, SQLite included, can hold it natively.
"""

from __future__ import annotations

import ipaddress
import struct
from functools import lru_cache

import siphashc
from publicsuffixlist import PublicSuffixList

from shields.model import IPAddress

_PSL = PublicSuffixList()  # ships its own copy of the list; includes private suffixes


@lru_cache(maxsize=8192)
def root_domain(hostname: str) -> str:
    """Registrable domain (eTLD+1, private suffixes included) of a hostname."""
    if hostname == "(none)" or not hostname:
        return hostname
    try:
        ipaddress.ip_address(hostname.strip("[]"))
        return hostname
    except ValueError:
        pass
    return _PSL.privatesuffix(hostname) or hostname


_LENGTHS = struct.Struct(">IIII").pack


def visitor_id(salt: bytes, user_agent: str, ip: IPAddress | None, domain: str, hostname: str) -> int:
    ua = user_agent.encode("utf-8", "surrogatepass")
    addr = ip.packed if ip is not None else b""
    dom = domain.encode("utf-8", "surrogatepass")
    root = root_domain(hostname).encode("utf-8", "surrogatepass")
    # The four lengths first, then the four fields: as unambiguous as prefixing each one.
    msg = b"".join((_LENGTHS(len(ua), len(addr), len(dom), len(root)), ua, addr, dom, root))
    h: int = siphashc.siphash(salt, msg)
    return h - (1 << 64) if h >= (1 << 63) else h
