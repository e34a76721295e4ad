"""Anonymous visitor ids: a keyed 64-bit hash that cannot be reversed or recomputed later.

user_id = SipHash-2-4(daily salt; UA, client IP, site domain, registrable domain of hostname),
with the four field lengths in front so no two different inputs give the same bytes (the IP as
its 4 or 16 packed bytes). The result is stored as a signed 64-bit integer (the same bits as the
unsigned hash) so that every sink, SQLite included, can hold it natively.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import siphashc

from gateway.enrich.domains import registrable_domain
from gateway.ingest.clients import MAX_KEPT, Client
from gateway.state.generation import Generation
from gateway.state.salts import SaltStore
from shields.model import IPAddress

__all__ = ["Visitors", "root_domain", "visitor_id"]

_LENGTHS = struct.Struct(">IIII").pack


def root_domain(hostname: str) -> str:
    """Registrable domain (eTLD+1, private suffixes included) of a hostname: subdomains of one
    site's domain share a visitor."""
    return registrable_domain(hostname)


@lru_cache(maxsize=4096)
def _site_part(domain: str, hostname: str) -> tuple[int, int, bytes]:
    """The lengths and bytes of the site domain and the hostname's registrable domain: the same
    for every visitor of a page's site, so worked out once."""
    dom = domain.encode("utf-8", "surrogatepass")
    root = registrable_domain(hostname).encode("utf-8", "surrogatepass")
    return len(dom), len(root), dom + root


def visitor_id(salt: bytes, user_agent: str, ip: IPAddress | None, domain: str, hostname: str) -> int:
    ua = user_agent.encode("utf-8", "surrogatepass")
    addr = ip.packed if ip is not None else b""
    dom_len, root_len, site = _site_part(domain, hostname)
    # The four lengths first, then the four fields: as unambiguous as prefixing each one.
    msg = b"".join((_LENGTHS(len(ua), len(addr), dom_len, root_len), ua, addr, site))
    h: int = siphashc.siphash(salt, msg)
    return h - (1 << 64) if h >= (1 << 63) else h


class Visitors:
    """Visitor ids for the request path, with today's salt.

    A new salt bumps the worker's generation, so remembered clients start afresh and no
    visitor id outlives its salt; a remembered client keeps its ids (per site domain and
    hostname) while its generation is current. Used by the velocity step and the row builder,
    which so agree on the id and work it out once.
    """

    __slots__ = ("_salts", "_generation", "_salt")

    def __init__(self, salts: SaltStore, generation: Generation) -> None:
        self._salts = salts
        self._generation = generation
        self._salt = salts.salts()[0]  # the day's salt when the worker starts: not a new one

    def salt(self) -> bytes:
        salt = self._salts.salts()[0]
        if salt != self._salt:
            self._salt = salt
            self._generation.bump()
        return salt

    def id_of(self, client: Client, domain: str, hostname: str) -> int:
        salt = self.salt()
        ids = client.visitor_ids
        if ids is None or client.generation != self._generation.value:
            return visitor_id(salt, client.user_agent, client.ip, domain, hostname)
        key = (domain, hostname)
        kept = ids.get(key)
        if kept is None:
            kept = visitor_id(salt, client.user_agent, client.ip, domain, hostname)
            if len(ids) >= MAX_KEPT:
                ids.clear()  # one client on many sites or hostnames: start afresh
            ids[key] = kept
        return kept
