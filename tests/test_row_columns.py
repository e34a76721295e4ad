"""The stored row: the event's and the client's runs of columns, and the row the pipeline joins."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from gateway.config import Sites
from gateway.enrich.columns import RowColumns
from gateway.metrics import Metrics
from gateway.ingest.pipeline import NO_CLIENT_COLUMNS, NO_LOCATION, Location, Pipeline
from gateway.state.salts import FileSaltStore
from gateway.schema import COLUMNS
from gateway.ingest.visitor import visitor_id
from shields.model import ClientContext, Event, SiteConfig

CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.6099.71 Safari/537.36")
BERLIN = Location(country_code="DE", subdivision1_code="DE-BE", subdivision2_code="", city_geoname_id=2950159)


def event(**kw: object) -> Event:
    fields: dict[str, object] = {"name": "pageview", "domain": "site.test", "url": "https://site.test/",
                                 "hostname": "site.test", "pathname": "/"}
    return Event(**(fields | kw))  # type: ignore[arg-type]


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


def test_the_client_run_holds_geo_and_user_agent_fields() -> None:
    columns = RowColumns(cache_size=16)
    assert columns.for_client(CHROME_WINDOWS, BERLIN) == (
        "DE", "DE-BE", "", 2950159, "Desktop", "Windows", "10", "Chrome", "120.0")
    assert columns.for_client("", NO_LOCATION) == NO_CLIENT_COLUMNS


def test_event_runs_are_kept_per_event_object_and_bounded() -> None:
    columns = RowColumns(cache_size=16, event_memo=4)
    first = event(pathname="/a")
    runs = columns.for_event(first)
    assert columns.for_event(first) is runs
    # an equal event that is another object is worked out again, to the same answer
    twin = event(pathname="/a")
    assert columns.for_event(twin) == runs and columns.for_event(twin) is not runs
    kept = [event(pathname=f"/{i}") for i in range(10)]
    for e in kept:
        assert columns.for_event(e)[0][1] == e.pathname
    assert columns.cache_info()["events"] == 4
    # the oldest ones went first: the last four are still the very same tuples
    assert all(columns.for_event(e) is columns.for_event(e) for e in kept[-4:])
    assert columns.for_event(first)[0][1] == "/a"


def test_without_an_event_memo_every_event_is_worked_out() -> None:
    columns = RowColumns(cache_size=16, event_memo=0)
    e = event(pathname="/a")
    assert columns.for_event(e) == columns.for_event(e) and columns.for_event(e) is not columns.for_event(e)
    assert columns.cache_info()["events"] == 0


def test_the_pipeline_puts_every_column_where_the_schema_says(tmp_path: Path) -> None:
    site = SiteConfig(domain="site.test")
    salts = FileSaltStore(tmp_path)
    columns = RowColumns(cache_size=16)
    pipeline = Pipeline(sites=lambda: Sites({"site.test": site}, (site,)), salts=salts, metrics=Metrics(tmp_path),
                        event_columns=columns.for_event)
    client = ClientContext(ipaddress.ip_address("203.0.113.9"), CHROME_WINDOWS, country_code="DE")
    e = event(name="Signup", hostname="blog.site.test", pathname="/p", referrer="https://news.ycombinator.com/",
              utm_source="hn", props=(("k", "v"),), revenue_amount="5", revenue_currency="USD", tracker_version=3)
    outcome = pipeline.process([e], client, columns.for_client(CHROME_WINDOWS, BERLIN))
    [row] = outcome.rows
    assert len(row) == len(COLUMNS)
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
