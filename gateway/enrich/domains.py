"""Registrable domains (eTLD+1) from the Public Suffix List, for visitor ids and referrer sources.

`publicsuffixlist` ships its own copy of the list. Two views of it are loaded once per process
(about 0.1 s each): with the private suffixes (`user.github.io`, `shop.myshopify.com` are
registrable domains of their own), which is how visitors and referrer fallbacks are grouped, and
ICANN's suffixes only, for recognising a brand (`google.co.uk`) without taking
`google.blogspot.com` for Google.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

__all__ = ["ICANN", "registrable_domain"]

_PRIVATE = PublicSuffixList()
ICANN = PublicSuffixList(only_icann=True)


@lru_cache(maxsize=8192)  # the same page and referrer hosts come back all the time
def registrable_domain(host: str) -> str:
    """The registrable domain of a host, private suffixes included; the host itself for an IP
    literal, "(none)", or a name the list cannot place."""
    if host == "(none)" or not host:
        return host
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    try:
        return _PRIVATE.privatesuffix(host) or host
    except Exception:  # noqa: BLE001  # a malformed host is its own domain, not a failed request
        return host
