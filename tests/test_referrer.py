"""Referrer validity, the stored referrer, referrer_source, click-id media, and the enrich step."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.enrich.referrer import (
    KnownSources,
    ReferrerClassifier,
    ReferrerInfo,
    infer_medium,
    parse_referrer,
)
from shields.model import Event

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval"


def event(referrer: str | None = None, hostname: str = "example.com", **kw: Any) -> Event:
    return Event(name="pageview", domain="example.com", url=f"https://{hostname}/", hostname=hostname,
                 pathname="/", referrer=referrer, **kw)


@pytest.fixture(scope="module")
def classifier() -> ReferrerClassifier:
    return ReferrerClassifier()


# --- validity and the stored referrer -------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("https://www.indiehackers.com/page?query=param#hash", "indiehackers.com/page"),
        ("https://www.google.com/search?q=analytics", "google.com/search"),
        ("http://news.ycombinator.com/", "news.ycombinator.com"),
        ("https://blog.other.org/a/b///", "blog.other.org/a/b"),
        ("HTTPS://User:pw@WWW.Other.ORG:8443/Path", "other.org/Path"),
        ("https://other.org./x", "other.org/x"),
        ("android-app://com.google.android.gm/", "android-app://com.google.android.gm"),
        ("http://192.0.2.1:8080/x", "192.0.2.1/x"),
        ("http://[2001:db8::1]:80/x", "2001:db8::1/x"),
    ],
)
def test_valid_referrer_is_stored_as_host_and_path_without_query_port_or_trailing_slash(
        classifier: ReferrerClassifier, raw: str, stored: str) -> None:
    assert classifier.classify(event(raw)).referrer == stored


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://other.org/file",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/html,hi",
        "//other.org/path",  # no scheme
        "other.org/path",
        "https://",
        "https:///path",
        "http://localhost:3000/",
        "http://www.localhost/",
        "",
        "   ",
        "not a url",
    ],
)
def test_invalid_referrer_gives_empty_referrer_fields(classifier: ReferrerClassifier, raw: str) -> None:
    assert classifier.classify(event(raw)) == ReferrerInfo("", "", "")


@pytest.mark.parametrize(
    "raw",
    ["https://example.com/pricing", "https://www.example.com/", "http://EXAMPLE.com:8080/a?b=c", "https://example.com."],
)
def test_self_referral_gives_empty_referrer_fields(classifier: ReferrerClassifier, raw: str) -> None:
    assert classifier.classify(event(raw)) == ReferrerInfo("", "", "")


def test_a_sibling_subdomain_is_an_external_referrer(classifier: ReferrerClassifier) -> None:
    info = classifier.classify(event("https://blog.example.com/post", hostname="example.com"))
    assert info.referrer == "blog.example.com/post"


def test_no_referrer_and_no_tags_gives_empty_fields(classifier: ReferrerClassifier) -> None:
    assert classifier.classify(event(None)) == ReferrerInfo()


# --- referrer_source -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "source"),
    [
        ("https://www.google.com/search?q=x", "Google"),
        ("https://www.google.co.uk/", "Google"),
        ("https://www.google.com.br/url?sa=t", "Google"),
        ("https://docs.google.com/document/d/1", "Google"),
        ("https://mail.google.com/mail/u/0/", "Gmail"),
        ("https://news.google.com/", "Google News"),
        ("https://www.bing.com/search?q=x", "Bing"),
        ("https://duckduckgo.com/", "DuckDuckGo"),
        ("https://yandex.ru/search/?text=x", "Yandex"),
        ("https://search.yahoo.co.jp/", "Yahoo!"),
        ("https://l.facebook.com/l.php?u=x", "Facebook"),
        ("https://m.facebook.com/", "Facebook"),
        ("https://t.co/abc", "Twitter"),
        ("https://x.com/someone", "Twitter"),
        ("https://www.reddit.com/r/python/", "Reddit"),
        ("https://old.reddit.com/r/python/", "Reddit"),
        ("https://news.ycombinator.com/item?id=1", "Hacker News"),
        ("https://m.youtube.com/watch?v=1", "Youtube"),
        ("https://www.linkedin.com/feed/", "LinkedIn"),
        ("https://lnkd.in/abc", "LinkedIn"),
        ("https://chatgpt.com/", "ChatGPT"),
        ("https://www.pinterest.fr/pin/1", "Pinterest"),
        ("android-app://com.google.android.gm", "Gmail"),
        ("android-app://com.reddit.frontpage/", "Reddit"),
        ("android-app://com.google.android.googlequicksearchbox/https/www.google.com", "Google"),
    ],
)
def test_known_referrers_are_named(classifier: ReferrerClassifier, raw: str, source: str) -> None:
    assert classifier.classify(event(raw)).referrer_source == source


@pytest.mark.parametrize(
    ("raw", "source"),
    [
        ("https://www.indiehackers.com/page", "indiehackers.com"),
        ("https://blog.example.co.uk/post", "example.co.uk"),
        ("https://a.b.c.other.org/", "other.org"),
        ("https://someone.github.io/project", "someone.github.io"),  # private suffix: one site per user
        ("https://google.blogspot.com/", "google.blogspot.com"),  # a brand under a private suffix is not the brand
        ("https://intranet/", "intranet"),
        ("http://192.0.2.1/x", "192.0.2.1"),
        ("http://[2001:db8::1]/", "2001:db8::1"),
        ("android-app://com.example.app/", "android-app://com.example.app"),
    ],
)
def test_unknown_referrers_fall_back_to_their_registrable_domain(classifier: ReferrerClassifier, raw: str,
                                                                 source: str) -> None:
    assert classifier.classify(event(raw)).referrer_source == source


@pytest.mark.parametrize(
    ("utm_source", "source"),
    [
        ("facebook", "Facebook"),
        ("GOOGLE", "Google"),
        ("adwords", "Google"),
        ("ig", "Instagram"),
        ("fb-ads", "Facebook"),
        ("t.co", "Twitter"),
        ("chatgpt.com", "ChatGPT"),
        ("betalist", "betalist"),
        ("NewsLetter-March", "NewsLetter-March"),
    ],
)
def test_tagged_source_is_mapped_to_its_canonical_name(classifier: ReferrerClassifier, utm_source: str,
                                                       source: str) -> None:
    assert classifier.classify(event(None, utm_source=utm_source)).referrer_source == source


def test_tagged_source_takes_precedence_over_the_referrer(classifier: ReferrerClassifier) -> None:
    info = classifier.classify(event("https://www.google.com/search?q=x", utm_source="newsletter"))
    assert info == ReferrerInfo(referrer="google.com/search", referrer_source="newsletter", utm_medium="")


def test_empty_tagged_source_hides_the_referrer_source(classifier: ReferrerClassifier) -> None:
    info = classifier.classify(event("https://www.google.com/", utm_source=""))
    assert (info.referrer, info.referrer_source) == ("google.com", "")


def test_tagged_source_applies_even_to_a_self_referral(classifier: ReferrerClassifier) -> None:
    info = classifier.classify(event("https://example.com/", utm_source="facebook"))
    assert (info.referrer, info.referrer_source) == ("", "Facebook")


# --- utm_medium and click ids ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kw", "medium"),
    [
        ({"referrer": "https://www.google.com/", "click_id_param": "gclid"}, "(gclid)"),
        ({"utm_source": "google", "click_id_param": "gclid"}, "(gclid)"),
        ({"referrer": "https://www.bing.com/", "click_id_param": "msclkid"}, "(msclkid)"),
        ({"utm_source": "bing", "click_id_param": "msclkid"}, "(msclkid)"),
        ({"referrer": "https://www.google.com/", "click_id_param": "gclid", "utm_medium": "cpc"}, "cpc"),
        ({"referrer": "https://www.google.com/", "click_id_param": "gclid", "utm_medium": ""}, ""),
        ({"referrer": "https://www.bing.com/", "click_id_param": "gclid"}, ""),
        ({"referrer": "https://www.google.com/", "click_id_param": "msclkid"}, ""),
        ({"referrer": "https://www.google.com/", "click_id_param": "gbraid"}, ""),
        ({"referrer": "https://www.facebook.com/", "click_id_param": "fbclid"}, ""),
        ({"utm_source": "newsletter", "click_id_param": "gclid"}, ""),
        ({"referrer": "https://www.google.com/"}, ""),
        ({"utm_medium": "email"}, "email"),
    ],
)
def test_click_ids_infer_a_medium_only_for_their_own_ad_network(classifier: ReferrerClassifier,
                                                                 kw: dict[str, Any], medium: str) -> None:
    assert classifier.classify(event(**kw)).utm_medium == medium


def test_infer_medium_keeps_any_tagged_medium() -> None:
    assert infer_medium("social", "Google", "gclid") == "social"
    assert infer_medium(None, "Google", None) == ""


# --- the known-source table ------------------------------------------------------------------------

def test_shipped_table_loads_with_a_version() -> None:
    table = KnownSources.load()
    assert table.version
    assert table.for_host("google.com") == "Google"
    assert table.for_host("a.b.google.com") == "Google"
    assert table.for_host("mail.google.com") == "Gmail"  # the most specific host wins
    assert table.for_host("notgoogle.com") is None
    assert table.canonical("FACEBOOK") == "Facebook"


def test_a_host_claimed_by_two_sources_is_reported_with_its_field() -> None:
    data = {"sources": [{"name": "A", "hosts": ["a.example"]}, {"name": "B", "hosts": ["b.example", "a.example"]}]}
    with pytest.raises(ConfigError, match=r"sources\[1\]\.hosts\[1\].*'a.example' already belongs to 'A'"):
        KnownSources.from_data(data, "table.json")


@pytest.mark.parametrize(
    "data",
    [[], {"sources": {}}, {"sources": [1]}, {"sources": [{"name": ""}]}, {"sources": [{"name": "A", "hosts": "a"}]},
     {"sources": [{"name": "A", "aliases": [3]}]}],
)
def test_malformed_tables_raise_config_error(data: Any) -> None:
    with pytest.raises(ConfigError):
        KnownSources.from_data(data, "table.json")


def test_unreadable_table_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "sources.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"sources\.json"):
        KnownSources.load(bad)


def test_a_custom_table_replaces_the_shipped_one() -> None:
    table = KnownSources.from_data({"version": "t1", "sources": [{"name": "Partner", "hosts": ["partner.example"],
                                                                  "aliases": ["prt"]}]})
    c = ReferrerClassifier(table, cache_size=4)
    assert c.classify(event("https://shop.partner.example/")).referrer_source == "Partner"
    assert c.classify(event(None, utm_source="PRT")).referrer_source == "Partner"
    assert c.classify(event("https://www.google.com/")).referrer_source == "google.com"


def test_source_cache_is_bounded() -> None:
    c = ReferrerClassifier(cache_size=4)
    for i in range(50):
        assert c.classify(event(f"https://www.site{i}.org/")).referrer_source == f"site{i}.org"
    assert c.cache_info() == (4, 4)  # the host cache: whole answers are kept with the parsed event


def test_cached_answers_match_fresh_ones() -> None:
    warm = ReferrerClassifier(cache_size=64)
    cold = ReferrerClassifier(cache_size=0)
    cases = [event("https://www.google.com/search?q=x"), event(None, utm_source="newsletter", utm_medium="email"),
             event("https://t.co/abc", click_id_param="gclid"), event("https://www.google.com/", click_id_param="gclid"),
             event("android-app://com.google.android.gm"), event("https://" + "a" * 600 + ".example/")]
    for _ in range(2):
        for e in cases:
            assert warm.classify(e) == cold.classify(e)


def test_zero_cache_size_still_classifies() -> None:
    c = ReferrerClassifier(cache_size=0)
    assert c.classify(event("https://www.google.de/")).referrer_source == "Google"
    assert c.cache_info() == (0, 0)


# --- robustness ------------------------------------------------------------------------------------

_SHARED = ReferrerClassifier(cache_size=64)


@settings(max_examples=300, deadline=None)
@given(referrer=st.one_of(st.none(), st.text(max_size=200)),
       hostname=st.text(max_size=40),
       utm_source=st.one_of(st.none(), st.text(max_size=20)),
       utm_medium=st.one_of(st.none(), st.text(max_size=20)),
       click=st.one_of(st.none(), st.sampled_from(["gclid", "gbraid", "wbraid", "msclkid", "fbclid", "twclid"])))
def test_classify_never_raises(referrer: str | None, hostname: str, utm_source: str | None,
                               utm_medium: str | None, click: str | None) -> None:
    info = _SHARED.classify(event(referrer, hostname=hostname, utm_source=utm_source, utm_medium=utm_medium,
                                  click_id_param=click))
    assert isinstance(info, ReferrerInfo)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "HTTP", "android-app"]),
       host=st.text(st.characters(blacklist_characters="/?#"), min_size=1, max_size=40),
       rest=st.text(max_size=60))
def test_stored_referrer_never_holds_scheme_query_or_fragment(scheme: str, host: str, rest: str) -> None:
    parsed = parse_referrer(f"{scheme}://{host}/{rest}", "example.com")
    if parsed is None:
        return
    head, sep, _ = parsed.stored.partition("://")
    assert not sep or head == "android-app"
    assert "?" not in parsed.stored and "#" not in parsed.stored
    assert not parsed.stored.endswith("/")
    assert _SHARED.source_of(parsed) is not None


def test_legit_referrers_of_the_shared_corpus_classify_cleanly(classifier: ReferrerClassifier) -> None:
    path = EVAL_DIR / "referrers.tsv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
    for _label, _kind, raw in rows:
        info = classifier.classify(event(raw, hostname="our-site.test"))
        if info.referrer:
            assert info.referrer_source, raw
            assert "?" not in info.referrer and "#" not in info.referrer
