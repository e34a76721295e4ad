"""Pageviews: the first one, SPA navigation, dedupe, bfcache, prerendering, double initialisation."""

from __future__ import annotations

from conftest import Site, Tab


def test_pageview_is_stored_with_domain_path_and_referrer(site: Site, new_tab) -> None:
    start = site.add("/from", body='<a id="go" href="to">next</a>')
    site.add("/to")
    tab: Tab = new_tab()
    tab.page.goto(start)
    tab.page.click("#go")
    rows = site.events(2, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + "/from", site.prefix + "/to"]
    assert {r["domain"] for r in rows} == {"site.test"}
    assert {r["hostname"] for r in rows} == {"site.test"}
    sent = tab.wait_sent(2, "pageview")
    assert sent[1]["r"] == start
    assert sent[1]["u"] == site.url("/to")
    assert sent[1]["d"] == "site.test" and isinstance(sent[1]["v"], int)


def _push(tab: Tab, url: str) -> None:
    tab.page.evaluate("u => history.pushState({}, '', u)", url)


def test_spa_push_state_and_back_button_each_count_a_pageview(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/app"))
    tab.wait_sent(1, "pageview")
    _push(tab, site.prefix + "/app/settings")
    tab.wait_sent(2, "pageview")
    tab.page.go_back()
    rows = site.events(3, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + p for p in ("/app", "/app/settings", "/app")]


def test_repeat_navigation_to_the_same_path_is_deduplicated(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/list"))
    tab.wait_sent(1, "pageview")
    _push(tab, site.prefix + "/list?page=2")
    _push(tab, site.prefix + "/list#top")
    _push(tab, site.prefix + "/detail")
    rows = site.events(2, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + "/list", site.prefix + "/detail"]
    assert len(tab.payloads("pageview")) == 2


def test_replace_state_is_ignored_unless_opted_in(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/a"))
    tab.wait_sent(1, "pageview")
    tab.page.evaluate("u => history.replaceState({}, '', u)", site.prefix + "/a-replaced")
    _push(tab, site.prefix + "/b")
    rows = site.events(2, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + "/a", site.prefix + "/b"]


def test_replace_state_counts_with_data_track_replace(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/a", attrs='data-domain="site.test" data-allow-automation data-track-replace'))
    tab.wait_sent(1, "pageview")
    tab.page.evaluate("u => history.replaceState({}, '', u)", site.prefix + "/a-replaced")
    rows = site.events(2, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + "/a", site.prefix + "/a-replaced"]


def test_hash_mode_counts_hash_changes_and_flags_them(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/spa", attrs='data-domain="site.test" data-allow-automation data-hash'))
    tab.wait_sent(1, "pageview")
    tab.page.evaluate("location.hash = '#/about'")
    sent = tab.wait_sent(2, "pageview")
    assert sent[1]["h"] == 1 and sent[1]["u"] == site.url("/spa#/about")
    rows = site.events(2, name="pageview")
    assert rows[1]["pathname"] == site.prefix + "/spa#/about"


def test_hash_mode_does_not_count_push_state(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/spa", attrs='data-domain="site.test" data-allow-automation data-hash'))
    tab.wait_sent(1, "pageview")
    _push(tab, site.prefix + "/elsewhere")
    tab.page.evaluate("location.hash = '#/x'")
    tab.wait_sent(2, "pageview")
    assert [p["u"] for p in tab.payloads("pageview")] == [site.url("/spa"), site.url("/elsewhere#/x")]


def test_restore_from_back_forward_cache_counts_a_pageview(site: Site, new_tab) -> None:
    # Playwright's Chromium keeps the back/forward cache off, so the restore is signalled directly.
    tab: Tab = new_tab()
    tab.page.goto(site.add("/cached"))
    tab.wait_sent(1, "pageview")
    tab.page.evaluate("dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    tab.page.evaluate("dispatchEvent(new PageTransitionEvent('pageshow', {persisted: false}))")
    rows = site.events(2, name="pageview")
    assert [r["pathname"] for r in rows] == [site.prefix + "/cached"] * 2
    assert len(tab.payloads("pageview")) == 2


HIDDEN = """
Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
Object.defineProperty(document, 'hidden', {value: true, configurable: true});
"""
SHOW = """() => {
  Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
  Object.defineProperty(document, 'hidden', {value: false, configurable: true});
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_prerendered_page_waits_until_it_is_shown(site: Site, new_tab) -> None:
    tab: Tab = new_tab(init_script=HIDDEN)
    tab.page.goto(site.add("/prerendered"))
    tab.page.wait_for_function("window.plausible && window.plausible.l")
    tab.page.wait_for_timeout(300)
    assert tab.payloads() == []
    tab.page.evaluate(SHOW)
    tab.wait_sent(1, "pageview")
    assert site.events(1, name="pageview")[0]["pathname"] == site.prefix + "/prerendered"


def test_script_included_twice_and_init_called_again_count_once(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    warnings: list[str] = []
    tab.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    second = f'<script defer src="{site.script_src}" data-domain="site.test" data-allow-automation></script>'
    tab.page.goto(site.add("/twice", after=second))
    tab.wait_sent(1, "pageview")
    tab.page.evaluate("plausible.init({domain: 'other.test'})")
    tab.page.wait_for_timeout(300)
    assert len(tab.payloads("pageview")) == 1
    assert any("already loaded" in w for w in warnings) and any("init ignored" in w for w in warnings)
    assert len(site.events(1, name="pageview")) == 1


def test_manual_mode_sends_only_explicit_pageviews(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/manual", attrs='data-domain="site.test" data-allow-automation data-manual'))
    tab.page.wait_for_function("window.plausible && window.plausible.l")
    _push(tab, site.prefix + "/manual/next")
    tab.page.evaluate("u => plausible('pageview', {u})", site.url("/virtual/page"))
    sent = tab.wait_sent(1, "pageview")
    assert [p["u"] for p in sent] == [site.url("/virtual/page")]
    assert site.events(1, name="pageview")[0]["pathname"] == site.prefix + "/virtual/page"


def test_comma_separated_domains_are_sent_as_one_list(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/rollup", attrs='data-domain="site.test,rollup.test" data-allow-automation'))
    assert tab.wait_sent(1, "pageview")[0]["d"] == "site.test,rollup.test"
    rows = site.events(1, name="pageview")
    assert [r["domain"] for r in rows] == ["site.test"]  # rollup.test is not a registered site
