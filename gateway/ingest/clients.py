"""Who sent a request, worked out once per client: request headers → `Client`.

A visitor sends several requests per visit (the pageview, engagement events, custom events),
each with the same socket peer, proxy headers and User-Agent. What the gateway derives from
those (the client address through the trusted proxy chain, the geo answer and ASN, the geo and
User-Agent columns of its rows) is a pure function of the header values and of the geo database
in use. `ClientMemo` remembers the resulting `Client` in a bounded LRU keyed by the header values
themselves, and the request path keeps two more answers in it, each named by the type: the
verdicts of the client-only steps, and the visitor ids per site and hostname.

All of it holds until the worker's `Generation` moves (a reloaded list, geo database or site
file, a new salt): the memo then starts afresh. Addresses and User-Agents stay in this
process's memory only, as lookup keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from multidict import istr

from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from gateway.ingest.client_ip import IP_TYPES, ClientIPResolver
from gateway.schema import ClientColumns
from gateway.state.generation import Generation
from shields.model import ClientContext, IPAddress, Verdict

__all__ = ["HEADERS", "MAX_KEPT", "MAX_KEY_CHARS", "Client", "ClientMemo"]

# Answers one remembered client keeps (verdicts, visitor ids) before it starts afresh: a few are
# enough for one visitor, and a client cannot grow them without bound.
MAX_KEPT = 32


@dataclass(slots=True)
class Client(ClientContext):
    """A client context (what the shields see) with what the request path works out for it.

    `columns` are the geo and User-Agent columns of its rows. A remembered client also keeps
    `verdicts` (the raw verdict of each client-only step, by step) and `visitor_ids` (by site
    domain and hostname), valid while the worker's generation is still `generation`; a one-off
    client (`verdicts is None`) keeps nothing.
    """

    columns: ClientColumns = field(default_factory=ClientColumns)
    generation: int = 0
    verdicts: dict[object, Verdict | None] | None = field(default=None, repr=False)
    visitor_ids: dict[tuple[str, str], int] | None = field(default=None, repr=False)


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


class ClientMemo:
    """`memo(peer, headers) -> Client`, remembering up to `size` clients.

    Saves, per repeated client: the proxy walk, the geo lookup, the User-Agent parse and the
    client-only shield checks (together tens of µs on a miss). The clients are shared between
    requests; the request path only adds the answers `Client` says it keeps."""

    __slots__ = ("_resolver", "_geo", "_columns", "_generation", "_seen", "_cached", "cache_info")

    def __init__(self, resolver: ClientIPResolver, geo: GeoEnricher, columns: RowColumns,
                 generation: Generation, size: int = 8192) -> None:
        self._resolver = resolver
        self._geo = geo
        self._columns = columns
        self._generation = generation
        self._seen = generation.value
        self._cached = lru_cache(maxsize=size)(self._remembered)
        self.cache_info = self._cached.cache_info

    def __call__(self, peer: str, headers: Mapping[str, str]) -> Client:
        if self._generation.value != self._seen:
            self._seen = self._generation.value
            self._cached.cache_clear()
        get = headers.get
        xff = get(_XFF)
        ip_type = get(_IP_TYPE)
        cf = get(_CF)
        real_ip = get(_REAL_IP)
        ua = get(_UA) or ""
        size = len(peer) + len(ua) + len(xff or "") + len(ip_type or "") + len(cf or "") + len(real_ip or "")
        if size > MAX_KEY_CHARS:
            return self._fresh(peer, xff, ip_type, cf, real_ip, ua, False)
        return self._cached(peer, xff, ip_type, cf, real_ip, ua)

    def describe(self, ip: IPAddress | None, user_agent: str, ip_type: str | None = None) -> Client:
        """A one-off client for an address already known (`explain`): geo and columns as a
        request from it would get, `ip_type` as a trusted proxy would have said it."""
        if ip_type not in IP_TYPES:
            ip_type = None
        location = self._geo.locate(ip, ip_type)
        return Client(ip, user_agent, ip_type, location.country_code if location is not None else None,
                      location.asn if location is not None else None, self._columns.for_client(user_agent, location),
                      self._generation.value)

    def _remembered(self, peer: str, xff: str | None, ip_type: str | None, cf: str | None,
                    real_ip: str | None, ua: str) -> Client:
        return self._fresh(peer, xff, ip_type, cf, real_ip, ua, True)

    def _fresh(self, peer: str, xff: str | None, ip_type: str | None, cf: str | None,
               real_ip: str | None, ua: str, kept: bool) -> Client:
        given = {name: value for name, value in zip(HEADERS, (xff, ip_type, cf, real_ip, ua)) if value is not None}
        ip, kind = self._resolver.resolve(peer, given)
        location = self._geo.locate(ip, kind)
        country = location.country_code if location is not None else None
        asn = location.asn if location is not None else None
        return Client(ip, ua, kind, country, asn, self._columns.for_client(ua, location), self._seen,
                      {} if kept else None, {} if kept else None)
