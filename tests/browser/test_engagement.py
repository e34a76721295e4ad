"""Engagement events: visible and focused time only, sent as deltas on hide, blur and SPA exit.

Time is driven by Playwright's clock, paused before the page loads, so every `e` is exact.
"""

from __future__ import annotations

import datetime as dt

from conftest import Site, Tab

T0 = dt.datetime(2030, 1, 1, 12, 0, 0)
TALL = '<div style="height:3000px">tall</div>'

SET_VISIBILITY = """state => {
  Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
  Object.defineProperty(document, 'hidden', {value: state === 'hidden', configurable: true});
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def _frozen_tab(new_tab) -> Tab:
    tab: Tab = new_tab(viewport={"width": 1000, "height": 600})
    tab.page.clock.install(time=T0)
    tab.page.clock.pause_at(T0 + dt.timedelta(seconds=1))
    return tab


def hide(tab: Tab) -> None:
    tab.page.evaluate(SET_VISIBILITY, "hidden")


def show(tab: Tab) -> None:
    tab.page.evaluate(SET_VISIBILITY, "visible")


def test_engagement_sends_engaged_time_as_deltas_with_scroll_depth(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    url = site.add("/article", body=TALL)
    tab.page.goto(url)
    tab.wait_sent(1, "pageview")

    tab.page.clock.fast_forward(5000)
    hide(tab)
    first = tab.wait_sent(1, "engagement")[0]
    assert first["e"] == 5000 and first["u"] == url
    assert first["sd"] == round(600 / tab.page.evaluate("document.documentElement.scrollHeight") * 100)

    # Hidden time does not count; a short visible spell without deeper scrolling is banked, not sent.
    tab.page.clock.fast_forward(60_000)
    show(tab)
    tab.page.clock.fast_forward(1000)
    hide(tab)
    tab.page.wait_for_timeout(200)
    assert len(tab.payloads("engagement")) == 1

    show(tab)
    tab.page.clock.fast_forward(2500)
    hide(tab)
    second = tab.wait_sent(2, "engagement")[1]
    assert second["e"] == 3500 and second["sd"] == first["sd"]

    rows = site.events(2, name="engagement")
    assert [r["engagement_time"] for r in rows] == [5000, 3500]
    assert rows[0]["scroll_depth"] == first["sd"]


def test_scrolling_deeper_sends_engagement_even_after_a_short_time(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    tab.page.goto(site.add("/scroll", body=TALL))
    tab.wait_sent(1, "pageview")
    tab.page.clock.fast_forward(1000)
    hide(tab)
    tab.wait_sent(1, "engagement")
    show(tab)
    tab.page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    tab.page.wait_for_function("window.scrollY > 0")
    tab.page.clock.fast_forward(500)
    hide(tab)
    second = tab.wait_sent(2, "engagement")[1]
    assert second["sd"] == 100 and second["e"] == 500
    assert site.events(2, name="engagement")[1]["scroll_depth"] == 100


def test_scroll_depth_follows_content_that_grows_after_load(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    tab.page.goto(site.add("/late", body='<div id="c" style="height:300px">short</div>'))
    tab.wait_sent(1, "pageview")
    # Content arrives later (an XHR-rendered list): the ResizeObserver must pick up the new height.
    tab.page.evaluate("document.getElementById('c').style.height = '6000px'")
    tab.page.wait_for_timeout(100)
    tab.page.clock.fast_forward(100)  # let the observer's frame run
    hide(tab)
    sd = tab.wait_sent(1, "engagement")[0]["sd"]
    height = tab.page.evaluate("document.documentElement.scrollHeight")
    assert height > 6000 and sd == round(600 / height * 100)


def test_blur_pauses_and_sends_engagement_focus_resumes(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    tab.page.goto(site.add("/focus"))
    tab.wait_sent(1, "pageview")
    tab.page.clock.fast_forward(4000)
    tab.page.evaluate("document.hasFocus = () => false; dispatchEvent(new Event('blur'))")
    assert tab.wait_sent(1, "engagement")[0]["e"] == 4000
    tab.page.clock.fast_forward(30_000)  # unfocused: not counted
    tab.page.evaluate("document.hasFocus = () => true; dispatchEvent(new Event('focus'))")
    tab.page.clock.fast_forward(3000)
    hide(tab)
    assert tab.wait_sent(2, "engagement")[1]["e"] == 3000


def test_spa_navigation_sends_the_previous_page_engagement_first(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    first_url = site.add("/one")
    tab.page.goto(first_url)
    tab.wait_sent(1, "pageview")
    tab.page.clock.fast_forward(7000)
    tab.page.evaluate("u => history.pushState({}, '', u)", site.prefix + "/two")
    tab.wait_sent(2, "pageview")
    names = [p["n"] for p in tab.payloads()]
    assert names == ["pageview", "engagement", "pageview"]
    engagement = tab.payloads("engagement")[0]
    assert engagement["u"] == first_url and engagement["e"] == 7000
    tab.page.clock.fast_forward(2000)
    hide(tab)
    later = tab.wait_sent(2, "engagement")[1]
    assert later["u"] == site.url("/two") and later["e"] == 2000
    rows = site.events(4)
    # The sending order is checked above, in the browser. The engagement for /one and the
    # pageview for /two leave together on separate connections, so the server may take them in
    # either order: compare what was stored, not the arrival order.
    assert sorted((r["name"], r["pathname"], r["engagement_time"]) for r in rows) == sorted([
        ("pageview", site.prefix + "/one", 0),
        ("engagement", site.prefix + "/one", 7000),
        ("pageview", site.prefix + "/two", 0),
        ("engagement", site.prefix + "/two", 2000),
    ])


def test_engagement_carries_the_pageview_props_and_hash_flag(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    attrs = 'data-domain="site.test" data-allow-automation data-manual data-hash'
    tab.page.goto(site.add("/props", attrs=attrs))
    tab.page.evaluate("plausible('pageview', {props: {author: 'ada'}})")
    tab.wait_sent(1, "pageview")
    tab.page.clock.fast_forward(3000)
    hide(tab)
    engagement = tab.wait_sent(1, "engagement")[0]
    assert engagement["p"] == {"author": "ada"} and engagement["h"] == 1
    assert site.events(2)[1]["props"] == {"author": "ada"}


def test_leaving_the_page_sends_its_engagement(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/leave"))
    tab.wait_sent(1, "pageview")
    tab.page.wait_for_timeout(300)
    tab.page.goto(site.url("/elsewhere"))  # a real unload: pagehide, then visibilitychange:hidden
    rows = site.events(1, name="engagement")
    assert rows[0]["pathname"] == site.prefix + "/leave" and rows[0]["engagement_time"] >= 250


def test_ignored_pageview_suppresses_its_engagement(site: Site, new_tab) -> None:
    tab = _frozen_tab(new_tab)
    attrs = f'data-domain="site.test" data-allow-automation data-exclude="{site.prefix}/private"'
    tab.page.goto(site.add("/private", attrs=attrs))
    tab.page.wait_for_function("window.plausible && window.plausible.l")
    tab.page.clock.fast_forward(5000)
    hide(tab)
    tab.page.wait_for_timeout(300)
    assert tab.payloads() == []
