"""The stored row: the event's and the client's parts, and the row the row builder joins."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from gateway.enrich.columns import RowColumns
from gateway.ingest.body import BodyParser, ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.row import RowBuilder
from gateway.ingest.visitor import Visitors, visitor_id
from gateway.schema import COLUMNS, ClientColumns, DetailColumns, Row, RowHead, SourceColumns, join
from gateway.state.generation import Generation
from gateway.state.salts import FileSaltStore
from geo import Location
from shields.model import SiteConfig

CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.6099.71 Safari/537.36")
BERLIN = Location(country_code="DE", subdivision1_code="DE-BE", subdivision2_code=None, city_geoname_id=2950159)
SITE = SiteConfig(domain="site.test")


def event(**kw: object) -> ParsedEvent:
    fields: dict[str, object] = {"name": "pageview", "domain": "site.test", "url": "https://site.test/",
                                 "hostname": "site.test", "pathname": "/"}
    return ParsedEvent(**(fields | kw))  # type: ignore[arg-type]


def builder(tmp_path: Path, columns: RowColumns | None = None) -> tuple[RowBuilder, FileSaltStore]:
    salts = FileSaltStore(tmp_path)
    return RowBuilder(columns or RowColumns(cache_size=16), Visitors(salts, Generation())), salts


def test_the_column_order_is_the_order_of_the_named_parts() -> None:
    names = RowHead._fields + SourceColumns._fields + ClientColumns._fields + DetailColumns._fields
    assert tuple(n.replace("meta_", "meta.") for n in names) == COLUMNS == tuple(
        n.replace("meta_", "meta.") for n in Row._fields)
    assert len(COLUMNS) == 32 and len(set(COLUMNS)) == 32


def test_the_event_runs_hold_the_event_fields_and_the_referrer_classification() -> None:
    e = event(name="Signup", pathname="/pricing", referrer="https://www.google.com/search?q=x",
              click_id_param="gclid", utm_campaign="fall", utm_content="a", utm_term="b",
              props=(("plan", "pro"), ("seats", "3")), interactive=False, revenue_amount="19.90",
              revenue_currency="EUR", tracker_version=7)
    head, tail = RowColumns(cache_size=16).for_event(e)
    assert head == ("site.test", "/pricing", "google.com/search", "Google", "gclid", "(gclid)", "", "fall", "a", "b")
    assert tail == ('["plan","seats"]', '["pro","3"]', 0, 0, 0, "19.90", "EUR", 7)


def test_the_event_runs_of_a_bare_event_are_empty_strings_and_zeros() -> None:
    e = event(name="engagement", scroll_depth=55, engagement_time=1200, tracker_version=70000)
    head, tail = RowColumns(cache_size=16).for_event(e)
    assert head == ("site.test", "/", "", "", "", "", "", "", "", "")
    # a tracker version beyond the column's 16 bits is stored as 0
    assert tail == ("[]", "[]", 55, 1200, 1, None, "", 0)


def test_the_client_part_holds_geo_and_user_agent_fields() -> None:
    columns = RowColumns(cache_size=16)
    assert columns.for_client(CHROME_WINDOWS, BERLIN) == (
        "DE", "DE-BE", "", 2950159, "Desktop", "Windows", "10", "Chrome", "120.0")
    assert columns.for_client("", None) == ClientColumns()
    # an answer with an ASN and no country: no geo columns
    assert columns.for_client("", Location(asn=64500)) == ClientColumns()


def test_event_parts_are_worked_out_once_per_parsed_event_and_kept_with_it(tmp_path: Path) -> None:
    rows, _ = builder(tmp_path)
    client = Client(ipaddress.ip_address("203.0.113.9"), CHROME_WINDOWS)
    first = event(pathname="/a")
    assert first.columns is None  # nothing is worked out for an event that is not kept
    rows.rows([(first, SITE)], client)
    parts = first.columns
    assert parts is not None and parts[0].pathname == "/a"
    rows.rows([(first, SITE)], client)
    assert first.columns is parts
    # an equal event that is another object is worked out again, to the same answer
    twin = event(pathname="/a")
    rows.rows([(twin, SITE)], client)
    assert twin.columns == parts and twin.columns is not parts


def test_the_body_memo_bounds_the_kept_parts_and_hands_out_the_same_events(tmp_path: Path) -> None:
    rows, _ = builder(tmp_path)
    client = Client(ipaddress.ip_address("203.0.113.9"), CHROME_WINDOWS)
    parse = BodyParser(cache_size=4)

    def body(i: int) -> bytes:
        return json.dumps({"n": "pageview", "u": f"https://site.test/{i}", "d": "site.test"}).encode()

    kept = []
    for i in range(10):
        [e] = parse(body(i)).items[0].events
        rows.rows([(e, SITE)], client)
        kept.append(e)
    assert parse.cache_info().currsize == 4
    # the last four bodies are still the very same events, with their parts
    assert all(parse(body(i)).items[0].events[0] is kept[i] and kept[i].columns is not None for i in range(6, 10))
    # the oldest ones went first: a repeat is parsed (and would be enriched) again
    assert parse(body(0)).items[0].events[0] is not kept[0]


def test_row_columns_keep_no_events_only_bounded_page_and_referrer_answers() -> None:
    columns = RowColumns(cache_size=16)
    e = event(pathname="/a")
    assert columns.for_event(e) == columns.for_event(e) and columns.for_event(e) is not columns.for_event(e)
    assert set(columns.cache_info()) == {"user_agents", "referrers", "sources"}
    # another event of the same page and referrer (an engagement event, a server-side event)
    # shares the page and referrer columns, which are keyed by those fields, not by the event
    twin = event(pathname="/a", scroll_depth=40, engagement_time=1200)
    assert columns.for_event(twin)[0] is columns.for_event(e)[0]
    assert columns.for_event(twin)[1] != columns.for_event(e)[1]
    for i in range(40):
        columns.for_event(event(pathname=f"/p{i}"))
    assert columns.cache_info()["sources"] == 16


def test_the_row_builder_puts_every_column_where_the_schema_says(tmp_path: Path) -> None:
    rows, salts = builder(tmp_path)
    columns = RowColumns(cache_size=16)
    client = Client(ipaddress.ip_address("203.0.113.9"), CHROME_WINDOWS, country_code="DE",
                    columns=columns.for_client(CHROME_WINDOWS, BERLIN))
    e = event(name="Signup", hostname="blog.site.test", pathname="/p", referrer="https://news.ycombinator.com/",
              utm_source="hn", props=(("k", "v"),), revenue_amount="5", revenue_currency="USD", tracker_version=3)
    [row] = rows.rows([(e, SITE)], client)
    assert len(row) == len(COLUMNS)
    assert Row._make(row).pathname == "/p" and row == join(tuple(row[:5]), *e.columns[:1], client.columns,  # type: ignore[misc]
                                                           e.columns[1])  # type: ignore[index]
    stored = dict(zip(COLUMNS, row))
    salt, _ = salts.salts()
    assert len(stored.pop("event_id")) == 32
    assert len(stored.pop("timestamp")) == 19
    assert stored == {
        "name": "Signup", "domain": "site.test",
        "user_id": visitor_id(salt, CHROME_WINDOWS, client.ip, "site.test", "blog.site.test"),
        "hostname": "blog.site.test", "pathname": "/p", "referrer": "news.ycombinator.com",
        "referrer_source": "Hacker News", "click_id_param": "", "utm_medium": "", "utm_source": "hn",
        "utm_campaign": "", "utm_content": "", "utm_term": "",
        "country_code": "DE", "subdivision1_code": "DE-BE", "subdivision2_code": "", "city_geoname_id": 2950159,
        "screen_size": "Desktop", "operating_system": "Windows", "operating_system_version": "10",
        "browser": "Chrome", "browser_version": "120.0",
        "meta.key": '["k"]', "meta.value": '["v"]', "scroll_depth": 0, "engagement_time": 0, "interactive": 1,
        "revenue_source_amount": "5", "revenue_source_currency": "USD", "tracker_version": 3,
    }
