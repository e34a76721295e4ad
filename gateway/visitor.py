"""Anonymous visitor ids: a keyed 64-bit hash that cannot be reversed or recomputed later.

user_id = SipHash-2-4(daily salt; UA, client IP, site domain, registrable domain of hostname),
each field length-prefixed so no two different inputs concatenate to the same bytes. The result
is stored as a signed 64-bit integer (the same bits as the unsigned hash) so that every sink,
SQLite included, can hold it natively.
"""

from __future__ import annotations

import ipaddress
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


def _field(value: str) -> bytes:
    b = value.encode("utf-8", "surrogatepass")
    return len(b).to_bytes(4, "big") + b


def visitor_id(salt: bytes, user_agent: str, ip: IPAddress | None, domain: str, hostname: str) -> int:
    msg = b"".join((
        _field(user_agent),
        _field(ip.compressed if ip is not None else ""),
        _field(domain),
        _field(root_domain(hostname)),
    ))
    h: int = siphashc.siphash(salt, msg)
    return h - (1 << 64) if h >= (1 << 63) else h
