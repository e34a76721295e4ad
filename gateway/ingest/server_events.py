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
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlencode

from gateway.ingest.body import ParsedEvent, parse_event, with_props
from gateway.ingest.client_ip import parse_ip
from gateway.schema import SENDER_ID_MARK
from shields.model import IPAddress

__all__ = ["EVENT_ID", "FIELD_NAMES", "IDENTITY_FIELDS", "MAX_EVENT_ID", "MAX_IGNORED", "MAX_UA", "NOT_STORED",
           "Batch", "ServerEvent", "normalise", "normalise_batch", "stored_event_id"]

MAX_EVENT_ID: Final = 64
MAX_VISITOR_ID: Final = 200
MAX_UA: Final = 1000
_FUTURE_SECONDS: Final = 300

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
# Identity of the person: never read into anything, whatever the sender's API calls it. Like
# every name outside `FIELD_NAMES`, listed once in the answer's `ignored`.
IDENTITY_FIELDS = frozenset({
    "email", "userId", "user_id", "traits", "customerId", "customer_id", "contactId", "contact_id", "lead_id",
    "leadId", "alias", "phone", "firstName", "lastName", "first_name", "last_name", "fullName", "company",
    "accountId", "account_id", "externalId", "external_id", "distinct_id", "distinctId", "identify", "user",
})
# Left out on purpose: no column holds them (sessions are the sink's own); listed as ignored too.
NOT_STORED = frozenset({"pageTitle", "page_title", "title", "sessionId", "session_id", "context", "channel",
                        "library", "integrations"})


# Built for every event of a batch, so not frozen (a frozen one costs each field an
# object.__setattr__); treated as immutable, like shields.model.Event. Its `__init__` is written
# out: compiled (gateway/compiled.py), it is a native call, where the one dataclasses generates
# stays plain Python.
@dataclass(slots=True, init=False)
class ServerEvent:
    event: ParsedEvent
    timestamp: str  # "YYYY-MM-DD HH:MM:SS", UTC: the event's own time
    event_id: str | None  # the sender's id for retries, when given
    ip: IPAddress | None
    address: str | None  # `ip` as sent: a batch's events are grouped by it (a text hashes in C)
    user_agent: str | None
    visitor: str | None  # anonymousId / visitorId
    consent: bool

    def __init__(self, event: ParsedEvent, timestamp: str, event_id: str | None, ip: IPAddress | None,
                 address: str | None, user_agent: str | None, visitor: str | None, consent: bool) -> None:
        self.event = event
        self.timestamp = timestamp
        self.event_id = event_id
        self.ip = ip
        self.address = address
        self.user_agent = user_agent
        self.visitor = visitor
        self.consent = consent


def stored_event_id(domain: str, event_id: str) -> str:
    """The stored `event_id` of a sender's `eventId`: the same for a retried event of the same
    site, so the sinks keep one copy. 32 characters like the gateway's own ids, but marked
    (`SENDER_ID_MARK`, then 31 hex digits) so a sink knows which ids a retry may repeat: the
    first 31 hex digits of BLAKE2b-128 over the site, a NUL and the `eventId`."""
    # Continued from the site's part, hashed once (a copy costs less than a new hash's set-up,
    # and one is made per event).
    site = _SITE_HASHES.get(domain)
    if site is None:
        site = _SITE_HASHES.put(domain, hashlib.blake2b(f"{domain}\x00".encode(), digest_size=16))
    h = site.copy()
    h.update(event_id.encode())
    return SENDER_ID_MARK + h.hexdigest()[:31]


K = TypeVar("K")
V = TypeVar("V")


class _Memo(Generic[K, V]):
    """A pure function's answers, at most `size`, started afresh when full. Each event of a
    batch asks up to four of them, so a hit must be cheap: here one dict lookup, where a
    `functools.lru_cache` hit, called from compiled code, costs several times that (its key
    tuple, its recency list): 2.6 % of a server-side event's instructions (callgrind)."""

    def __init__(self, size: int) -> None:
        self._answers: dict[K, V] = {}
        self._size = size

    def get(self, key: K) -> V | None:
        return self._answers.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._answers) >= self._size:
            self._answers.clear()
        self._answers[key] = value
        return value

    def __len__(self) -> int:
        return len(self._answers)


