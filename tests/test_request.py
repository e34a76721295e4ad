"""Unit tests of the request parser: body → `Event`s or Plausible-shaped errors. No server."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.body import (
    MAX_CACHED_BODY,
    MAX_DOMAINS,
    MAX_ENGAGEMENT_MS,
    BodyParser,
    ParsedEvent,
    ParsedItem,
    ParseResult,
    parse_body,
    parse_event,
)
from gateway.ingest.server_events import ServerEvent
from shields.model import Event

BASE: dict[str, Any] = {"n": "pageview", "u": "https://site.test/", "d": "site.test"}
UNPARSABLE = {"request": ["Unable to parse request body as json"]}


def events(**fields: Any) -> list[Event]:
    """Parse BASE overridden by `fields` (ABSENT removes a key, None sends null) and expect events."""
    result = parse_event(_body(fields))
    assert isinstance(result, list), result
    return result


def event(**fields: Any) -> Event:
    [one] = events(**fields)
    return one


def errors(**fields: Any) -> dict[str, list[str]]:
    result = parse_event(_body(fields))
    assert isinstance(result, dict), result
    return result


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    body = {**BASE, **fields}
    return {k: v for k, v in body.items() if v is not _ABSENT}


_ABSENT = object()
ABSENT: Any = _ABSENT


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- the body as a whole ------------------------------------------------------------------


def test_single_object_gives_one_item_at_index_0() -> None:
    result = parse_body(raw(BASE))
    assert result.error is None and result.is_batch is False
    [item] = result.items
    assert item.index == 0 and item.errors is None
    assert [e.name for e in item.events] == ["pageview"]


def test_single_invalid_object_gives_one_item_with_errors_and_no_events() -> None:
    result = parse_body(raw({"n": "pageview", "d": "site.test"}))
    assert result.error is None
    assert result.items == [ParsedItem(0, [], {"url": ["is required"]})]


@pytest.mark.parametrize("body", [b"{not json", b"", b"   ", b'{"n": "x",}', b"{'n': 'x'}", b"NaN", b"[1e400]"])
def test_unparsable_json_is_a_request_error(body: bytes) -> None:
    assert parse_body(body) == ParseResult(error=UNPARSABLE)


@pytest.mark.parametrize("body", [b'{"n": "\xff"}', b"\xfe\xff{}", b'{"n": "\xc3"}', b'"\\ud800"'])
def test_invalid_utf8_or_lone_surrogate_is_the_same_request_error(body: bytes) -> None:
    assert parse_body(body).error == UNPARSABLE


def test_nesting_deeper_than_the_decoder_allows_is_unparsable_not_a_crash() -> None:
    assert parse_body(b"[" * 5000 + b"]" * 5000).error == UNPARSABLE


@pytest.mark.parametrize("body", [b'"pageview"', b"42", b"1.5", b"null", b"true", b"false"])
def test_top_level_value_that_is_not_an_object_or_array_is_a_request_error(body: bytes) -> None:
    result = parse_body(body)
    assert result.error == {"request": ["must be a JSON object or an array of JSON objects"]}
    assert result.items == []


def test_body_is_json_whatever_it_looks_like_text_plain_or_bytes() -> None:
    assert parse_body(bytearray(raw(BASE))).items[0].events  # type: ignore[arg-type]
    assert parse_body(b"  \n" + raw(BASE) + b"\n").items[0].events


# --- the request path's memo of bodies ----------------------------------------------------

MEMO_BODIES = [
    raw(BASE),
    raw({**BASE, "r": "https://www.google.com/", "p": {"plan": "pro"}}),
    raw({"n": "pageview", "d": "site.test"}),  # invalid: no url
    raw([BASE, {**BASE, "d": "a.test,b.test"}, 5]),
    raw([BASE] * 101),  # over the batch limit
    b"{not json",
    b"\xff",
    b"42",
]


def test_the_memo_answers_what_the_parser_answers() -> None:
    parse = BodyParser(max_batch=100)
    for body in MEMO_BODIES * 2:
        assert parse(body) == parse_body(body, 100), body
    info = parse.cache_info()
    small = sum(len(b) <= MAX_CACHED_BODY for b in MEMO_BODIES)
    assert (info.hits, info.misses) == (small, small)


def test_a_repeated_body_is_parsed_once_and_its_answer_shared() -> None:
    parse = BodyParser()
    first = parse(raw(BASE))
    assert parse(bytes(raw(BASE))) is first
    assert parse(raw({**BASE, "u": "https://site.test/other"})) is not first


def test_large_or_unhashable_bodies_are_parsed_without_the_memo() -> None:
    parse = BodyParser()
    big = raw({**BASE, "p": {"k": "v" * MAX_CACHED_BODY}})
    assert parse(big) == parse_body(big) and parse(big) is not parse(big)
    assert parse(bytearray(raw(BASE))).items[0].events  # type: ignore[arg-type]
    assert parse.cache_info().currsize == 0


def test_the_memo_is_bounded() -> None:
    parse = BodyParser(cache_size=8)
    for i in range(50):
        parse(raw({**BASE, "u": f"https://site.test/{i}"}))
    assert parse.cache_info().currsize == 8


def test_the_memo_keeps_the_batch_limit_it_was_made_with() -> None:
    assert BodyParser(max_batch=2)(raw([BASE] * 3)).error == {"request": ["a batch holds at most 2 events"]}


# --- batches ------------------------------------------------------------------------------


def test_batch_parses_each_object_and_keeps_its_index() -> None:
    result = parse_body(raw([BASE, {**BASE, "u": "https://site.test/b"}]))
    assert result.error is None and result.is_batch is True
    assert [i.index for i in result.items] == [0, 1]
    assert [i.events[0].pathname for i in result.items] == ["/", "/b"]


def test_batch_reports_invalid_items_by_index_and_keeps_the_valid_ones() -> None:
    body = [BASE, {"n": "pageview", "d": "site.test"}, 5, [BASE], "x", None, {**BASE, "u": "https://site.test/c"}]
    result = parse_body(raw(body))
    assert result.error is None and result.is_batch
    by_index = {i.index: i for i in result.items}
    assert len(result.items) == 7
    assert by_index[0].errors is None and len(by_index[0].events) == 1
    assert by_index[1] == ParsedItem(1, [], {"url": ["is required"]})
    for i in (2, 3, 4, 5):
        assert by_index[i] == ParsedItem(i, [], {"event": ["must be a JSON object"]})
    assert by_index[6].events[0].pathname == "/c"


def test_batch_of_exactly_max_batch_is_accepted() -> None:
    result = parse_body(raw([BASE] * 100))
    assert result.error is None and len(result.items) == 100


def test_batch_larger_than_max_batch_is_refused_whole() -> None:
    result = parse_body(raw([BASE] * 101))
    assert result.error == {"request": ["a batch holds at most 100 events"]}
    assert result.is_batch and result.items == []


def test_max_batch_is_configurable() -> None:
    assert parse_body(raw([BASE] * 3), max_batch=3).error is None
    assert parse_body(raw([BASE] * 4), max_batch=3).error == {"request": ["a batch holds at most 3 events"]}


def test_empty_batch_is_refused() -> None:
    result = parse_body(b"[]")
    assert result.error == {"request": ["a batch holds at least one event"]}
    assert result.is_batch


def test_batch_item_with_comma_domains_fans_out_inside_its_item() -> None:
    result = parse_body(raw([{**BASE, "d": "a.test,b.test"}]))
    assert [e.domain for e in result.items[0].events] == ["a.test", "b.test"]


def test_parse_event_refuses_a_non_object() -> None:
    assert parse_event([BASE]) == {"event": ["must be a JSON object"]}  # type: ignore[arg-type]


# A value per field of the classes whose __init__ is written out, each unlike the others and
# unlike its default (a compiled class's field types are not there to derive them from).
_SAMPLE: dict[str, Any] = {
    **{name: f"{name}-value" for name in (
        "name", "domain", "url", "hostname", "pathname", "referrer", "utm_source", "utm_medium", "utm_campaign",
        "utm_content", "utm_term", "click_id_param", "revenue_amount", "revenue_currency", "timestamp",
        "event_id", "address", "user_agent", "visitor")},
    "props": (("key", "value"),), "hash_mode": True, "interactive": False, "tracker_version": 7,
    "scroll_depth": 55, "engagement_time": 3000, "automation": True, "columns": None, "consent": False,
    "ip": ipaddress.ip_address("192.0.2.1"),
    "event": ParsedEvent("pageview", "site.test", "https://site.test/", "site.test", "/"),
}


@pytest.mark.parametrize("cls", [ParsedEvent, ServerEvent])
def test_a_written_out_init_takes_every_field_by_name_and_in_order_and_sets_it(cls: type) -> None:
    # Both classes write their __init__ out (a compiled class keeps the generated one in plain
    # Python): a field added without a parameter, or a parameter left unassigned, fails here.
    names = [f.name for f in dataclasses.fields(cls)]
    assert not set(names) - set(_SAMPLE), "give the new field a sample value"
    values = {name: _SAMPLE[name] for name in names}
    by_name = cls(**values)
    in_order = cls(*values.values())
    for name, value in values.items():
        assert getattr(by_name, name) == value and getattr(in_order, name) == value, name


def test_a_parsed_events_defaults_are_an_events() -> None:
    required = {f.name: f"{f.name}-value" for f in dataclasses.fields(Event)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    parsed, plain = ParsedEvent(**required), Event(**required)
    assert all(getattr(parsed, f.name) == getattr(plain, f.name) for f in dataclasses.fields(Event))
    assert parsed.columns is None


# --- aliases ------------------------------------------------------------------------------


def test_long_names_work_alone() -> None:
    e = event(n=ABSENT, u=ABSENT, d=ABSENT, name="signup", url="https://site.test/x", domain="site.test",
              referrer="https://ref.test/", props={"a": "1"}, hashMode=1, interactive=False)
    assert (e.name, e.url, e.domain, e.referrer) == ("signup", "https://site.test/x", "site.test", "https://ref.test/")
    assert e.props == (("a", "1"),) and e.hash_mode and e.interactive is False


def test_short_names_work_alone() -> None:
    e = event(r="https://ref.test/", p={"a": "1"}, h=1, i=False, v=7, b=1)
    assert e.referrer == "https://ref.test/" and e.props == (("a", "1"),)
    assert e.hash_mode and e.interactive is False and e.tracker_version == 7 and e.automation


@pytest.mark.parametrize(("short", "long", "short_value", "long_value", "attr", "expected"), [
    ("n", "name", "short", "long", "name", "short"),
    ("u", "url", "https://site.test/s", "https://site.test/l", "pathname", "/s"),
    ("d", "domain", "s.test", "l.test", "domain", "s.test"),
    ("r", "referrer", "https://s.test/", "https://l.test/", "referrer", "https://s.test/"),
    ("i", "interactive", False, True, "interactive", False),
    ("i", "interactive", True, False, "interactive", True),
])
def test_short_name_wins_when_both_are_given(short: str, long: str, short_value: Any, long_value: Any,
                                             attr: str, expected: Any) -> None:
    body = {**BASE, short: short_value, long: long_value}
    result = parse_event(body)
    assert isinstance(result, list)
    [e] = result
    assert getattr(e, attr) == expected


def test_hash_mode_short_name_wins() -> None:
    assert event(h=0, hashMode=1, u="https://site.test/#x").pathname == "/"
    assert event(h=1, hashMode=0, u="https://site.test/#x").pathname == "/#x"


def test_null_short_name_falls_through_to_the_long_name() -> None:
    e = event(n=None, name="signup", r=None, referrer="https://l.test/", i=None, interactive=False)
    assert e.name == "signup" and e.referrer == "https://l.test/" and e.interactive is False


def test_props_aliases_in_order_m_meta_p_props() -> None:
    def first(**keys: Any) -> tuple[tuple[str, str], ...]:
        return event(**keys).props
    assert first(m={"k": "m"}, meta={"k": "meta"}, p={"k": "p"}, props={"k": "props"}) == (("k", "m"),)
    assert first(meta={"k": "meta"}, p={"k": "p"}, props={"k": "props"}) == (("k", "meta"),)
    assert first(p={"k": "p"}, props={"k": "props"}) == (("k", "p"),)
    assert first(props={"k": "props"}) == (("k", "props"),)
    assert first(m=None, props={"k": "props"}) == (("k", "props"),)


def test_revenue_long_name_wins_over_dollar_as_in_plausible() -> None:
    e = event(revenue={"amount": 1, "currency": "EUR"}, **{"$": {"amount": 2, "currency": "USD"}})
    assert (e.revenue_amount, e.revenue_currency) == ("1", "EUR")
    e = event(**{"$": {"amount": 2, "currency": "USD"}})
    assert (e.revenue_amount, e.revenue_currency) == ("2", "USD")


def test_false_short_value_is_a_value_not_a_missing_key() -> None:
    # Plausible's `n || name` would fall through to `name`; here `n: false` is an invalid name.
    assert errors(n=False, name="signup") == {"event_name": ["is invalid"]}


def test_unknown_keys_are_ignored() -> None:
    assert event(zzz=1, timestamp="2020-01-01", ip="1.2.3.4", user_agent="x").name == "pageview"


# --- interactive, tracker version, automation ---------------------------------------------


def test_interactive_defaults_to_true() -> None:
    assert event().interactive is True


def test_i_false_is_honoured() -> None:
    assert event(i=False).interactive is False
    assert event(interactive=False).interactive is False


@pytest.mark.parametrize("value", ["false", 0, 1, "no", [], {}])
def test_non_boolean_interactive_is_ignored(value: Any) -> None:
    assert event(i=value).interactive is True


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (0, 0), (-1, -1), ("3", 0), (3.0, 0), (True, 0), (None, 0)])
def test_tracker_version_is_an_integer_or_zero(value: Any, expected: int) -> None:
    assert event(v=value).tracker_version == expected


@pytest.mark.parametrize(("value", "expected"), [
    (1, True), (True, True), ("1", True), ("0", True), ([], True), ({}, True), (2.5, True),
    (0, False), (False, False), ("", False), (None, False), (0.0, False), (ABSENT, False),
])
def test_b_flags_automation_with_javascript_truthiness(value: Any, expected: bool) -> None:
    assert event(b=value).automation is expected


# --- name ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [ABSENT, None, "", "   ", "\t\n"])
def test_missing_or_blank_name_cannot_be_blank(value: Any) -> None:
    assert errors(n=value) == {"event_name": ["can't be blank"]}


@pytest.mark.parametrize("value", [True, False, 1.5, 404.0, [], {}, ["pageview"]])
def test_name_of_another_type_is_invalid(value: Any) -> None:
    assert errors(n=value) == {"event_name": ["is invalid"]}


def test_integer_name_becomes_its_decimal_text() -> None:
    assert event(n=404).name == "404"
    assert event(n=-7).name == "-7"


def test_name_is_kept_as_sent_not_trimmed() -> None:
    assert event(n=" Signup ").name == " Signup "


def test_name_length_boundary_in_characters() -> None:
    assert event(n="x" * 119).name == "x" * 119
    assert event(n="x" * 120).name == "x" * 120
    assert errors(n="x" * 121) == {"event_name": ["should be at most 120 character(s)"]}


def test_name_length_counts_graphemes_like_plausible() -> None:
    accented = "e\u0301"  # one grapheme, two code points
    assert event(n=accented * 120).name == accented * 120
    assert errors(n=accented * 121) == {"event_name": ["should be at most 120 character(s)"]}


def test_name_over_the_limit_as_an_integer() -> None:
    assert errors(n=10**125) == {"event_name": ["should be at most 120 character(s)"]}


# --- url, hostname ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [ABSENT, None])
def test_missing_url_is_required(value: Any) -> None:
    assert errors(u=value) == {"url": ["is required"]}


@pytest.mark.parametrize("value", [123, True, False, [], {}, ["https://site.test/"], 1.5])
def test_url_that_is_not_a_string_is_not_a_valid_url(value: Any) -> None:
    assert errors(u=value) == {"url": ["must be a valid url"]}


def test_url_length_boundary_in_bytes() -> None:
    prefix = "https://site.test/"
    assert event(u=prefix + "a" * (1999 - len(prefix))).url
    assert event(u=prefix + "a" * (2000 - len(prefix))).url
    assert errors(u=prefix + "a" * (2001 - len(prefix))) == {"url": ["must be a valid url"]}


def test_url_length_counts_utf8_bytes_not_characters() -> None:
    prefix = "https://site.test/"  # 18 bytes; "é" is 2 bytes
    assert event(u=prefix + "é" * 991).url  # 2000 bytes
    assert errors(u=prefix + "é" * 991 + "a") == {"url": ["must be a valid url"]}  # 2001 bytes, 1010 characters


@pytest.mark.parametrize("value", ["data:text/html,<h1>x</h1>", "DATA:text/plain,x", "Data:,"])
def test_data_scheme_is_not_allowed(value: str) -> None:
    assert errors(u=value) == {"url": ["scheme is not allowed"]}


@pytest.mark.parametrize("value", ["http://[::1", "https://[not-an-ip]/"])
def test_url_that_does_not_parse_is_not_a_valid_url(value: str) -> None:
    assert errors(u=value) == {"url": ["must be a valid url"]}


def test_every_problem_is_listed_at_once() -> None:
    assert parse_event({}) == {"event_name": ["can't be blank"], "url": ["is required"], "domain": ["can't be blank"]}
    assert parse_event({"n": 1.5, "u": "data:,x", "h": "yes", "d": ""}) == {
        "event_name": ["is invalid"], "hash_mode": ["is invalid"], "url": ["scheme is not allowed"],
        "domain": ["can't be blank"],
    }


@pytest.mark.parametrize(("url", "hostname"), [
    ("https://site.test/", "site.test"),
    ("https://WWW.Site.TEST/", "site.test"),
    ("https://www.site.test:8443/x", "site.test"),
    ("https://www.www.site.test/", "www.site.test"),
    ("https://user:pw@shop.site.test/", "shop.site.test"),
    ("https://wwwsite.test/", "wwwsite.test"),
    ("chrome-extension://abcdef/popup.html", "abcdef"),
    ("/relative/path", "(none)"),
    ("about:config", "(none)"),
    ("file:///home/x.html", "(none)"),
    ("", "(none)"),
])
def test_hostname_is_lower_cased_without_www_or_none(url: str, hostname: str) -> None:
    assert event(u=url).hostname == hostname


def test_host_that_is_only_www_is_a_blank_hostname() -> None:
    assert errors(u="https://www./") == {"hostname": ["can't be blank"]}


def test_url_is_kept_as_sent() -> None:
    url = "https://WWW.Site.test/A%20b?utm_source=x#frag"
    assert event(u=url).url == url


# --- pathname and hash mode ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "pathname"), [
    ("https://site.test", "/"),
    ("https://site.test/", "/"),
    ("https://site.test/a/b/", "/a/b/"),
    ("https://site.test/a%20b", "/a b"),
    ("https://site.test/caf%C3%A9", "/café"),
    ("https://site.test/café", "/café"),
    ("https://site.test/a+b", "/a+b"),
    ("https://site.test/a%2Bb", "/a+b"),
    ("https://site.test/a%2fb", "/a/b"),
    ("https://site.test/a?x=1", "/a"),
    ("https://site.test/a#frag", "/a"),
    ("https://site.test/a%20", "/a"),
    ("https://site.test/a%20%09", "/a"),
    ("https://site.test/%20a", "/ a"),
    ("https://site.test/%20", "/"),
    ("https://site.test%20", "/"),
    ("/just/a/path", "/just/a/path"),
])
def test_pathname_is_percent_decoded_and_trimmed_at_the_end(url: str, pathname: str) -> None:
    assert event(u=url).pathname == pathname


@pytest.mark.parametrize(("url", "pathname"), [
    ("https://site.test/a%zz", "/a%zz"),
    ("https://site.test/a%4", "/a%4"),
    ("https://site.test/a%", "/a%"),
    ("https://site.test/%%41", "/%A"),
    ("https://site.test/%FF", "/%FF"),
    ("https://site.test/%ff%C3%A9", "/%ffé"),
    ("https://site.test/%C3", "/%C3"),
    ("https://site.test/%C3%A9%C3", "/é%C3"),
    ("https://site.test/%ED%A0%80", "/%ED%A0%80"),
])
def test_invalid_escapes_are_kept_as_written(url: str, pathname: str) -> None:
    assert event(u=url).pathname == pathname


def test_hash_mode_appends_the_fragment() -> None:
    assert event(u="https://site.test/#/pricing", h=1).pathname == "/#/pricing"
    assert event(u="https://site.test/app#/a%20b", h=1).pathname == "/app#/a b"
    assert event(u="https://site.test/app?x=1#/p", h=1).pathname == "/app#/p"
    assert event(u="https://site.test/app#/p", h=1).hash_mode is True


def test_hash_mode_keeps_an_empty_fragment_marker() -> None:
    assert event(u="https://site.test/app#", h=1).pathname == "/app#"


def test_hash_mode_without_a_fragment_leaves_the_path() -> None:
    assert event(u="https://site.test/app", h=1).pathname == "/app"


@pytest.mark.parametrize(("value", "on"), [(1, True), ("1", True), ("+1", True), ("01", True),
                                           (0, False), (2, False), (-1, False), ("0", False), ("2", False)])
def test_hash_mode_is_on_only_for_integer_1(value: Any, on: bool) -> None:
    e = event(u="https://site.test/a#b", h=value)
    assert e.hash_mode is on
    assert e.pathname == ("/a#b" if on else "/a")


@pytest.mark.parametrize("value", ["yes", " 1", "1.0", "1 ", True, False, 1.0, [], {}])
def test_hash_mode_that_is_not_an_integer_is_invalid(value: Any) -> None:
    assert errors(h=value) == {"hash_mode": ["is invalid"]}


@pytest.mark.parametrize("value", ["", "  "])
def test_blank_hash_mode_counts_as_absent(value: str) -> None:
    assert event(u="https://site.test/a#b", h=value).pathname == "/a"


# --- query: UTM and click ids -------------------------------------------------------------


def test_no_query_gives_no_utm_fields() -> None:
    e = event(u="https://site.test/a")
    assert (e.utm_source, e.utm_medium, e.utm_campaign, e.utm_content, e.utm_term, e.click_id_param) == (None,) * 6


def test_utm_fields_are_read_from_the_query() -> None:
    e = event(u="https://site.test/?utm_source=news&utm_medium=email&utm_campaign=fall&utm_content=top&utm_term=shoes")
    assert (e.utm_source, e.utm_medium, e.utm_campaign, e.utm_content, e.utm_term) == (
        "news", "email", "fall", "top", "shoes")


@pytest.mark.parametrize(("query", "source"), [
    ("utm_source=a&source=b&ref=c", "a"),
    ("source=b&ref=c", "b"),
    ("ref=c", "c"),
    ("ref=c&source=b", "b"),
    ("utm_source=&source=b", ""),
    ("UTM_SOURCE=a", None),
])
def test_utm_source_falls_back_to_source_then_ref(query: str, source: str | None) -> None:
    assert event(u=f"https://site.test/?{query}").utm_source == source


def test_query_values_are_www_form_decoded() -> None:
    e = event(u="https://site.test/?utm_campaign=fall+sale&utm_term=caf%C3%A9%20x&utm_content=a%2Bb")
    assert (e.utm_campaign, e.utm_term, e.utm_content) == ("fall sale", "café x", "a+b")


def test_encoded_query_keys_are_decoded_too() -> None:
    assert event(u="https://site.test/?utm%5Fsource=x").utm_source == "x"


def test_last_repeated_query_key_wins() -> None:
    assert event(u="https://site.test/?utm_source=a&utm_source=b").utm_source == "b"


def test_query_key_without_value_is_present_and_empty() -> None:
    e = event(u="https://site.test/?utm_medium&gclid")
    assert e.utm_medium == "" and e.click_id_param == "gclid"


def test_question_mark_inside_the_fragment_is_not_a_query() -> None:
    assert event(u="https://site.test/#x?utm_source=a").utm_source is None


@pytest.mark.parametrize("click_id", ["gclid", "gbraid", "wbraid", "msclkid", "fbclid", "twclid"])
def test_each_click_id_is_recorded_by_its_parameter_name(click_id: str) -> None:
    assert event(u=f"https://site.test/?{click_id}=abc123").click_id_param == click_id


def test_first_click_id_in_the_fixed_order_wins_not_the_url_order() -> None:
    assert event(u="https://site.test/?twclid=1&fbclid=2&gclid=3").click_id_param == "gclid"
    assert event(u="https://site.test/?twclid=1&msclkid=2").click_id_param == "msclkid"


def test_unknown_click_id_like_parameters_are_ignored() -> None:
    assert event(u="https://site.test/?GCLID=1&yclid=2").click_id_param is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["utm_source", "source", "ref", "utm_medium", "utm_term", "utm%5Fterm",
                                            "gclid", "fbclid", "other", ""]),
                          st.text(alphabet="ab+%2C0é=&", max_size=6)), max_size=6))
def test_query_fields_match_the_standard_www_form_decoder(pairs: list[tuple[str, str]]) -> None:
    query = "&".join(f"{k}={v}" for k, v in pairs)
    e = event(u="https://site.test/p?" + query)
    expected = dict(parse_qsl(query, keep_blank_values=True))
    source = expected.get("utm_source")
    source = expected.get("source") if source is None else source
    source = expected.get("ref") if source is None else source
    assert e.utm_source == source
    assert (e.utm_medium, e.utm_term) == (expected.get("utm_medium"), expected.get("utm_term"))
    assert e.click_id_param == next((k for k in ("gclid", "fbclid") if k in expected), None)


# --- domains ------------------------------------------------------------------------------


def test_comma_separated_domains_give_one_event_each() -> None:
    got = events(d="a.test,b.test,c.test")
    assert [e.domain for e in got] == ["a.test", "b.test", "c.test"]
    assert {(e.name, e.url, e.pathname) for e in got} == {("pageview", "https://site.test/", "/")}


def test_domains_are_trimmed_lower_cased_stripped_of_www_deduplicated_and_empties_dropped() -> None:
    got = events(d=" Site.Test , ,www.B.test,site.test,WWW.site.test,, www.www.c.test ")
    assert [e.domain for e in got] == ["site.test", "b.test", "www.c.test"]


@pytest.mark.parametrize("value", ["", "   ", ",", " , ,", "www.", "www., WWW."])
def test_domain_with_nothing_left_cannot_be_blank(value: str) -> None:
    assert errors(d=value) == {"domain": ["can't be blank"]}


@pytest.mark.parametrize("value", [ABSENT, None, 123, ["a.test"], {"d": "a.test"}, True])
def test_without_a_string_domain_the_url_host_is_used(value: Any) -> None:
    assert event(d=value, u="https://WWW.Shop.test/x").domain == "shop.test"


def test_without_domain_and_without_url_host_the_domain_cannot_be_blank() -> None:
    assert errors(d=ABSENT, u="/relative") == {"domain": ["can't be blank"]}
    assert errors(d=ABSENT, u=ABSENT) == {"url": ["is required"], "domain": ["can't be blank"]}


def test_domain_count_boundary() -> None:
    nine = ",".join(f"s{i}.test" for i in range(MAX_DOMAINS - 1))
    ten = ",".join(f"s{i}.test" for i in range(MAX_DOMAINS))
    eleven = ",".join(f"s{i}.test" for i in range(MAX_DOMAINS + 1))
    assert len(events(d=nine)) == MAX_DOMAINS - 1
    assert len(events(d=ten)) == MAX_DOMAINS
    assert errors(d=eleven) == {"domain": [f"should list at most {MAX_DOMAINS} domains"]}


def test_repeated_domains_do_not_count_towards_the_limit() -> None:
    assert len(events(d=",".join(["a.test", "A.test", "www.a.test"] * 20))) == 1


# --- referrer -----------------------------------------------------------------------------


def test_referrer_is_kept_as_sent() -> None:
    assert event(r="https://www.Google.com/search?q=x").referrer == "https://www.Google.com/search?q=x"
    assert event(r="").referrer == ""


@pytest.mark.parametrize("value", [ABSENT, None, 1, True, [], {}])
def test_referrer_that_is_not_a_string_is_ignored(value: Any) -> None:
    assert event(r=value).referrer is None


def test_referrer_is_cut_to_2000_characters() -> None:
    assert event(r="r" * 1999).referrer == "r" * 1999
    assert event(r="r" * 2000).referrer == "r" * 2000
    assert event(r="r" * 2001).referrer == "r" * 2000
    assert event(r="r" * 50_000).referrer == "r" * 2000


def test_referrer_cut_counts_graphemes_like_plausible() -> None:
    accented = "e\u0301"
    assert event(r=accented * 2001).referrer == accented * 2000


# --- props --------------------------------------------------------------------------------


def test_props_object_is_stored_as_sorted_pairs() -> None:
    assert event(p={"b": "2", "a": "1", "c": "3"}).props == (("a", "1"), ("b", "2"), ("c", "3"))


def test_props_given_as_a_json_string_holding_an_object() -> None:
    assert event(p='{"plan": "pro", "n": 2}').props == (("n", "2"), ("plan", "pro"))


@pytest.mark.parametrize("value", ['["a"]', '"x"', "not json", "", "12", [["a", "b"]], 5, True, "null"])
def test_props_that_are_not_an_object_are_ignored(value: Any) -> None:
    assert event(p=value).props == ()


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (12, "12"), (-3, "-3"), (0, "0"),
    (1.5, "1.5"), (100.0, "100.0"), (1000.0, "1.0e3"), (12000.0, "1.2e4"), (1e20, "1.0e20"),
    (0.001, "0.001"), (0.0001, "1.0e-4"), (1.0e-5, "1.0e-5"), (-2.5, "-2.5"), (0.0, "0.0"),
    (-0.0, "-0.0"), (123456789.0, "123456789.0"), (0.1 + 0.2, "0.30000000000000004"),
    (9007199254740991.0, "9007199254740991.0"), (9007199254740992.0, "9.007199254740992e15"),
])
def test_numbers_and_booleans_become_text_the_way_plausible_writes_them(value: Any, text: str) -> None:
    assert event(p={"k": value}).props == (("k", text),)


def test_props_drop_null_empty_blank_list_and_object_values_and_blank_keys() -> None:
    props = {"null": None, "empty": "", "blank": "  ", "list": [1], "obj": {"a": 1}, "": "x", "  ": "y",
             "kept": "ok", "lead": " x", "zero": 0}
    assert event(p=props).props == (("kept", "ok"), ("lead", " x"), ("zero", "0"))


def test_at_most_30_props_are_kept_the_first_30_sent() -> None:
    sent = {f"k{i:02d}": str(i) for i in range(35)}
    kept = event(p=sent).props
    assert len(kept) == 30
    assert [k for k, _ in kept] == [f"k{i:02d}" for i in range(30)]


def test_dropped_props_do_not_count_towards_the_30() -> None:
    sent = {"a_null": None, **{f"k{i:02d}": str(i) for i in range(30)}}
    assert len(event(p=sent).props) == 30


def test_prop_key_length_boundary_in_bytes() -> None:
    message = {"props": ["keys should have at most 300 bytes and values 2000 bytes"]}
    assert event(p={"k" * 300: "v"}).props == (("k" * 300, "v"),)
    assert errors(p={"k" * 301: "v"}) == message
    assert event(p={"é" * 150: "v"}).props  # 300 bytes
    assert errors(p={"é" * 150 + "k": "v"}) == message  # 301 bytes, 151 characters


def test_prop_value_length_boundary_in_bytes() -> None:
    message = {"props": ["keys should have at most 300 bytes and values 2000 bytes"]}
    assert event(p={"k": "v" * 1999}).props
    assert event(p={"k": "v" * 2000}).props == (("k", "v" * 2000),)
    assert errors(p={"k": "v" * 2001}) == message
    assert errors(p={"k": "€" * 667}) == message  # 2001 bytes, 667 characters


def test_oversized_prop_beyond_the_30_kept_does_not_fail_the_event() -> None:
    sent = {**{f"k{i:02d}": "v" for i in range(30)}, "late": "v" * 5000}
    assert len(event(p=sent).props) == 30


def test_404_event_gets_the_page_path_as_its_path_prop() -> None:
    e = event(n="404", u="https://site.test/missing%20page", p={"other": "x"})
    assert e.props == (("other", "x"), ("path", "/missing page"))
    assert event(n=404, u="https://site.test/gone").props == (("path", "/gone"),)


def test_404_path_prop_survives_the_30_cap_and_a_sent_path_is_kept() -> None:
    sent = {f"k{i:02d}": "v" for i in range(40)}
    kept = dict(event(n="404", u="https://site.test/gone", p=sent).props)
    assert len(kept) == 30 and kept["path"] == "/gone"
    assert event(n="404", p={"path": "/mine"}).props == (("path", "/mine"),)


@pytest.mark.parametrize("name", ["WP Form Completions", "Form: Submission"])
def test_other_system_goals_get_the_path_prop_too(name: str) -> None:
    assert event(n=name, u="https://site.test/contact").props == (("path", "/contact"),)


def test_ordinary_events_get_no_path_prop() -> None:
    assert event(n="Signup", u="https://site.test/contact").props == ()


# --- engagement ---------------------------------------------------------------------------


def engagement(**fields: Any) -> Event:
    return event(n="engagement", **fields)


def test_engagement_reads_scroll_depth_and_time() -> None:
    e = engagement(sd=50, e=1200)
    assert (e.scroll_depth, e.engagement_time) == (50, 1200)


@pytest.mark.parametrize(("sd", "expected"), [
    (0, 0), (1, 1), (99, 99), (100, 100), (101, 100), (10**6, 100),
    ("101", 100), ("50", 50), ("+5", 5), ("9" * 30, 100),
    (-1, 255), ("-1", 255), (50.0, 255), (50.5, 255), ("12asd", 255), (" 25", 255), ("null", 255),
    ("", 255), (True, 255), ([50], 255), (None, 255), (ABSENT, 255),
])
def test_scroll_depth_is_clamped_to_100_and_255_when_unknown(sd: Any, expected: int) -> None:
    assert engagement(sd=sd, e=1000).scroll_depth == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (1, 1), (MAX_ENGAGEMENT_MS - 1, MAX_ENGAGEMENT_MS - 1), (MAX_ENGAGEMENT_MS, 0),
    (-1, 0), ("1000", 1000), ("1000ms", 0), (1000.0, 0), (True, 0), (None, 0), ("9" * 40, 0),
])
def test_engagement_time_is_milliseconds_below_30_days_else_missing(value: Any, expected: int) -> None:
    assert engagement(sd=10, e=value).engagement_time == expected


@pytest.mark.parametrize("fields", [{}, {"e": 0}, {"sd": -5}, {"sd": "x", "e": "y"}, {"e": MAX_ENGAGEMENT_MS}])
def test_engagement_without_a_valid_sd_or_e_is_refused(fields: dict[str, Any]) -> None:
    assert errors(n="engagement", **fields) == {
        "event_name": ["engagement event requires a valid integer value for at least one of 'sd' or 'e' fields"]}


def test_engagement_with_only_scroll_depth_zero_is_valid() -> None:
    e = engagement(sd=0)
    assert (e.scroll_depth, e.engagement_time) == (0, 0)


def test_engagement_with_only_time_has_unknown_scroll_depth() -> None:
    e = engagement(e=500)
    assert (e.scroll_depth, e.engagement_time) == (255, 500)


def test_other_events_ignore_sd_and_e() -> None:
    e = event(n="pageview", sd=80, e=5000)
    assert (e.scroll_depth, e.engagement_time) == (0, 0)
    e = event(n="Engagement", sd=80, e=5000)  # the reserved name is exact
    assert (e.scroll_depth, e.engagement_time) == (0, 0)


# --- revenue ------------------------------------------------------------------------------


def revenue(value: Any) -> tuple[str | None, str | None]:
    e = event(n="Purchase", revenue=value)
    return e.revenue_amount, e.revenue_currency


@pytest.mark.parametrize(("value", "expected"), [
    ({"amount": 29.5, "currency": "EUR"}, ("29.5", "EUR")),
    ({"amount": 10, "currency": "USD"}, ("10", "USD")),
    ({"amount": "12.30", "currency": "USD"}, ("12.30", "USD")),
    ({"amount": "12.3abc", "currency": "USD"}, ("12.3", "USD")),
    ({"amount": "1e3", "currency": "USD"}, ("1000", "USD")),
    ({"amount": ".5", "currency": "USD"}, ("0.5", "USD")),
    ({"amount": "-5", "currency": "USD"}, ("-5", "USD")),
    ({"amount": 0.1, "currency": "USD"}, ("0.1", "USD")),
    ({"amount": 1.2345, "currency": "USD"}, ("1.235", "USD")),
    ({"amount": "-0.0001", "currency": "USD"}, ("0.000", "USD")),
    ({"amount": 999999999999999, "currency": "JPY"}, ("999999999999999", "JPY")),
    ({"amount": 1, "currency": "eur"}, ("1", "EUR")),
    ('{"amount": 3, "currency": "GBP"}', ("3", "GBP")),
])
def test_valid_revenue_is_kept_as_decimal_text_and_currency(value: Any, expected: tuple[str, str]) -> None:
    assert revenue(value) == expected


@pytest.mark.parametrize("value", [
    {"amount": 1}, {"currency": "EUR"}, {"amount": 1, "currency": "EURO"}, {"amount": 1, "currency": "E1R"},
    {"amount": 1, "currency": 978}, {"amount": 1, "currency": None}, {"amount": "abc", "currency": "EUR"},
    {"amount": "", "currency": "EUR"}, {"amount": " 1", "currency": "EUR"}, {"amount": True, "currency": "EUR"},
    {"amount": None, "currency": "EUR"}, {"amount": [1], "currency": "EUR"}, {"amount": "Infinity", "currency": "EUR"},
    {"amount": "NaN", "currency": "EUR"}, {"amount": 10**15, "currency": "EUR"}, {"amount": 1e15, "currency": "EUR"},
    {"amount": "1e400", "currency": "EUR"}, {"amount": "1" * 65, "currency": "EUR"},
    "not json", '["a"]', 12, [1, "EUR"], True,
])
def test_invalid_revenue_is_ignored_and_the_event_kept(value: Any) -> None:
    assert revenue(value) == (None, None)


def test_no_revenue_by_default() -> None:
    assert (event().revenue_amount, event().revenue_currency) == (None, None)


# --- never raises -------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
KEYS = ["n", "name", "u", "url", "d", "domain", "r", "referrer", "p", "props", "m", "meta", "h", "hashMode",
        "i", "interactive", "v", "sd", "e", "$", "revenue", "b"]
interesting_text = st.sampled_from([
    "engagement", "404", "pageview", "https://www.Site.test/a%20b%zz%FF?utm_source=x&gclid#/h%C3",
    "data:,x", "http://[::1", "a.test, www.B.test,,", "", " ", "1", "-1", "101", "www.", "https://www./",
    '{"amount": "1.5", "currency": "EUR"}', '{"a": 1, "b": [1]}', "%", "#", "?", "e\u0301" * 130,
])
field_values = json_values | interesting_text | st.dictionaries(st.sampled_from(["amount", "currency", "path", "k"]),
                                                                json_scalars | interesting_text, max_size=4)
event_objects = st.dictionaries(st.sampled_from(KEYS), field_values, max_size=len(KEYS))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    _check_result(parse_body(body))


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_arbitrary_json_values_never_raise(value: Any) -> None:
    _check_result(parse_body(orjson.dumps(value)))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_objects)
def test_arbitrary_event_objects_give_valid_events_or_errors(obj: dict[str, Any]) -> None:
    result = parse_event(obj)
    if isinstance(result, dict):
        assert result
        assert all(isinstance(k, str) and v and all(isinstance(m, str) for m in v) for k, v in result.items())
        return
    assert result and len(result) <= MAX_DOMAINS
    assert len({e.domain for e in result}) == len(result)
    for e in result:
        _check_event(e)
    orjson.dumps([e.props for e in result])  # storable as JSON text


@settings(max_examples=200, deadline=None)
@given(st.lists(event_objects | json_values, max_size=6))
def test_arbitrary_batches_never_raise(items: list[Any]) -> None:
    result = parse_body(orjson.dumps(items), max_batch=4)
    _check_result(result)
    if not items or len(items) > 4:
        assert result.error is not None
    else:
        assert [i.index for i in result.items] == list(range(len(items)))


def _check_result(result: ParseResult) -> None:
    if result.error is not None:
        assert not result.items
    else:
        assert result.items
    if result.error is None and not result.is_batch:
        assert len(result.items) == 1 and result.items[0].index == 0
    for item in result.items:
        assert (item.errors is None) == bool(item.events)
        for e in item.events:
            _check_event(e)


def _check_event(e: Event) -> None:
    assert isinstance(e.name, str) and e.name.strip()
    assert e.domain and e.domain == e.domain.lower()
    assert e.hostname and e.hostname == e.hostname.lower()
    assert e.pathname
    assert e.scroll_depth == 255 or 0 <= e.scroll_depth <= 100
    assert 0 <= e.engagement_time < MAX_ENGAGEMENT_MS
    if e.name != "engagement":
        assert (e.scroll_depth, e.engagement_time) == (0, 0)
    assert len(e.props) <= 30 and list(e.props) == sorted(e.props)
    assert all(k.strip() and v.strip() for k, v in e.props)
    assert (e.revenue_amount is None) == (e.revenue_currency is None)
    if e.revenue_currency is not None:
        assert len(e.revenue_currency) == 3 and e.revenue_currency.isupper()
    assert e.referrer is None or len(e.referrer) <= 2000 * 8
