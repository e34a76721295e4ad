"""Server-side events (`POST /api/v1/events`): one batch body → validated events for one site.

Field names are ours (`name`, `url`, `referrer`, `props`, `revenue`, `interactive`, `hashMode`)
and, as aliases, the common ones of other ingestion APIs (docs/server-api.md). Each object is
turned into the object `/api/event` takes and validated by the same parser
(`gateway.ingest.body.parse_event`), so limits and messages are the tracker endpoint's; on top
come what only a server may send: the event's own `timestamp`, `eventId`, consent, and the
visitor (`ip` and `userAgent`, or an `anonymousId`).

Identity fields (`email`, `userId`, `traits`, ...) are never read into anything: the answer
names them once, so a sender sees they were left out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from functools import lru_cache
from urllib.parse import urlencode

from gateway.ingest.body import ParsedEvent, parse_event
from gateway.ingest.client_ip import parse_ip
from gateway.schema import SENDER_ID_MARK
from shields.model import IPAddress

__all__ = ["EVENT_ID", "IDENTITY_FIELDS", "MAX_EVENT_ID", "MAX_IGNORED", "MAX_UA", "ServerEvent", "ignored_fields",
           "normalise", "stored_event_id"]

MAX_EVENT_ID = 64
MAX_VISITOR_ID = 200
MAX_UA = 1000
_FUTURE_SECONDS = 300

_NAME = ("name", "eventName", "event_name", "event", "type", "event_type")
_URL = ("url", "pageUrl", "page_url", "page")
_PROPS = ("props", "properties", "metadata", "meta")
_REFERRER = ("referrer", "referer", "referrerUrl")
_TIME = ("timestamp", "ts", "time", "occurredAt", "occurred_at", "sentAt")
_VISITOR = ("anonymousId", "anonymous_id", "visitorId", "visitor_id")
_UA = ("userAgent", "user_agent", "ua")
EVENT_ID = ("eventId", "event_id", "messageId", "message_id")
_UTM = ("source", "medium", "campaign", "content", "term")
_UTM_KEYS = {f"utm{k.title()}": f"utm_{k}" for k in _UTM} | {f"utm_{k}": f"utm_{k}" for k in _UTM}
# Identity of the person: never stored, whatever the sender's API calls it.
IDENTITY_FIELDS = frozenset({
    "email", "userId", "user_id", "traits", "customerId", "customer_id", "contactId", "contact_id", "lead_id",
    "leadId", "alias", "phone", "firstName", "lastName", "first_name", "last_name", "fullName", "company",
    "accountId", "account_id", "externalId", "external_id", "distinct_id", "distinctId", "identify", "user",
})
# Read, then left out on purpose: no column holds them (sessions are the sink's own).
NOT_STORED = frozenset({"pageTitle", "page_title", "title", "sessionId", "session_id", "context", "channel",
                        "library", "integrations"})
_KNOWN = frozenset({*_NAME, *_URL, *_PROPS, *_REFERRER, *_TIME, *_VISITOR, *_UA, *_UTM_KEYS, *EVENT_ID, "path", "utm",
                    "ip", "revenue", "interactive", "hashMode", "consentGiven", "consent_given", "consent", "domain"})


# Built for every event of a batch, so not frozen (a frozen one costs each field an
# object.__setattr__); treated as immutable, like shields.model.Event.
@dataclass(slots=True)
class ServerEvent:
    event: ParsedEvent
    timestamp: str  # "YYYY-MM-DD HH:MM:SS", UTC: the event's own time
    event_id: str | None  # the sender's id for retries, when given
    ip: IPAddress | None
    user_agent: str | None
    visitor: str | None  # anonymousId / visitorId
    consent: bool


def stored_event_id(domain: str, event_id: str) -> str:
    """The stored `event_id` of a sender's `eventId`: the same for a retried event of the same
    site, so the sinks keep one copy. 32 characters like the gateway's own ids, but marked
    (`SENDER_ID_MARK`, then 31 hex digits) so a sink knows which ids a retry may repeat."""
    digest = hashlib.blake2b(f"{domain}\x00{event_id}".encode(), digest_size=16).hexdigest()
    return SENDER_ID_MARK + digest[:31]


_UTM_ANY = frozenset(_UTM_KEYS)
# A batch repeats its visitors' addresses and its events' seconds: both answers are pure
# functions of their input, kept in small bounded caches (a parse and a strftime, each about a
# microsecond, against a lookup).
_ip_of = lru_cache(maxsize=4096)(parse_ip)


@lru_cache(maxsize=4096)
def _stamp(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _first(obj: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    for n in names:
        v = obj.get(n)
        if v is not None:
            return n, v
    return None, None


def _timestamp(value: Any, now: float, max_age: float) -> str | float | None:
    """Unix seconds from ISO 8601 text or Unix milliseconds, or an error message."""
    if value is None:
        return now
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value) / 1000.0
        except OverflowError:  # an integer past any float: no time at all
            return None
        if not math.isfinite(seconds):
            return None
    elif isinstance(value, str) and len(value) <= 40:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    else:
        return None
    if seconds < now - max_age:
        return "is older than the accepted age"
    if seconds > now + _FUTURE_SECONDS:
        return "is more than 5 minutes in the future"
    return seconds


def _hash_mode(value: Any) -> Any:
    """`hashMode` as true/false here, as 1/0 on `/api/event` (Plausible's `h`)."""
    return int(value) if isinstance(value, bool) else value


def _bool(obj: Mapping[str, Any], names: tuple[str, ...], default: bool) -> bool | None:
    _, v = _first(obj, names)
    if v is None:
        return default
    return v if isinstance(v, bool) else None


def normalise(obj: Any, domain: str, now: float, max_age: float) -> ServerEvent | dict[str, list[str]]:
    """One object of `events` for the key's site `domain` → a `ServerEvent`, or its errors by field."""
    if not isinstance(obj, dict):
        return {"event": ["must be a JSON object"]}
    errors: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    _, name = _first(obj, _NAME)
    url_key, url = _first(obj, _URL)
    path = obj.get("path")
    if url is None and isinstance(path, str):
        url = f"https://{domain}{path if path.startswith('/') else '/' + path}"
    if url is None:
        bad("url", "is required (url, pageUrl or path)")
    elif isinstance(url, str) and url.startswith("/"):  # no scheme: a path given as the page
        url = f"https://{domain}{url}"
    utm: dict[str, str] = {}
    if not _UTM_ANY.isdisjoint(obj):  # one set test for the usual event that has none
        for key, column in _UTM_KEYS.items():
            v = obj.get(key)
            if isinstance(v, str):
                utm[column] = v
    nested = obj.get("utm")
    if isinstance(nested, dict):
        for k in _UTM:
            v = nested.get(k)
            if isinstance(v, str):
                utm[f"utm_{k}"] = v
    if utm and isinstance(url, str):  # into the query, before any #fragment; the last repeat wins
        page, hashmark, fragment = url.partition("#")
        url = page + ("&" if "?" in page else "?") + urlencode(utm) + hashmark + fragment
    _, props = _first(obj, _PROPS)
    _, referrer = _first(obj, _REFERRER)
    plain: dict[str, Any] = {"n": name, "u": url, "d": domain, "r": referrer, "p": props,
                             "revenue": obj.get("revenue"), "i": obj.get("interactive"), "h": _hash_mode(obj.get("hashMode"))}
    parsed = parse_event(plain)
    if isinstance(parsed, dict):
        for field, messages in parsed.items():
            field = {"event_name": "eventName" if name is None else "name", "url": url_key or "url",
                     "domain": "url", "props": "properties" if "properties" in obj else "props",
                     "hash_mode": "hashMode"}.get(field, field)
            for m in messages:
                bad(field, "is required" if m in ("can't be blank", "is required") and field == "eventName" else m)
        event = None
    else:
        event = parsed[0]

    when = _timestamp(_first(obj, _TIME)[1], now, max_age)
    if when is None:
        bad("timestamp", "must be ISO 8601 or Unix milliseconds")
    elif isinstance(when, str):
        bad("timestamp", when)
    _, event_id = _first(obj, EVENT_ID)
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID):
        bad("eventId", f"must be a string of 1 to {MAX_EVENT_ID} characters")
        event_id = None
    ip: IPAddress | None = None
    raw_ip = obj.get("ip")
    if raw_ip is not None:
        ip = _ip_of(raw_ip) if isinstance(raw_ip, str) and len(raw_ip) <= 64 else None
        if ip is None:
            bad("ip", "is not an IP address")
    _, ua = _first(obj, _UA)
    if ua is not None and (not isinstance(ua, str) or len(ua) > MAX_UA):
        bad("userAgent", f"must be a string of at most {MAX_UA} characters")
        ua = None
    _, visitor = _first(obj, _VISITOR)
    if visitor is not None and (not isinstance(visitor, (str, int)) or isinstance(visitor, bool)
                                or len(str(visitor)) > MAX_VISITOR_ID):
        bad("anonymousId", f"must be a string of at most {MAX_VISITOR_ID} characters")
        visitor = None
    consent = _bool(obj, ("consentGiven", "consent_given", "consent"), True)
    if consent is None:
        bad("consentGiven", "must be true or false")
    if errors or event is None or not isinstance(when, float):
        return errors or {"event": ["is invalid"]}
    stamp = _stamp(int(when))
    return ServerEvent(event, stamp, event_id, ip, ua or None, None if visitor is None else str(visitor),
                       bool(consent))


MAX_IGNORED = 50


def ignored_fields(objs: list[Any]) -> list[str]:
    """The identity and unstored field names the batch used, once each, sorted: at most
    `MAX_IGNORED` of them (each cut to 80 characters), so the answer stays small whatever is sent."""
    seen: set[str] = set()
    for obj in objs:
        if isinstance(obj, dict):
            seen.update(k[:80] for k in obj if k in IDENTITY_FIELDS or k in NOT_STORED or k not in _KNOWN)
    return sorted(seen)[:MAX_IGNORED]
