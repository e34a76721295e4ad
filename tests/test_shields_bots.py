"""The bot and verification-agent shields: what counts as a bot, and how the matcher is built."""

from __future__ import annotations

import pytest

from shields.bots import (
    VERIFICATION_AGENT_UA,
    BotMatcher,
    BotPattern,
    BotShield,
    VerificationAgentShield,
    load_bot_patterns,
)
from shields.model import ClientContext, DropReason, Event, SiteConfig

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SITE = SiteConfig(domain="example.com")


@pytest.fixture(scope="module")
def matcher() -> BotMatcher:
    return BotMatcher.default()


def event(**kw: object) -> Event:
    base: dict[str, object] = dict(
        name="pageview", domain="example.com", url="https://example.com/", hostname="example.com", pathname="/"
    )
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def client(ua: str) -> ClientContext:
    return ClientContext(ip=None, user_agent=ua)


@pytest.mark.parametrize("ua", [CHROME, IPHONE, FIREFOX])
def test_ordinary_browsers_are_not_bots(matcher: BotMatcher, ua: str) -> None:
    assert not matcher.is_bot(ua)


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ChatGPT-User/1.0; +https://openai.com/bot)",
        "Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        f"{CHROME} Chrome-Lighthouse",
        "curl/8.5.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        "Python/3.11 aiohttp/3.9.5",
        "python-httpx/0.27.0",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
        "axios/1.6.8",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "undici",
        "Java/17.0.2",
        "libwww-perl/6.72",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    ],
)
def test_crawlers_headless_browsers_and_http_tools_are_bots(matcher: BotMatcher, ua: str) -> None:
    assert matcher.is_bot(ua), matcher.find(ua)


@pytest.mark.parametrize("ua", ["", "   ", "\t"])
def test_missing_or_blank_user_agent_is_a_bot(matcher: BotMatcher, ua: str) -> None:
    assert matcher.is_bot(ua)


def test_device_model_names_that_look_like_crawler_words_are_not_bots(matcher: BotMatcher) -> None:
    # Makers name tablets "Bot Tab" or phones "Spider 8"; the model slot is masked.
    for model in ("C Bot Tab 70", "Spider 8", "Discovery 102C", "CUBOT X30"):
        ua = (
            f"Mozilla/5.0 (Linux; Android 13; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Mobile Safari/537.36"
        )
        assert not matcher.is_bot(ua), (model, matcher.find(ua))


def test_crawler_token_outside_the_model_slot_still_counts(matcher: BotMatcher) -> None:
    ua = (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    )
    assert matcher.is_bot(ua)


def test_allowlist_needs_the_whole_user_agent_to_match() -> None:
    m = BotMatcher(["bot"], allowlist=[r"Friendly Bot Browser/\d+"])
    assert not m.is_bot("Friendly Bot Browser/3")
    assert m.is_bot("Friendly Bot Browser/3 (compatible; evilbot)")


def test_case_sensitive_source_patterns_stay_case_sensitive() -> None:
    m = BotMatcher([BotPattern("Sonic", "test", case_sensitive=True)])
    assert m.is_bot("Sonic/1.0")
    assert not m.is_bot("GoogleHypersonic")


def test_anchored_literals_only_match_at_their_anchor() -> None:
    m = BotMatcher(["^curl/", "probe$"])
    assert m.is_bot("curl/8.0")
    assert not m.is_bot("Mozilla/5.0 curl/8.0 like")
    assert m.is_bot("status probe")
    assert not m.is_bot("probe status")


def test_regex_patterns_run_only_when_their_literal_is_present() -> None:
    m = BotMatcher([r"(?<! cu)bots?(?:\b|_)", r"^[^ ]{50,}$"])
    assert m.gated_count == 1 and m.always_count == 1
    assert m.is_bot("Mozilla/5.0 (compatible; examplebot)")
    assert not m.is_bot("Mozilla/5.0 (Linux; cubot)")
    assert m.is_bot("x" * 60)


@pytest.mark.parametrize(("pattern", "literals"), [
    (r"bots?(?:\b|_)", {"bot"}),
    (r"(?:crawl|spider)er", {"crawl", "spider"}),
    (r"Googlebot/\d", {"googlebot/"}),
    (r"^curl/", {"curl/"}),
    (r"[a-z0-9_-]*(?:bot|crawl)", {"bot", "crawl"}),
    (r"python-(?:requests|urllib)", {"python-"}),
    (r"\bheadless", {"headless"}),
    (r"(?i)scrapy", {"scrapy"}),
    (r"(?:abc)?def", {"def"}),
    (r"(?:abc)+d", {"abc"}),  # a repeat of at least one counts
    (r"(?:ab)+cd", None),  # two letters are too few to gate on
    (r"a|b", None),
    (r"x{2,}yz", None),
    (r"^[^ ]{50,}$", None),
])
def test_the_literals_gating_each_regex_are_read_from_pythons_regex_parser(pattern: str,
                                                                            literals: set[str] | None) -> None:
    # The gates come from CPython's private re._parser (shields/bots.py says why). These pins
    # fail loudly if its tree changes shape, instead of every regex quietly running on every UA.
    from shields import bots

    assert bots._sre_parser is not None, "re._parser is gone: the bot matcher runs every regex ungated"
    assert bots._required_literals(pattern) == (frozenset(literals) if literals is not None else None)


def test_leading_star_class_is_dropped_without_changing_matches() -> None:
    m = BotMatcher([r"[a-z0-9\-_]*(bot|crawl)"])
    assert m.is_bot("Mozilla/5.0 (compatible; somecrawler/1.0)")
    assert not m.is_bot(CHROME)


def test_verdicts_are_cached_and_the_cache_is_bounded() -> None:
    m = BotMatcher(["bot"], cache_size=2)
    for ua in ("a", "b", "c bot", "d"):
        m.is_bot(ua)
    assert m.cache_info() == (2, 2)


def test_invalid_pattern_fails_at_build_time_not_per_request() -> None:
    with pytest.raises(Exception):
        BotMatcher(["(unclosed"])


def test_default_patterns_come_from_every_data_package() -> None:
    sources = {p.source for p in load_bot_patterns()}
    assert {"is-bot", "crawlerdetect", "crawler-user-agents", "ai-crawler-index", "bot_patterns.txt"} <= sources


def test_bot_shield_drops_bot_user_agents(matcher: BotMatcher) -> None:
    verdict = BotShield(matcher).check(event(), client("curl/8.5.0"), SITE)
    assert verdict is not None and verdict.reason is DropReason.BOT


def test_bot_shield_drops_automation_reported_by_the_tracker(matcher: BotMatcher) -> None:
    verdict = BotShield(matcher).check(event(automation=True), client(CHROME), SITE)
    assert verdict is not None and verdict.reason is DropReason.BOT


def test_bot_shield_passes_a_browser(matcher: BotMatcher) -> None:
    assert BotShield(matcher).check(event(), client(CHROME), SITE) is None


def test_verification_agent_is_its_own_reason() -> None:
    shield = VerificationAgentShield()
    verdict = shield.check(event(), client(f"{VERIFICATION_AGENT_UA}/1.0"), SITE)
    assert verdict is not None and verdict.reason is DropReason.VERIFICATION_AGENT
    assert shield.check(event(), client(CHROME), SITE) is None
