"""The server API's normaliser (gateway/ingest/server_events.py): one object of `events` → a
validated `ServerEvent` for the key's site, or its errors by field. Unit and property tests;
tests/test_server_api.py covers the same rules through the real server."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings, strategies as st

from gateway.ingest import server_events
from gateway.ingest.server_events import (
    EVENT_ID,
    FIELD_NAMES,
    IDENTITY_FIELDS,
    MAX_EVENT_ID,
    MAX_IGNORED,
    ServerEvent,
    NOT_STORED,
    normalise,
    normalise_batch,
    stored_event_id,
)
from gateway.schema import SENDER_ID_MARK

NOW = 1_796_000_000.0  # 2026-11-29, a fixed "now"
WEEK = 7 * 86400.0
SITE = "shop.test"
BASE = {"name": "Signup", "path": "/welcome"}


def ok(obj: dict[str, Any], *, now: float = NOW, max_age: float = WEEK) -> ServerEvent:
    result = normalise(obj, SITE, now, max_age)
    assert isinstance(result, ServerEvent), result
    return result


def errors(obj: Any, *, now: float = NOW, max_age: float = WEEK) -> dict[str, list[str]]:
    result = normalise(obj, SITE, now, max_age)
    assert isinstance(result, dict), result
    return result


def ignored(objs: list[Any]) -> list[str]:
    return normalise_batch(objs, SITE, NOW, WEEK).ignored


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- timestamps ------------------------------------------------------------------------------

_IN_WINDOW = st.floats(min_value=NOW - WEEK + 1, max_value=NOW + 299, allow_nan=False)
_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(seconds=_IN_WINDOW, zone=_OFFSETS, style=st.sampled_from(["Z", "offset", "naive", "ms", "ms-float"]))
@settings(max_examples=300)
def test_a_time_in_the_window_is_stored_as_its_utc_second_whatever_its_spelling(
        seconds: float, zone: timezone, style: str) -> None:
    when = datetime.fromtimestamp(int(seconds), UTC)
    value: Any
    if style == "Z":
        value = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif style == "offset":
        value = when.astimezone(zone).isoformat()
    elif style == "naive":  # no zone means UTC
        value = when.replace(tzinfo=None).isoformat(sep=" ")
    elif style == "ms":
        value = int(seconds) * 1000 + 999  # milliseconds: the second is kept, the rest dropped
    else:
        value = int(seconds) * 1000 + 0.5
    assert ok({**BASE, "timestamp": value}).timestamp == stamp(seconds)


@given(seconds=st.floats(min_value=0, max_value=4e9, allow_nan=False), max_age=st.sampled_from([60.0, 3600.0, WEEK]))
@settings(max_examples=300)
def test_a_time_outside_the_window_is_an_error_of_its_own(seconds: float, max_age: float) -> None:
    ms = int(seconds * 1000)
    result = normalise({**BASE, "timestamp": ms}, SITE, NOW, max_age)
    if ms / 1000 < NOW - max_age:
        assert result == {"timestamp": ["is older than the accepted age"]}
    elif ms / 1000 > NOW + 300:
        assert result == {"timestamp": ["is more than 5 minutes in the future"]}
    else:
        assert isinstance(result, ServerEvent) and result.timestamp == stamp(ms / 1000)


@pytest.mark.parametrize("alias", ["timestamp", "ts", "time", "occurredAt", "occurred_at", "sentAt"])
def test_every_timestamp_alias_is_read(alias: str) -> None:
    assert ok({**BASE, alias: int((NOW - 90) * 1000)}).timestamp == stamp(NOW - 90)


def test_no_timestamp_is_the_arrival_time_and_the_first_alias_wins() -> None:
    assert ok(BASE).timestamp == stamp(NOW)
    assert ok({**BASE, "ts": int((NOW - 60) * 1000), "timestamp": int((NOW - 30) * 1000)}).timestamp == stamp(NOW - 30)
    assert ok({**BASE, "timestamp": None, "time": int((NOW - 60) * 1000)}).timestamp == stamp(NOW - 60)


@pytest.mark.parametrize("value", [True, False, "yesterday", "2026-13-01T00:00:00Z", "1796000000000", [], {},
                                   "2026-11-29T10:00:00Z" + " " * 30, float("nan"), float("inf"), 10**400])
def test_a_timestamp_that_is_no_time_is_an_error(value: Any) -> None:
    assert errors({**BASE, "timestamp": value}) == {"timestamp": ["must be ISO 8601 or Unix milliseconds"]}


def test_unix_seconds_read_as_milliseconds_are_1970_and_refused() -> None:
    assert errors({**BASE, "timestamp": int(NOW)}) == {"timestamp": ["is older than the accepted age"]}


@given(value=st.one_of(st.text(max_size=60), st.integers(), st.floats(), st.booleans(), st.none()))
@settings(max_examples=300)
def test_any_timestamp_value_is_a_time_or_an_error_never_an_exception(value: Any) -> None:
    result = normalise({**BASE, "timestamp": value}, SITE, NOW, WEEK)
    assert isinstance(result, ServerEvent) or set(result) == {"timestamp"}


# --- aliases -----------------------------------------------------------------------------------

_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "eventName", "event_name", "event", "type", "event_type"),
    "url": ("url", "pageUrl", "page_url", "page"),
    "props": ("props", "properties", "metadata", "meta"),
    "referrer": ("referrer", "referer", "referrerUrl"),
    "visitor": ("anonymousId", "anonymous_id", "visitorId", "visitor_id"),
    "ua": ("userAgent", "user_agent", "ua"),
    "event_id": EVENT_ID,
    "consent": ("consentGiven", "consent_given", "consent"),
}
_VALUES = {"name": "Purchase", "url": "https://shop.test/checkout?x=1", "props": {"plan": "pro", "n": 3},
           "referrer": "https://news.example.org/a", "visitor": "customer-77",
           "ua": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
           "event_id": "order-8841", "consent": True}


@given(pick=st.fixed_dictionaries({f: st.sampled_from(names) for f, names in _ALIASES.items()}))
@settings(max_examples=200)
def test_any_choice_of_aliases_reads_as_our_own_field_names(pick: dict[str, str]) -> None:
    ours = ok({_ALIASES[f][0]: v for f, v in _VALUES.items()})
    theirs = ok({pick[f]: v for f, v in _VALUES.items()})
    assert theirs == ours
    assert (ours.event.name, ours.visitor, ours.user_agent, ours.event_id) == (
        "Purchase", "customer-77", _VALUES["ua"], "order-8841")


@given(field=st.sampled_from(sorted(_ALIASES)), data=st.data())
def test_when_two_aliases_are_sent_the_first_in_the_documented_order_wins(field: str, data: st.DataObject) -> None:
    names = _ALIASES[field]
    assume(len(names) > 1)
    i, j = sorted(data.draw(st.lists(st.integers(0, len(names) - 1), min_size=2, max_size=2, unique=True)))
    first, second = {"name": ("Winner", "Loser"), "url": ("https://shop.test/a", "https://shop.test/b"),
                     "props": ({"k": "a"}, {"k": "b"}), "referrer": ("https://a.example/", "https://b.example/"),
                     "visitor": ("v-a", "v-b"), "ua": ("UA-a", "UA-b"), "event_id": ("id-a", "id-b"),
                     "consent": (False, True)}[field]
    base = {k: v for k, v in {**BASE, "name": "x", "url": "https://shop.test/x"}.items() if k not in names}
    result = ok({**base, names[j]: second, names[i]: first})
    assert result == ok({**base, names[0]: first})


@given(data=st.data(), field=st.sampled_from(["name", "event_id", "visitor", "ua"]))
@settings(max_examples=300)
def test_of_any_spellings_in_any_order_the_first_non_null_in_the_documented_order_wins(
        data: st.DataObject, field: str) -> None:
    names = _ALIASES[field]
    sent = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    values = {n: data.draw(st.none() | st.just(f"{field}-{n}")) for n in sent}
    base = {k: v for k, v in BASE.items() if k not in names}
    obj = {**base, **values} if data.draw(st.booleans()) else {**values, **base}
    expected = next((values[n] for n in names if values.get(n) is not None), None)
    read = normalise(obj, SITE, NOW, WEEK)
    if expected is None:
        assert field != "name" or read == {"eventName": ["is required"]}
        return
    assert isinstance(read, ServerEvent), read
    assert {"name": read.event.name, "event_id": read.event_id, "visitor": read.visitor,
            "ua": read.user_agent}[field] == expected


def test_a_null_alias_counts_as_absent_and_false_does_not() -> None:
    assert ok({"name": None, "eventName": "Signup", "path": "/"}).event.name == "Signup"
    assert ok({**BASE, "consentGiven": False, "consent": True}).consent is False


def test_a_path_or_a_page_given_as_a_path_is_on_the_keys_site() -> None:
    for obj in ({"name": "a", "path": "/welcome"}, {"name": "a", "path": "welcome"}, {"name": "a", "page": "/welcome"},
                {"name": "a", "url": "https://shop.test/welcome"}):
        event = ok(obj).event
        assert (event.hostname, event.pathname) == ("shop.test", "/welcome"), obj
    assert ok({"name": "a", "path": "/x", "url": "https://shop.test/y"}).event.pathname == "/y"  # url wins


@given(source=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20),
       medium=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20),
       spelling=st.sampled_from(["camel", "snake", "object"]))
def test_utm_fields_in_any_spelling_become_the_pages_query_tags(source: str, medium: str, spelling: str) -> None:
    utm: dict[str, Any] = {"camel": {"utmSource": source, "utmMedium": medium},
                           "snake": {"utm_source": source, "utm_medium": medium},
                           "object": {"utm": {"source": source, "medium": medium}}}[spelling]
    event = ok({"name": "a", "url": "https://shop.test/p?utm_source=old#top", **utm}).event
    assert event.url == ok({"name": "a", "url": f"https://shop.test/p?utm_source=old&utm_source={source}"
                                                 f"&utm_medium={medium}#top"}).event.url


def test_an_event_id_is_1_to_64_characters() -> None:
    assert ok({**BASE, "eventId": "x" * MAX_EVENT_ID}).event_id == "x" * MAX_EVENT_ID
    for bad in ("x" * (MAX_EVENT_ID + 1), "", 42, ["a"]):
        assert errors({**BASE, "eventId": bad}) == {"eventId": [f"must be a string of 1 to {MAX_EVENT_ID} characters"]}


# --- what is never read -------------------------------------------------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


@given(extra=st.dictionaries(st.sampled_from(sorted(IDENTITY_FIELDS | {"pageTitle", "sessionId", "context"})), _JSON,
                             min_size=1, max_size=5))
def test_identity_and_unstored_fields_change_nothing_and_are_listed_once(extra: dict[str, Any]) -> None:
    full = {**BASE, "anonymousId": "c-1", **extra}
    assert ok(full) == ok({**BASE, "anonymousId": "c-1"})
    assert ignored([full, full, {**BASE, **extra}]) == sorted(extra)


def test_identity_and_unstored_fields_are_never_among_the_names_read() -> None:
    assert IDENTITY_FIELDS.isdisjoint(FIELD_NAMES) and NOT_STORED.isdisjoint(FIELD_NAMES)


def test_a_batch_lists_unknown_names_once_sorted_and_capped() -> None:
    objs = [{**BASE, f"x{i:03}": 1, "email": "a@b.test"} for i in range(80)]
    batch = normalise_batch(objs, SITE, NOW, WEEK)
    assert len(batch.valid) == 80 and batch.errors == []
    assert batch.ignored == sorted({"email", *(f"x{i:03}" for i in range(80))})[:MAX_IGNORED]
    assert normalise_batch([{**BASE, "k" * 500: 1}], SITE, NOW, WEEK).ignored == ["k" * 80]


def test_message_id_is_read_and_not_listed_as_ignored() -> None:
    for alias in ("messageId", "message_id"):
        assert ok({**BASE, alias: "m-1"}).event_id == "m-1"
        assert ignored([{**BASE, alias: "m-1"}]) == []


@given(obj=st.dictionaries(st.sampled_from(sorted({n for names in _ALIASES.values() for n in names}
                                                   | {"path", "utm", "ip", "revenue", "interactive", "hashMode",
                                                      "timestamp", "utmSource"})), _JSON, max_size=8))
@settings(max_examples=500)
def test_any_object_is_an_event_or_errors_never_an_exception(obj: dict[str, Any]) -> None:
    result = normalise(obj, SITE, NOW, WEEK)
    assert isinstance(result, ServerEvent) or (isinstance(result, dict) and result and all(
        isinstance(v, list) and all(isinstance(m, str) for m in v) for v in result.values()))


_PROP_VALUES = st.one_of(_JSON, st.text(max_size=2100), st.dictionaries(st.text(max_size=300), _JSON, max_size=40))


@given(props=st.one_of(_PROP_VALUES, st.dictionaries(st.text(max_size=12), _PROP_VALUES, max_size=5),
                       _PROP_VALUES.map(lambda v: json.dumps({"k": v}))),
       name=st.sampled_from(["Signup", "404", "Form: Submission", "engagement", "pageview"]),
       page=st.sampled_from(["/a", "https://shop.test/b?utm_source=x#c", "https://other.test/", "nope"]))
@settings(max_examples=400)
def test_props_beside_a_memoised_page_read_as_the_whole_validator_reads_them(props: Any, name: str, page: str) -> None:
    # `interactive: true` is the default, and sends the event through the whole validator:
    # the same answer either way, fields or errors.
    event = {"name": name, "url": page, "referrer": "https://news.example/", "properties": props}
    fast, whole = normalise(event, SITE, NOW, WEEK), normalise({**event, "interactive": True}, SITE, NOW, WEEK)
    if isinstance(whole, ServerEvent):
        assert isinstance(fast, ServerEvent) and fast.event == whole.event and fast.event.props == whole.event.props
    else:
        assert fast == whole
    # and the memo's event, which the props were added to a copy of, is as it was
    bare = {k: v for k, v in event.items() if k != "properties"}
    memo, check = normalise(bare, SITE, NOW, WEEK), normalise({**bare, "interactive": True}, SITE, NOW, WEEK)
    assert memo == check if not isinstance(check, ServerEvent) else memo.event == check.event  # type: ignore[union-attr]


def test_stored_event_ids_are_marked_per_site_and_stable() -> None:
    a = stored_event_id(SITE, "order-1")
    assert a == stored_event_id(SITE, "order-1") and len(a) == 32 and a[0] == SENDER_ID_MARK
    assert all(c in "0123456789abcdef" for c in a[1:])
    assert a not in (stored_event_id("other.test", "order-1"), stored_event_id(SITE, "order-2"))
    # The derivation is part of what is stored: a batch retried after an upgrade is still
    # stored once only if every version derives the same id.
    for site, sent in ((SITE, "order-1"), ("other.test", "é" * 64), (SITE, "x")):
        digest = hashlib.blake2b(f"{site}\x00{sent}".encode(), digest_size=16).hexdigest()
        assert stored_event_id(site, sent) == SENDER_ID_MARK + digest[:31]


def test_the_normalisers_memos_stay_bounded_under_never_seen_values() -> None:
    now = datetime.now(UTC).timestamp()
    for i in range(9000):
        event = {"name": "pageview", "url": f"https://{SITE}/p{i}", "ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                 "userAgent": "curl/8", "timestamp": int((now - i) * 1000), "eventId": f"e{i}"}
        assert isinstance(normalise(event, SITE, now, 86400.0), ServerEvent)
    assert 0 < len(server_events._IPS) <= 4096 and 0 < len(server_events._STAMPS) <= 4096
    assert 0 < len(server_events._PLAIN) <= 8192
