"""Who sent a request, worked out once per client: request headers → `Client`.

A visitor sends several requests per visit (the pageview, engagement events, custom events),
each with the same socket peer, proxy headers, User-Agent and browser headers. What the gateway
derives from those (the client address through the trusted proxy chain, how the request reached
the gateway, the browser the User-Agent claims, the geo answer, the geo and User-Agent columns
of its rows) is a pure function of the header values and of the geo database in use.
`ClientMemo` remembers the resulting `Client` in a bounded LRU keyed by the header values
themselves, and the request path keeps two more answers in it, each named by the type: the
verdicts of the client-only steps, and the visitor ids per site and hostname.

Nothing costly is worked out up front: the geo answer is looked up the first time a step asks
for the country or the ASN, and the row columns (a full User-Agent parse) the first time a row
is built, so a client dropped by a header check costs neither.

All of it holds until the worker's `Generation` moves (a reloaded list, geo database or site
file, a new salt): the memo then starts afresh. Addresses and User-Agents stay in this
process's memory only, as lookup keys.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache

from multidict import istr

from gateway.enrich.columns import RowColumns
from gateway.enrich.geo import GeoEnricher
from gateway.ingest.client_ip import IP_TYPES, ClientIPResolver
from gateway.schema import ClientColumns
from gateway.state.generation import Generation
from geo import Location
from shields.model import BrowserHeaders, ClientContext, IPAddress, Verdict

__all__ = ["HEADERS", "MAX_KEPT", "MAX_KEY_CHARS", "Client", "ClientMemo", "read_browser_headers"]

# Answers one remembered client keeps (verdicts, visitor ids) before it starts afresh: a few are
# enough for one visitor, and a client cannot grow them without bound.
MAX_KEPT = 32


class Client(ClientContext):
    """A client context (what the shields see) with what the request path works out for it.

    `columns` are the geo and User-Agent columns of its rows, worked out on first use. A
    remembered client also keeps `verdicts` (the raw verdict of each client-only step, by step)
    and `visitor_ids` (by site domain and hostname), valid while the worker's generation is
    still `generation`; a one-off client (`verdicts is None`) keeps nothing.
    """

    __slots__ = ("generation", "verdicts", "visitor_ids", "_columns", "_location", "_source")

    def __init__(self, ip: IPAddress | None, user_agent: str, ip_type: str | None = None,
                 country_code: str | None = None, asn: int | None = None, headers: BrowserHeaders | None = None,
                 *, columns: ClientColumns | None = None, generation: int = 0,
                 verdicts: dict[object, Verdict | None] | None = None,
                 visitor_ids: dict[tuple[str, str], int] | None = None, source: ClientMemo | None = None) -> None:
        super().__init__(ip, user_agent, ip_type, country_code, asn, headers)
        self.generation = generation
        self.verdicts = verdicts
        self.visitor_ids = visitor_ids
        self._columns = columns
        self._location: Location | None = None
        self._source = source
        if source is not None:
            self._located = False

    def _locate(self) -> tuple[str | None, int | None]:
        assert self._source is not None
        location = self._location = self._source.geo.locate(self.ip, self.ip_type)
        if location is None:
            return None, None
        return location.country_code, location.asn

    @property
    def columns(self) -> ClientColumns:
        columns = self._columns
        if columns is None:
            if not self._located:
                self._resolve()
            if self._source is None:
                columns = ClientColumns()
            else:
                columns = self._source.columns.for_client(self.user_agent, self._location)
            self._columns = columns
        return columns


# Every header the client is judged by, in the order of the memo's key.
HEADERS = ("x-forwarded-for", "x-plausible-ip-type", "cf-connecting-ip", "x-real-ip", "user-agent",
           "x-forwarded-proto", "host", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-ch-ua",
           "sec-ch-ua-mobile", "sec-ch-ua-platform", "origin", "accept-language", "accept-encoding",
           "x-forwarded-http-version", "x-forwarded-tls-version")
# The same names as multidict's case-insensitive strings: Sanic's request headers are a
# CIMultiDict, which folds a plain str key's case on every lookup but not an istr's. They are
# equal to, and hash like, the plain names, so a plain dict of headers works as well.
_KEYS = tuple(istr(name) for name in HEADERS)
_UA = 4
_PROXY_HEADERS = HEADERS[:4]
# Requests whose key would be longer than this (a long proxy chain, a padded header) are worked
# out afresh and not remembered: they are rare, and would make the memo's size unbounded in bytes.
MAX_KEY_CHARS = 2048


def _loopback(host: str | None) -> bool:
    """Whether the Host a request was addressed to is localhost or a loopback address: origins
    that browsers treat as potentially trustworthy even over plain http."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):  # [v6] or [v6]:port
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _http_version(value: str | None) -> str | None:
    """ "1.0", "1.1", "2" or "3" from what a proxy says the client spoke ("HTTP/2.0", "2", ...)."""
    if not value:
        return None
    number = value.strip().upper().removeprefix("HTTP/")
    return {"1.0": "1.0", "1.1": "1.1", "2": "2", "2.0": "2", "3": "3", "3.0": "3"}.get(number)