# A batch repeats its visitors' addresses and its events' seconds: both answers are pure
# functions of their input, kept in small bounded memos (a parse and a strftime, each about a
# microsecond, against a lookup). An address that does not parse is not kept.
_IPS: Final[_Memo[str, IPAddress]] = _Memo(4096)
_STAMPS: Final[_Memo[int, str]] = _Memo(4096)
_SITE_HASHES: Final[_Memo[str, hashlib.blake2b]] = _Memo(1024)  # a site's part of its stored event ids


def _ip_of(text: str) -> IPAddress | None:
    ip = _IPS.get(text)
    if ip is None:
        ip = parse_ip(text)
        if ip is not None:
            _IPS.put(text, ip)
    return ip


def _stamp(second: int) -> str:
    text = _STAMPS.get(second)
    if text is None:
        text = _STAMPS.put(second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S"))
    return text


def _first(obj: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    for n in names:
        v = obj.get(n)
        if v is not None:
            return n, v
    return None, None


def _timestamp(value: Any, now: float, max_age: float) -> str | float | None:
    """Unix seconds from ISO 8601 text or Unix milliseconds, or an error message."""
    if type(value) is int and 0 <= value < 1 << 53:  # Unix milliseconds, the usual spelling
        seconds = value / 1000.0
    elif value is None:
        return now
    elif isinstance(value, bool):
        return None
    elif isinstance(value, (int, float)):
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


# The fields an event may carry, each with its names in order of precedence.
_CONSENT = ("consentGiven", "consent_given", "consent")
_FIELDS: dict[str, tuple[str, ...]] = {
    "name": _NAME, "url": _URL, "props": _PROPS, "referrer": _REFERRER, "time": _TIME, "visitor": _VISITOR,
    "ua": _UA, "event_id": EVENT_ID, "consent": _CONSENT, "path": ("path",), "utm": ("utm", *_UTM_KEYS),
    "ip": ("ip",), "revenue": ("revenue",), "interactive": ("interactive",), "hash_mode": ("hashMode",),
    "domain": ("domain",),  # read and left: the key decides the site
}
_SLOT: dict[str, str] = {name: field for field, names in _FIELDS.items() for name in names}
FIELD_NAMES = frozenset(_SLOT)  # every name the normaliser reads
# The order `_Shape.keys` reads the fields in (`domain` is not read).
_READ = ("name", "url", "props", "referrer", "time", "visitor", "ua", "event_id", "consent", "path", "ip", "revenue",
         "interactive", "hash_mode")
_ABSENT: Final = 0  # a key no JSON object has (its keys are text): `dict.get` answers None for it


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to read the events whose keys are one tuple of names, in that order: worked out once
    per such tuple. A batch's events share a handful of shapes (one sender, one code path), so
    an event's fields are one lookup each by `keys`, not a pass over its keys with a lookup each
    against every alias."""

    keys: tuple[str | int, ...]  # per field of `_READ`: its first name in precedence order that is present
    spelled_twice: tuple[int, ...]  # fields present under two names: a null in the first falls to the next
    utm: bool  # some UTM field is present
    ignored: frozenset[str]  # names not read (cut to 80 characters)


def _shape(names: tuple[str, ...]) -> _Shape:
    present = set(names)
    keys: list[str | int] = []
    twice: list[int] = []
    for i, field in enumerate(_READ):
        found = [n for n in _FIELDS[field] if n in present]
        keys.append(found[0] if found else _ABSENT)
        if len(found) > 1:
            twice.append(i)
    return _Shape(tuple(keys), tuple(twice), any(_SLOT[n] == "utm" for n in names if n in _SLOT),
                  frozenset(n[:80] for n in names if n not in _SLOT))


# Shapes seen, by key tuple: bounded, and started afresh when full (a sender whose every event
# has a shape of its own gains nothing from it, and loses nothing but the memo's upkeep).
_SHAPES: Final[_Memo[tuple[str, ...], _Shape]] = _Memo(512)
_MAX_SHAPE_KEYS: Final = 40  # an event with more keys, or longer names, is read without the memo
_MAX_SHAPE_CHARS: Final = 1024


def _utm(obj: Mapping[str, Any]) -> dict[str, str]:
    """The UTM fields as query parameters: flat ones (`utm_source` over `utmSource`), then the
    `utm` object's, which win."""
    utm: dict[str, str] = {}
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
    return utm


# The tracker endpoint's validator, for the fields it reads. The usual event (a name, a page,
# perhaps a referrer, nothing else that the validator reads) is a pure function of those three
# short texts, which a batch (and the next one) repeats: the same pages, names and referrers
# again and again. Its answer is kept in a bounded cache and shared; nothing writes to a parsed
# event but the row builder's own memo of its columns, a pure function of the event too.
_MAX_MEMO_TEXT: Final = 1024


def _plain(name: Any, url: Any, domain: str, referrer: Any, props: Any = None, revenue: Any = None,
           interactive: Any = None, hash_mode: Any = None) -> list[ParsedEvent] | dict[str, list[str]]:
    return parse_event({"n": name, "u": url, "d": domain, "r": referrer, "p": props, "revenue": revenue,
                        "i": interactive, "h": hash_mode})


_PLAIN: Final[_Memo[tuple[str, str, str, str | None], list[ParsedEvent] | dict[str, list[str]]]] = _Memo(8192)


def _plain_memo(name: str, url: str, domain: str, referrer: str | None) -> list[ParsedEvent] | dict[str, list[str]]:
    key = (name, url, domain, referrer)
    parsed = _PLAIN.get(key)
    if parsed is None:
        parsed = _PLAIN.put(key, _plain(name, url, domain, referrer))
    return parsed


def _add(errors: dict[str, list[str]], field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def normalise(obj: Any, domain: str, now: float, max_age: float,
              ignored: set[str] | None = None) -> ServerEvent | dict[str, list[str]]:
    """One object of `events` for the key's site `domain` → a `ServerEvent`, or its errors by
    field. The names of identity, unstored and unknown fields go into `ignored` (cut to 80
    characters)."""
    if type(obj) is not dict:
        return {"event": ["must be a JSON object"]}
    names = tuple(obj)
    shape = _SHAPES.get(names)
    if shape is None:
        shape = _shape(names)
        if len(names) <= _MAX_SHAPE_KEYS and sum(map(len, names)) <= _MAX_SHAPE_CHARS:
            _SHAPES.put(names, shape)
    # One dict lookup per field, each by the name this shape has for it (compiled: a C call each,
    # where a `map` over the names goes through the iterator protocol and a method call per field).
    d: dict[Any, Any] = obj
    keys = shape.keys
    name = d.get(keys[0])
    url = d.get(keys[1])
    props = d.get(keys[2])
    referrer = d.get(keys[3])
    time_value = d.get(keys[4])
    visitor = d.get(keys[5])
    ua = d.get(keys[6])
    event_id = d.get(keys[7])
    consent = d.get(keys[8])
    path = d.get(keys[9])
    raw_ip = d.get(keys[10])
    revenue = d.get(keys[11])
    interactive = d.get(keys[12])
    hash_mode = d.get(keys[13])
    if shape.spelled_twice:
        values = [name, url, props, referrer, time_value, visitor, ua, event_id, consent, path, raw_ip, revenue,
                  interactive, hash_mode]
        for i in shape.spelled_twice:
            if values[i] is None:
                values[i] = _first(obj, _FIELDS[_READ[i]])[1]
        (name, url, props, referrer, time_value, visitor, ua, event_id, consent, path, raw_ip, revenue, interactive,
         hash_mode) = values
    if shape.ignored and ignored is not None:
        ignored.update(shape.ignored)
    errors: dict[str, list[str]] = {}
    if url is None and isinstance(path, str):
        url = f"https://{domain}{path if path.startswith('/') else '/' + path}"
    if url is None:
        _add(errors, "url", "is required (url, pageUrl or path)")
    elif isinstance(url, str) and url.startswith("/"):  # no scheme: a path given as the page
        url = f"https://{domain}{url}"
    if shape.utm:
        utm = _utm(obj)
        if utm and isinstance(url, str):  # into the query, before any #fragment; the last repeat wins
            page, hashmark, fragment = url.partition("#")
            url = page + ("&" if "?" in page else "?") + urlencode(utm) + hashmark + fragment
    parsed: list[ParsedEvent] | dict[str, list[str]] | None = None
    if (type(name) is str and type(url) is str and (referrer is None or type(referrer) is str)
            and revenue is None and interactive is None and hash_mode is None
            and len(url) <= _MAX_MEMO_TEXT and len(name) <= _MAX_MEMO_TEXT
            and (referrer is None or len(referrer) <= _MAX_MEMO_TEXT)):
        parsed = _plain_memo(name, url, domain, referrer)
        if props is not None:
            # Props change no other field: the memo's event plus its props, validated alone.
            # An error anywhere goes through the whole validator, which names every one.
            with_them = with_props(parsed[0], props) if type(parsed) is list else None
            parsed = [with_them] if with_them is not None else None
    if parsed is None:
        parsed = _plain(name, url, domain, referrer, props, revenue, interactive, _hash_mode(hash_mode))
    event: ParsedEvent | None = None
    if isinstance(parsed, dict):
        url_key = _first(obj, _URL)[0]
        for field, messages in parsed.items():
            field = {"event_name": "eventName" if name is None else "name", "url": url_key or "url",
                     "domain": "url", "props": "properties" if "properties" in obj else "props",
                     "hash_mode": "hashMode"}.get(field, field)
            for m in messages:
                blank = m in ("can't be blank", "is required") and field == "eventName"
                _add(errors, field, "is required" if blank else m)
    else:
        event = parsed[0]

    when = _timestamp(time_value, now, max_age)
    if when is None:
        _add(errors, "timestamp", "must be ISO 8601 or Unix milliseconds")
    elif isinstance(when, str):
        _add(errors, "timestamp", when)
    if event_id is not None and (type(event_id) is not str or not 0 < len(event_id) <= MAX_EVENT_ID):
        _add(errors, "eventId", f"must be a string of 1 to {MAX_EVENT_ID} characters")
        event_id = None
    ip: IPAddress | None = None
    if raw_ip is not None:
        ip = _ip_of(raw_ip) if type(raw_ip) is str and len(raw_ip) <= 64 else None
        if ip is None:
            _add(errors, "ip", "is not an IP address")
    if ua is not None and (type(ua) is not str or len(ua) > MAX_UA):
        _add(errors, "userAgent", f"must be a string of at most {MAX_UA} characters")
        ua = None
    if visitor is not None and (not isinstance(visitor, (str, int)) or isinstance(visitor, bool)
                                or len(str(visitor)) > MAX_VISITOR_ID):
        _add(errors, "anonymousId", f"must be a string of at most {MAX_VISITOR_ID} characters")
        visitor = None
    if consent is None:
        consent = True
    elif type(consent) is not bool:
        _add(errors, "consentGiven", "must be true or false")
    if errors or event is None or type(when) is not float:
        return errors or {"event": ["is invalid"]}
    return ServerEvent(event, _stamp(int(when)), event_id, ip, raw_ip, ua or None,
                       None if visitor is None else str(visitor), consent)


MAX_IGNORED = 50


@dataclass(slots=True)
class Batch:
    """A batch's events, validated: the valid ones, the errors of the others by position, and
    the identity, unstored and unknown field names used, once each and sorted: at most
    `MAX_IGNORED` of them (each cut to 80 characters), so the answer stays small whatever is sent."""

    valid: list[ServerEvent]
    errors: list[dict[str, Any]]
    ignored: list[str]


def normalise_batch(objs: list[Any], domain: str, now: float, max_age: float) -> Batch:
    valid: list[ServerEvent] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, obj in enumerate(objs):
        result = normalise(obj, domain, now, max_age, seen)
        if type(result) is ServerEvent:
            valid.append(result)
        else:
            errors.append({"index": i, "errors": result})
    return Batch(valid, errors, sorted(seen)[:MAX_IGNORED])
