"""Spam referrers: host normalisation, parent-domain matching, and the shield."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shields.lists import LiveLists
from shields.model import ClientContext, DropReason, Event, SiteConfig
from shields.hosts import SpamReferrerList, normalise_host, referrer_host
from shields.referrers import SpamReferrerShield

SPAM = SpamReferrerList(["spam.example", "QIWI.xyz", "xn--80aswg.xn--p1ai"])


@pytest.mark.parametrize(
    "referrer",
    [
        "https://spam.example/",
        "http://spam.example",
        "https://www.spam.example/page?x=1",
        "https://a.b.spam.example/",
        "https://SPAM.EXAMPLE/",
        "https://spam.example:8443/x",
        "https://spam.example./x",
        "//spam.example/path",
        "spam.example",
        "spam.example/some/path",
        "https://user:pw@spam.example/",
        "https://qiwi.xyz/",
        "https://сайт.рф/",
    ],
)
def test_listed_host_and_its_subdomains_are_spam(referrer: str) -> None:
    assert SPAM.match(referrer) is not None


@pytest.mark.parametrize(
    "referrer",
    [
        "https://www.google.com/url?q=http://spam.example/&sa=D",
        "https://notspam.example/",
        "https://spam.example.evil.org/",
        "https://example/",
        "https://www.google.com/",
        "",
        None,
        "https:://x",
        "not a url at all",
        "https://[2001:db8::1]/",
    ],
)
def test_query_mentions_and_look_alike_hosts_are_not_spam(referrer: str | None) -> None:
    assert SPAM.match(referrer) is None


def test_empty_list_matches_nothing() -> None:
    assert SpamReferrerList([]).match("https://spam.example/") is None


@given(
    st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4),
    st.sampled_from(["", "https://", "http://", "//"]),
    st.sampled_from(["", ":8080", ":443"]),
    st.sampled_from(["", ".", ".."]),
    st.booleans(),
    st.sampled_from(["", "/", "/path?q=1", "#frag"]),
)
def test_normaliser_recovers_the_lower_case_host(
    labels: list[str], scheme: str, port: str, dots: str, upper: bool, tail: str
) -> None:
    host = ".".join(labels)
    shown = host.upper() if upper else host
    trailing = dots if dots != ".." else "."
    referrer = f"{scheme}{shown}{trailing}{port}{tail}"
    assert referrer_host(referrer) == host


@given(st.text(max_size=60))
def test_normaliser_never_raises(text: str) -> None:
    host = referrer_host(text)
    assert host == "" or host == host.lower()
    assert normalise_host(text) == normalise_host(text)


@given(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=2, max_size=5))
def test_every_subdomain_of_a_listed_domain_matches_and_no_suffix_of_a_label_does(labels: list[str]) -> None:
    listed = ".".join(labels[-2:])
    spam = SpamReferrerList([listed])
    assert spam.match(f"https://{'.'.join(labels)}/") == listed
    assert spam.match(f"https://x{listed}/") is None


def test_shield_drops_spam_referrer_and_reads_the_live_list() -> None:
    lists = LiveLists()
    shield = SpamReferrerShield(lists)
    event = Event(name="pageview", domain="a.com", url="https://a.com/", hostname="a.com", pathname="/",
                  referrer="https://spam.example/")
    client = ClientContext(ip=None, user_agent="x")
    assert shield.check(event, client, SiteConfig(domain="a.com")) is None
    lists.referrer_spam = SPAM  # what a reload does
    verdict = shield.check(event, client, SiteConfig(domain="a.com"))
    assert verdict is not None and verdict.reason is DropReason.SPAM_REFERRER
    assert shield.check(event, client, None) == verdict  # it needs no site: it runs before the lookup


def test_a_remembered_answer_goes_with_its_list() -> None:
    lists = LiveLists(referrer_spam=SpamReferrerList(["other.example"]))
    shield = SpamReferrerShield(lists)
    event = Event(name="pageview", domain="a.com", url="https://a.com/", hostname="a.com", pathname="/",
                  referrer="https://spam.example/")
    client = ClientContext(ip=None, user_agent="x")
    for _ in range(2):  # the second answer is the remembered one
        assert shield.check(event, client, SiteConfig(domain="a.com")) is None
    lists.referrer_spam = SPAM
    assert shield.check(event, client, SiteConfig(domain="a.com")) is not None
    lists.referrer_spam = SpamReferrerList(["other.example"])
    assert shield.check(event, client, SiteConfig(domain="a.com")) is None
    long = "https://spam.example/" + "x" * 600  # past what is remembered: answered all the same
    assert SPAM.match(long) == "spam.example" and SPAM.match(long) == "spam.example"