def _tls_version(value: str | None) -> str | None:
    """ "1.0" to "1.3" from the TLS version a proxy says the client negotiated ("TLSv1.3", as
    nginx's $ssl_protocol writes it, or "1.3"); None for anything else."""
    if not value:
        return None
    number = value.strip().upper().removeprefix("TLSV").removeprefix("TLS").strip()
    return number if number in ("1.0", "1.1", "1.2", "1.3") else None


def read_browser_headers(values: tuple[str | None, ...], from_proxy: bool, tls: bool) -> BrowserHeaders:
    """`BrowserHeaders` from the values of `HEADERS[5:]` (x-forwarded-proto, host, the browser
    headers, x-forwarded-http-version, x-forwarded-tls-version). The transport, the HTTP
    version and the TLS version are what a trusted proxy said (None if it did not), or for a
    direct request the socket's transport; a loopback Host counts only on a direct request,
    since a proxy may rewrite Host to its upstream's address."""
    proto, host, site, mode, dest, ch_ua, ch_mobile, ch_platform, origin, language, encoding, version, tls_version = values
    if from_proxy:
        transport = proto.strip().lower() if proto else None
        if transport not in ("https", "http"):
            transport = None
    else:
        transport = "https" if tls else "http"
        version = None  # the gateway's own socket speaks HTTP/1.1 whatever the client could
        tls_version = None  # a client's own word
    return BrowserHeaders(site, mode, dest, ch_ua, ch_mobile, ch_platform, origin, language, encoding,
                          transport, not from_proxy and _loopback(host), _http_version(version),
                          _tls_version(tls_version))


class ClientMemo:
    """`memo(peer, headers, tls) -> Client`, remembering up to `size` clients.

    Saves, per repeated client: the proxy walk, the claim, and (once asked for) the geo lookup,
    the User-Agent parse and the client-only shield checks (together tens of µs on a miss). The
    clients are shared between requests; the request path only adds the answers `Client` says
    it keeps."""

    __slots__ = ("_resolver", "geo", "columns", "_generation", "_seen", "_cached", "cache_info")

    def __init__(self, resolver: ClientIPResolver, geo: GeoEnricher, columns: RowColumns,
                 generation: Generation, size: int = 8192) -> None:
        self._resolver = resolver
        self.geo = geo
        self.columns = columns
        self._generation = generation
        self._seen = generation.value
        self._cached = lru_cache(maxsize=size)(self._remembered)
        self.cache_info = self._cached.cache_info

    def __call__(self, peer: str, headers: Mapping[str, str], tls: bool = False) -> Client:
        if self._generation.value != self._seen:
            self._seen = self._generation.value
            self._cached.cache_clear()
        values = tuple(map(headers.get, _KEYS))  # map over a bound method: no generator frame
        if sum(map(len, filter(None, values))) + len(peer) > MAX_KEY_CHARS:
            return self._fresh(peer, values, tls, False)
        return self._cached(peer, values, tls)

    def describe(self, ip: IPAddress | None, user_agent: str, ip_type: str | None = None,
                 headers: BrowserHeaders | None = None, *, keep: bool = False) -> Client:
        """A client for an address already known, not remembered here (`explain`, a server-side
        sender's forwarded visitor): geo and columns as a request from it would get, `ip_type`
        as a trusted proxy would have said it. With `keep`, the client keeps its client-only
        verdicts and visitor ids for as long as the caller holds it (one batch's visitor)."""
        if ip_type not in IP_TYPES:
            ip_type = None
        return Client(ip, user_agent, ip_type, headers=headers, generation=self._generation.value,
                      verdicts={} if keep else None, visitor_ids={} if keep else None, source=self)

    def _remembered(self, peer: str, values: tuple[str | None, ...], tls: bool) -> Client:
        return self._fresh(peer, values, tls, True)

    def _fresh(self, peer: str, values: tuple[str | None, ...], tls: bool, kept: bool) -> Client:
        given = {name: v for name, v in zip(_PROXY_HEADERS, values[:4]) if v is not None}
        ip, kind = self._resolver.resolve(peer, given)
        browser = read_browser_headers(values[5:], self._resolver.trusts(peer), tls)
        return Client(ip, values[_UA] or "", kind, headers=browser, generation=self._seen,
                      verdicts={} if kept else None, visitor_ids={} if kept else None, source=self)
