"""Who sent a request, remembered per client: request headers → (`ClientContext`, columns).

A visitor sends several requests per visit (the pageview, engagement events, custom events),
each with the same socket peer, proxy headers and User-Agent. What the gateway derives from
those (the client address through the trusted proxy chain, the geo columns, the ASN) is a pure
function of the header values and of the geo database in use, and so are the geo and User-Agent
columns of the client's rows (`RowColumns.for_client`). `ClientMemo` remembers both in a bounded
LRU keyed by the header values themselves. Addresses and User-Agents stay in this
process's memory only, as in the resolver's and the geo reader's own caches.

A replaced geo database changes the answers: the owner calls `follow(generation)` (the worker's
housekeeping does, once a second) and the memo empties when the generation moved. Remembered
contexts also carry a `memo` of their own, where the shield chain keeps client-only verdicts and
the pipeline visitor ids: the owner calls `clear()` when shield lists are reloaded, and the
pipeline when the salt rotates.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from multidict import istr

from gateway.ingest.client_ip import ClientIPResolver
from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from gateway.ingest.pipeline import ClientColumns
from shields.model import ClientContext

# Every header `ClientIPResolver.resolve` or the context reads, in the order of the key.
HEADERS = ("x-forwarded-for", "x-plausible-ip-type", "cf-connecting-ip", "x-real-ip", "user-agent")
# The same names as multidict's case-insensitive strings: Sanic's request headers are a
# CIMultiDict, which folds a plain str key's case on every lookup but not an istr's. They are
# equal to, and hash like, the plain names, so a plain dict of headers works as well.
_XFF, _IP_TYPE, _CF, _REAL_IP, _UA = (istr(name) for name in HEADERS)
# Requests whose key would be longer than this (a long proxy chain, a padded User-Agent) are
# worked out afresh and not remembered: they are rare, and would make the memo's size unbounded
# in bytes.
MAX_KEY_CHARS = 1024

Client = tuple[ClientContext, ClientColumns]


class ClientMemo:
    """`memo(peer, headers) -> (ClientContext, ClientColumns)`, remembering up to `size` clients.

    The answers are shared between requests; the request path only reads them."""

    __slots__ = ("_resolver", "_geo", "_columns", "_cached", "_generation", "cache_info")

    def __init__(self, resolver: ClientIPResolver, geo: GeoEnricher, columns: RowColumns, size: int = 8192) -> None:
        self._resolver = resolver
        self._geo = geo
        self._columns = columns
        self._cached = lru_cache(maxsize=size)(self._remembered)
        self._generation = geo.generation
        self.cache_info = self._cached.cache_info

    def __call__(self, peer: str, headers: Mapping[str, str]) -> Client:
        get = headers.get
        xff = get(_XFF)
        ip_type = get(_IP_TYPE)
        cf = get(_CF)
        real_ip = get(_REAL_IP)
        ua = get(_UA) or ""
        size = len(peer) + len(ua) + len(xff or "") + len(ip_type or "") + len(cf or "") + len(real_ip or "")
        if size > MAX_KEY_CHARS:
            return self._fresh(peer, xff, ip_type, cf, real_ip, ua)
        return self._cached(peer, xff, ip_type, cf, real_ip, ua)  # type: ignore[no-any-return]

    def _remembered(self, peer: str, xff: str | None, ip_type: str | None, cf: str | None,
                    real_ip: str | None, ua: str) -> Client:
        return self._fresh(peer, xff, ip_type, cf, real_ip, ua, {})

    def _fresh(self, peer: str, xff: str | None, ip_type: str | None, cf: str | None,
               real_ip: str | None, ua: str, memo: dict[Any, Any] | None = None) -> Client:
        given = {name: value for name, value in zip(HEADERS, (xff, ip_type, cf, real_ip, ua)) if value is not None}
        ip, kind = self._resolver.resolve(peer, given)
        location, asn = self._geo.locate(ip, kind)
        return (ClientContext(ip, ua, kind, location.country_code or None, asn, memo),
                self._columns.for_client(ua, location))

    def clear(self) -> None:
        """Forget every client: call when answers kept with the contexts (`ClientContext.memo`)
        no longer hold, e.g. after shield lists were reloaded or the salt rotated."""
        self._cached.cache_clear()

    def follow(self, generation: int) -> None:
        """Forget every client if the geo data changed since the last call."""
        if generation != self._generation:
            self._generation = generation
            self._cached.cache_clear()
