"""Request bodies of `POST /api/event`: JSON in, validated `Event`s or Plausible-shaped errors out.

`parse_body` takes the raw body (always JSON, whatever the Content-Type: beacons send
text/plain) and returns a `ParseResult`: a whole-body error, or one `ParsedItem` per JSON
object (one for a single object, one per element of a batch array). `parse_event` turns one
JSON object into one `Event` per domain, or an errors dict such as `{"url": ["is required"]}`.

Field names, aliases, limits and error messages follow Plausible's Events API. Where we
differ on purpose, the comment at that spot says why; docs/event-api.md lists every
difference. Pure functions, no I/O, and bounded caches only (`_url_fields`, and the body memo
of `BodyParser`): nothing grows with traffic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import SplitResult, unquote_plus, urlsplit

import orjson
import regex

from gateway.enrich.columns import EventColumns
from shields.hosts import strip_www
from shields.model import Event

__all__ = [
    "MAX_DOMAINS",
    "MAX_ENGAGEMENT_MS",
    "MAX_NAME_CHARS",
    "MAX_PROPS",
    "MAX_PROP_KEY_BYTES",
    "MAX_PROP_VALUE_BYTES",
    "MAX_REFERRER_CHARS",
    "MAX_URL_BYTES",
    "UNKNOWN_SCROLL_DEPTH",
    "BodyParser",
    "ParseResult",
    "ParsedEvent",
    "ParsedItem",
    "parse_body",
    "with_props",
    "parse_event",
]

MAX_NAME_CHARS = 120  # graphemes, as Plausible counts them
MAX_URL_BYTES = 2000
MAX_REFERRER_CHARS = 2000  # graphemes; a longer referrer is cut, not refused
MAX_PROPS = 30  # more are cut, not refused
MAX_PROP_KEY_BYTES = 300
MAX_PROP_VALUE_BYTES = 2000
MAX_DOMAINS = 10  # ours: a comma list fans out to one event per domain, so it is bounded
_MAX_DOMAIN_PARTS = 100  # comma-separated parts, empty ones included
MAX_ENGAGEMENT_MS = 2_592_000_000  # 30 days; at or above it the value counts as missing
UNKNOWN_SCROLL_DEPTH = 255
_MAX_REVENUE = Decimal(10) ** 15  # what ClickHouse's Decimal64(3) can hold
_MAX_AMOUNT_TEXT = 64

# Messages, word for word as Plausible gives them, except the ones marked "ours".
_BLANK = "can't be blank"
_INVALID = "is invalid"
_REQUIRED = "is required"
_BAD_URL = "must be a valid url"
_BAD_SCHEME = "scheme is not allowed"
_NAME_TOO_LONG = f"should be at most {MAX_NAME_CHARS} character(s)"
_ENGAGEMENT = "engagement event requires a valid integer value for at least one of 'sd' or 'e' fields"
_PROPS_TOO_LONG = f"keys should have at most {MAX_PROP_KEY_BYTES} bytes and values {MAX_PROP_VALUE_BYTES} bytes"
_TOO_MANY_DOMAINS = f"should list at most {MAX_DOMAINS} domains"  # ours
_UNPARSABLE = "Unable to parse request body as json"
_NOT_OBJECT = "must be a JSON object or an array of JSON objects"  # ours
_ITEM_NOT_OBJECT = "must be a JSON object"  # ours
_EMPTY_BATCH = "a batch holds at least one event"  # ours

_ENGAGEMENT_NAME = "engagement"
# Plausible's system goals whose `path` prop is kept in step with the page path.
_PATH_SYNC_NAMES = frozenset({"404", "WP Form Completions", "Form: Submission"})
_CLICK_IDS = ("gclid", "gbraid", "wbraid", "msclkid", "fbclid", "twclid")
_QUERY_KEYS = frozenset(
    {"utm_source", "source", "ref", "utm_medium", "utm_campaign", "utm_content", "utm_term", *_CLICK_IDS}
)

_GRAPHEME = regex.compile(r"\X")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")  # what Elixir's Integer.parse takes whole
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_DECIMAL_PREFIX = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_MILLI = Decimal("0.001")

Errors = dict[str, list[str]]


# Its `__init__` is written out, taking `Event`'s fields in their order with their defaults, then
# `columns`: compiled (gateway/compiled.py), it is a native call, where the one dataclasses
# generates stays plain Python, taking its keywords as a dict (about a fifth of the validation of
# an event the validator's memo cannot answer). tests/test_request.py checks it sets every field.
@dataclass(slots=True, init=False)
class ParsedEvent(Event):
    """An `Event` as the body parser makes it, with room for its stored columns.

    The row builder works the columns out the first time the event is kept and leaves them
    here (they are a pure function of the event), so a repeated body, whose events the body
    memo hands out again, is enriched once. Nothing else is ever written to a parsed event.
    """

    columns: EventColumns | None = field(default=None, compare=False, repr=False)

    def __init__(self, name: str, domain: str, url: str, hostname: str, pathname: str,
                 referrer: str | None = None, props: tuple[tuple[str, str], ...] = (), hash_mode: bool = False,
                 interactive: bool = True, tracker_version: int = 0, scroll_depth: int = 0,
                 engagement_time: int = 0, utm_source: str | None = None, utm_medium: str | None = None,
                 utm_campaign: str | None = None, utm_content: str | None = None, utm_term: str | None = None,
                 click_id_param: str | None = None, revenue_amount: str | None = None,
                 revenue_currency: str | None = None, automation: bool = False,
                 columns: EventColumns | None = None) -> None:
        self.name = name
        self.domain = domain
        self.url = url
        self.hostname = hostname
        self.pathname = pathname
        self.referrer = referrer
        self.props = props
        self.hash_mode = hash_mode
        self.interactive = interactive
        self.tracker_version = tracker_version
        self.scroll_depth = scroll_depth
        self.engagement_time = engagement_time
        self.utm_source = utm_source
        self.utm_medium = utm_medium
        self.utm_campaign = utm_campaign
        self.utm_content = utm_content
        self.utm_term = utm_term
        self.click_id_param = click_id_param
        self.revenue_amount = revenue_amount
        self.revenue_currency = revenue_currency
        self.automation = automation
        self.columns = columns


def with_props(event: ParsedEvent, value: Any) -> ParsedEvent | None:
    """`event` as `parse_event` makes it when its object also holds the props `value` (None when
    those props are an error: the caller then validates the whole object). The other fields do
    not depend on the props, so a validated event without them (a memo's) plus this is the
    whole validation of an event with props."""
    errors: Errors = {}
    props = _props(value, event.name, event.pathname, errors)
    if errors:
        return None
    return ParsedEvent(event.name, event.domain, event.url, event.hostname, event.pathname, event.referrer, props,
                       event.hash_mode, event.interactive, event.tracker_version, event.scroll_depth,
                       event.engagement_time, event.utm_source, event.utm_medium, event.utm_campaign,
                       event.utm_content, event.utm_term, event.click_id_param, event.revenue_amount,
                       event.revenue_currency, event.automation)


# Built per request, so not frozen (see shields.model); treated as immutable.
@dataclass(slots=True)
class ParsedItem:
    """One JSON object of the body: its events (one per domain) or what is wrong with it."""

    index: int  # position in the batch; 0 for a single object
    events: list[ParsedEvent]
    errors: Errors | None = None


@dataclass(slots=True)
class ParseResult:
    """The whole body. `error` is set when nothing in it can be used; `items` is then empty."""

    error: Errors | None = None
    is_batch: bool = False
    items: list[ParsedItem] = field(default_factory=list)


def parse_body(raw: bytes | bytearray, max_batch: int = 100) -> ParseResult:
    """Decode a request body: one JSON object, or a JSON array of at most `max_batch` objects."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also invalid UTF-8, lone surrogates, NaN, nesting > 1024
        return ParseResult(error={"request": [_UNPARSABLE]})
    if isinstance(value, dict):
        return ParseResult(items=[_item(0, value)])
    if isinstance(value, list):
        if not value:
            return ParseResult(error={"request": [_EMPTY_BATCH]}, is_batch=True)
        if len(value) > max_batch:
            return ParseResult(error={"request": [f"a batch holds at most {max_batch} events"]}, is_batch=True)
        return ParseResult(is_batch=True, items=[_item(i, v) for i, v in enumerate(value)])
    return ParseResult(error={"request": [_NOT_OBJECT]})


# Bodies up to this size are remembered by `BodyParser`. The tracker's pageview body is the
# same bytes for every visitor of a page who came the same way ({"n","v","u","d","r"}), so the
# common bodies repeat; larger ones are rare and would crowd the memo.
MAX_CACHED_BODY = 1024


class BodyParser:
    """`parse_body` with a bounded memo of recent bodies, keyed by their bytes.

    The answer for a body is a pure function of its bytes, so a repeated body (the same page
    view from another visitor) costs a dictionary lookup instead of a JSON decode and the field
    checks. Results are shared between requests: the request path only reads them (events are
    never modified after parsing; a fan-out copies with `replace`)."""

    __slots__ = ("_cached", "_max_batch", "cache_info")

    def __init__(self, max_batch: int = 100, cache_size: int = 4096) -> None:
        self._max_batch = max_batch

        def parse(raw: bytes) -> ParseResult:
            return parse_body(raw, max_batch)

        self._cached = lru_cache(maxsize=cache_size)(parse)
        self.cache_info = self._cached.cache_info

    def __call__(self, raw: bytes | bytearray) -> ParseResult:
        if type(raw) is bytes and len(raw) <= MAX_CACHED_BODY:
            return self._cached(raw)
        return parse_body(raw, self._max_batch)


def _item(index: int, value: object) -> ParsedItem:
    if not isinstance(value, dict):
        return ParsedItem(index, [], {"event": [_ITEM_NOT_OBJECT]})
    parsed = parse_event(value)
    if isinstance(parsed, dict):
        return ParsedItem(index, [], parsed)
    return ParsedItem(index, parsed)


def parse_event(obj: Any) -> list[ParsedEvent] | Errors:
    """One JSON object → one `Event` per domain, or every problem found, Plausible-shaped."""
    if not isinstance(obj, dict):
        return {"event": [_ITEM_NOT_OBJECT]}
    errors: Errors = {}

    # Each short key wins unless it is absent or null, then the long one counts. Unlike
    # Plausible's `short || long`, `false` is a value, not a missing key. Written out rather
    # than in a helper: this runs for every event.
    get = obj.get
    value = get("n")
    name = _event_name(get("name") if value is None else value, errors)
    value = get("h")
    hash_mode = _hash_mode(get("hashMode") if value is None else value, errors)

    url = get("u")
    if url is None:
        url = get("url")
    url_text = ""
    hostname = "(none)"
    pathname = "/"
    tags = _NO_TAGS
    if url is None:
        _add(errors, "url", _REQUIRED)
    elif not isinstance(url, str):
        _add(errors, "url", _BAD_URL)
    else:
        fields = _url_fields(url, hash_mode) if len(url) <= _MAX_CACHED_URL else _url_fields_uncached(url, hash_mode)
        if isinstance(fields, UrlError):
            _add(errors, fields.key, fields.message)
        else:
            url_text, hostname, pathname, tags = fields

    ref = get("r")
    if ref is None:
        ref = get("referrer")
    referrer = _cut_graphemes(ref, MAX_REFERRER_CHARS) if isinstance(ref, str) else None

    props = _props(_pick4(obj, "m", "meta", "p", "props"), name, pathname, errors)

    scroll_depth = engagement_time = 0
    if name == _ENGAGEMENT_NAME:
        scroll_depth = _scroll_depth(obj.get("sd"))
        engagement_time = _engagement_time(obj.get("e"))
        if scroll_depth == UNKNOWN_SCROLL_DEPTH and engagement_time == 0:
            _add(errors, "event_name", _ENGAGEMENT)

    value = get("revenue")
    revenue = _revenue(get("$") if value is None else value)

    # Plausible reads `i || interactive`, which loses `"i": false`; here false counts.
    interactive = get("i")
    if interactive is None:
        interactive = get("interactive")
    version = get("v")

    value = get("d")
    domains = _domains(get("domain") if value is None else value, hostname, errors)

    if errors or name is None:
        return errors or {"event_name": [_BLANK]}

    utm_source, utm_medium, utm_campaign, utm_content, utm_term, click_id = tags

    first = ParsedEvent(
        name=name,
        domain=domains[0],
        url=url_text,
        hostname=hostname,
        pathname=pathname,
        referrer=referrer,
        props=props,
        hash_mode=hash_mode,
        interactive=interactive if isinstance(interactive, bool) else True,
        tracker_version=version if type(version) is int else 0,
        scroll_depth=scroll_depth,
        engagement_time=engagement_time,
        utm_source=utm_source,
        utm_medium=utm_medium,
        utm_campaign=utm_campaign,
        utm_content=utm_content,
        utm_term=utm_term,
        click_id_param=click_id,
        revenue_amount=revenue[0] if revenue else None,
        revenue_currency=revenue[1] if revenue else None,
        automation=_truthy(obj.get("b")),
    )
    if len(domains) == 1:
        return [first]
    return [first, *(replace(first, domain=d) for d in domains[1:])]


# URL → (url, hostname, pathname, query tags), or what is wrong with it. A pure function of the
# URL and the hash mode, kept in a bounded cache: the same page URLs come back again and again.
_MAX_CACHED_URL = 1024
_NO_TAGS: tuple[str | None, ...] = (None,) * 6


class UrlError(NamedTuple):
    key: str
    message: str


UrlFields = tuple[str, str, str, tuple[str | None, ...]] | UrlError


def _url_fields_uncached(url: str, hash_mode: bool) -> UrlFields:
    if _over_bytes(url, MAX_URL_BYTES):
        return UrlError("url", _BAD_URL)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" in the host
        return UrlError("url", _BAD_URL)
    if parts.scheme == "data":
        return UrlError("url", _BAD_SCHEME)
    hostname = "(none)"
    host = parts.hostname  # already lower-cased by urlsplit
    if host:
        hostname = strip_www(host.strip())
        if not hostname:  # nothing left, e.g. the host was just "www."
            return UrlError("hostname", _BLANK)
    pathname = _pathname(parts, hash_mode and "#" in url)
    if not parts.query:
        return url, hostname, pathname, _NO_TAGS
    query = _query(parts.query)
    utm_source = query.get("utm_source")
    if utm_source is None:
        utm_source = query.get("source")
        if utm_source is None:
            utm_source = query.get("ref")
    click_id = next((k for k in _CLICK_IDS if k in query), None)
    return url, hostname, pathname, (utm_source, query.get("utm_medium"), query.get("utm_campaign"),
                                     query.get("utm_content"), query.get("utm_term"), click_id)


_url_fields = lru_cache(maxsize=8192)(_url_fields_uncached)


# --- fields -------------------------------------------------------------------------------


def _pick4(obj: dict[str, Any], a: str, b: str, c: str, d: str) -> Any:
    for key in (a, b, c, d):
        value = obj.get(key)
        if value is not None:
            return value
    return None


def _add(errors: Errors, key: str, message: str) -> None:
    errors.setdefault(key, []).append(message)


def _event_name(value: Any, errors: Errors) -> str | None:
    if value is None:
        _add(errors, "event_name", _BLANK)
        return None
    if type(value) is int:  # accepted for 404 tracking; bool is not an int here
        try:
            name = str(value)
        except ValueError:  # more digits than Python will print: far over the limit anyway
            _add(errors, "event_name", _NAME_TOO_LONG)
            return None
    elif isinstance(value, str):
        name = value
    else:
        _add(errors, "event_name", _INVALID)
        return None
    if not name.strip():
        _add(errors, "event_name", _BLANK)
        return None
    if _over_graphemes(name, MAX_NAME_CHARS):
        _add(errors, "event_name", _NAME_TOO_LONG)
        return None
    return name


def _hash_mode(value: Any, errors: Errors) -> bool:
    """Plausible casts `h` to an integer (ints and integer strings) and only 1 switches it on.

    A blank string counts as absent, as Ecto's cast treats it.
    """
    if value is None:
        return False
    if type(value) is int:
        return value == 1
    if isinstance(value, str):
        if not value.strip():
            return False
        number = _int_text(value)
        if number is not None:
            return number == 1
    _add(errors, "hash_mode", _INVALID)
    return False


def _pathname(parts: SplitResult, with_fragment: bool) -> str:
    pathname = _percent_decode(parts.path).rstrip() if parts.path else "/"
    if not pathname:  # Plausible answers 400 for an all-blank path; "/" is what the page is
        pathname = "/"
    if with_fragment:
        pathname += "#" + _percent_decode(parts.fragment)
    return pathname


# The surrogates `surrogateescape` decodes undecodable bytes to (0x80 to 0xFF).
_LOW_SURROGATE = chr(0xDC80)
_HIGH_SURROGATE = chr(0xDCFF)


def _percent_decode(text: str) -> str:
    """`%XX` → byte, leniently: malformed escapes stay as they are and `+` is not a space.

    Escapes whose bytes are not UTF-8 are also kept as written (Plausible keeps the raw bytes,
    which a text column cannot hold).
    """
    if "%" not in text:
        return text
    return _ESCAPES.sub(_decode_run, text)


def _decode_run(match: re.Match[str]) -> str:
    run = match.group()
    raw = bytes.fromhex(run.replace("%", ""))
    try:
        return raw.decode()
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    at = 0  # byte offset in `raw`; each byte is one 3-character escape in `run`
    for ch in raw.decode("utf-8", "surrogateescape"):
        if _LOW_SURROGATE <= ch <= _HIGH_SURROGATE:
            out.append(run[3 * at : 3 * at + 3])
            at += 1
        else:
            out.append(ch)
            at += len(ch.encode())
    return "".join(out)


def _query(query: str) -> dict[str, str]:
    """The query parameters we use, www-form decoded ("+" is a space); the last repeat wins.

    The same as `dict(parse_qsl(query, keep_blank_values=True))` restricted to `_QUERY_KEYS`,
    at a fraction of the cost: most values need no decoding.
    """
    found: dict[str, str] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if key in _QUERY_KEYS:
            found[key] = unquote_plus(value) if "%" in value or "+" in value else value
    return found


def _domains(value: Any, hostname: str, errors: Errors) -> list[str]:
    """`d` split on commas; each trimmed, lower-cased, one leading "www." off; no empties, no repeats.

    Plausible keeps case, empty parts and repeats; a repeat would count the same visit twice.
    Without a (string) `d`, the URL's host is the domain, as in Plausible.
    """
    if not isinstance(value, str):
        if hostname and hostname != "(none)":
            return [hostname]
        _add(errors, "domain", _BLANK)
        return []
    if "," not in value:  # the usual case: one domain
        domain = strip_www(value.strip().lower())
        if domain:
            return [domain]
        _add(errors, "domain", _BLANK)
        return []
    if value.count(",") >= _MAX_DOMAIN_PARTS:  # refuse before splitting a body full of commas
        _add(errors, "domain", _TOO_MANY_DOMAINS)
        return []
    domains: list[str] = []
    for part in value.split(","):
        domain = strip_www(part.strip().lower())
        if domain and domain not in domains:
            domains.append(domain)
            if len(domains) > MAX_DOMAINS:
                _add(errors, "domain", _TOO_MANY_DOMAINS)
                return []
    if not domains:
        _add(errors, "domain", _BLANK)
    return domains


def _scroll_depth(value: Any) -> int:
    number = _int_text(value) if isinstance(value, str) else value
    if type(number) is not int or number < 0:
        return UNKNOWN_SCROLL_DEPTH
    return min(number, 100)


def _engagement_time(value: Any) -> int:
    number = _int_text(value) if isinstance(value, str) else value
    if type(number) is int and 0 <= number < MAX_ENGAGEMENT_MS:
        return number
    return 0


def _int_text(text: str) -> int | None:
    """A whole-string decimal integer, as Elixir's `Integer.parse` must consume it, else None.

    Absurdly long numbers are clamped to ±10**19: every caller only compares them with small
    bounds, and Python refuses to convert very long digit strings.
    """
    if not _INT_TEXT.fullmatch(text):
        return None
    if len(text) > 20 and len(text.lstrip("+-").lstrip("0")) > 19:
        return -(10**19) if text[0] == "-" else 10**19
    return int(text)


def _truthy(value: Any) -> bool:
    """JavaScript truthiness, since the tracker sets `b` from a JS expression."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)):
        return value != 0 and not math.isnan(value)
    return True


# --- props --------------------------------------------------------------------------------


def _props(value: Any, name: str | None, pathname: str, errors: Errors) -> tuple[tuple[str, str], ...]:
    """Custom properties: an object, or a string holding one; anything else means none.

    Pairs whose key or value is a list/object, null, or blank are dropped; numbers and booleans
    become text as Plausible writes them. The first `MAX_PROPS` in the client's order are kept
    (Plausible keeps an arbitrary 30) and stored sorted by key, as Plausible stores them.
    """
    if value is None and name not in _PATH_SYNC_NAMES:
        return ()
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        value = {}
    sync_path = name in _PATH_SYNC_NAMES and _prop_text_kept(value.get("path")) is None
    room = MAX_PROPS - 1 if sync_path else MAX_PROPS
    kept: list[tuple[str, str]] = []
    for key, raw in value.items():
        if raw is None:  # the common junk, skipped without a call
            continue
        text = _prop_text_kept(raw)
        if text is None or not isinstance(key, str) or not key.lstrip():
            continue
        kept.append((key, text))
        if len(kept) == room:  # the rest would be cut: no need to look at them
            break
    if sync_path:  # first, so that the cap cannot remove it
        kept.insert(0, ("path", pathname))
    for key, text in kept:
        if _over_bytes(key, MAX_PROP_KEY_BYTES) or _over_bytes(text, MAX_PROP_VALUE_BYTES):
            _add(errors, "props", _PROPS_TOO_LONG)
            return ()
    kept.sort()
    return tuple(kept)


def _prop_text_kept(value: Any) -> str | None:
    """The text of a prop value, or None when the pair is dropped (null, blank, list, object)."""
    text = _prop_text(value)
    return text if text is not None and text.lstrip() else None


def _prop_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        try:
            return str(value)
        except ValueError:  # too many digits to print; orjson never yields such an int
            return None
    if type(value) is float:
        return _float_text(value)
    return None  # null, lists, objects


def _float_text(value: float) -> str | None:
    """A float written the way Elixir's `to_string` writes it (Erlang's shortest form).

    The shortest round-trip digits, in plain notation unless scientific notation is shorter
    (or the magnitude is 2**53 or more): 1.5 → "1.5", 100.0 → "100.0", 1000.0 → "1.0e3",
    1.0e-5 → "1.0e-5".
    """
    if not math.isfinite(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    place = (int(exp) if exp else 0) - len(frac)  # value = int(digits) * 10**place
    trimmed = digits.rstrip("0")
    place += len(digits) - len(trimmed)
    digits = trimmed
    n = len(digits)
    exponent = place + n - 1
    exp_text = str(exponent)
    exp_cost = len(exp_text) + 2
    scientific = digits + ".0e" + exp_text if n == 1 else digits[0] + "." + digits[1:] + "e" + exp_text
    if place < 0:
        if exponent >= 0:
            return sign + digits[: n + place] + "." + digits[n + place :]
        if 2 - place - n <= exp_cost:
            return sign + "0." + "0" * (-place - n) + digits
        return sign + scientific
    dot = 1 if n == 1 else 0
    if exp_cost + dot >= place + 2 and abs(value) < 2.0**53:
        return sign + digits + "0" * place + ".0"
    return sign + scientific


# --- revenue ------------------------------------------------------------------------------


def _revenue(value: Any) -> tuple[str, str] | None:
    """(amount as decimal text, currency) from `{"amount": ..., "currency": ...}`, else None.

    As in Plausible, an invalid revenue is ignored, not an error. The amount is a number or a
    string read as far as it is a number ("12.3abc" → 12.3); it must fit ClickHouse's
    Decimal64(3) and is rounded to three decimals. The currency is three letters, upper-cased.
    """
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(value, dict) or "amount" not in value:
        return None
    currency = value.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        return None
    amount = _amount(value["amount"])
    if amount is None:
        return None
    return amount, currency.upper()


def _amount(value: Any) -> str | None:
    number: Decimal
    if type(value) is int:
        if abs(value) >= 10**15:
            return None
        number = Decimal(value)
    elif type(value) is float:
        if not math.isfinite(value):
            return None
        number = Decimal(repr(value))  # the shortest digits, as Decimal.from_float in Elixir
    elif isinstance(value, str):
        match = _DECIMAL_PREFIX.match(value)
        if match is None or len(match.group()) > _MAX_AMOUNT_TEXT:
            return None
        number = Decimal(match.group())
    else:
        return None
    if abs(number) >= _MAX_REVENUE:
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3:
        number = number.quantize(_MILLI, rounding=ROUND_HALF_UP)
    if not number:
        number = abs(number)  # no "-0"
    return format(number, "f")


# --- limits -------------------------------------------------------------------------------


def _over_bytes(text: str, limit: int) -> bool:
    """Whether UTF-8 `text` is longer than `limit` bytes, encoding only when it could be."""
    n = len(text)
    if n <= limit // 4:
        return False
    if n > limit:
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _over_graphemes(text: str, limit: int) -> bool:
    if len(text) <= limit:  # never more graphemes than code points
        return False
    return any(count > limit for count, _ in enumerate(_GRAPHEME.finditer(text), 1))


def _cut_graphemes(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    for count, match in enumerate(_GRAPHEME.finditer(text), 1):
        if count == limit:
            return text[: match.end()]
    return text
