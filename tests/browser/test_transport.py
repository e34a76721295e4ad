"""Transport and the automation signal: a simple text/plain fetch (no CORS preflight), sendBeacon
only without keepalive, and automated browsers reported to the gateway rather than hidden."""

from __future__ import annotations

from conftest import Site, Tab

LOADED = "window.plausible && window.plausible.l"


def test_events_are_simple_text_plain_posts_with_no_preflight(site: Site, new_tab) -> None:
    # The site server relays api.test to the gateway and records every request it relays, so a
    # preflight (invisible to the page's request events) would show up here.
    api = f"http://api.test:{site.port}/api/event"
    seen = site.server.seen
    before = len(seen)
    tab: Tab = new_tab(init_script="navigator.sendBeacon = () => { window.beacons = (window.beacons || 0) + 1; return true }")
    tab.page.goto(site.add("/transport", attrs=f'data-domain="site.test" data-allow-automation data-api="{api}"'))
    tab.wait_sent(1, "pageview")
    status = tab.page.evaluate("() => new Promise(r => plausible('Ping', {callback: r}))")
    assert status == {"status": 202}
    assert site.events(2)
    relayed = [(m, h["Content-Type"] if "Content-Type" in h else None) for m, host, _, h in seen[before:]]
    assert relayed == [("POST", "text/plain"), ("POST", "text/plain")]
    assert all(s.method == "POST" and s.resource_type == "fetch" for s in tab.sent)
    assert tab.page.evaluate("window.beacons") is None

    # Control: the recorder does see a preflight when a request is not "simple".
    tab.page.evaluate("u => fetch(u, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).catch(() => null)", api)
    assert [m for m, *_ in seen[before + 2:]][:1] == ["OPTIONS"]


def test_send_beacon_is_used_only_when_fetch_cannot_keep_alive(site: Site, new_tab) -> None:
    tab: Tab = new_tab(init_script="delete Request.prototype.keepalive")
    tab.page.goto(site.add("/beacon"))
    sent = tab.wait_sent(1, "pageview")
    assert tab.sent[0].resource_type == "ping"
    assert tab.sent[0].headers.get("content-type", "").startswith("text/plain")
    assert sent[0]["n"] == "pageview"
    assert site.events(1, name="pageview")[0]["pathname"] == site.prefix + "/beacon"


def test_automation_is_reported_and_the_gateway_drops_it_as_a_bot(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    assert tab.page.evaluate("navigator.webdriver") is True
    tab.page.goto(site.add("/robot", attrs='data-domain="site.test"'))
    sent = tab.wait_sent(1, "pageview")[0]
    assert sent["b"] == 1
    deadline = 50
    while not tab.responses and deadline:
        tab.page.wait_for_timeout(50)
        deadline -= 1
    assert tab.responses[0] == {"accepted": 0, "dropped": 1}
    site.no_events()


def test_allow_automation_attribute_sends_as_a_normal_browser(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/tested"))
    sent = tab.wait_sent(1, "pageview")[0]
    assert "b" not in sent
    assert site.events(1, name="pageview")


def test_other_automation_globals_are_reported_too(site: Site, new_tab) -> None:
    tab: Tab = new_tab(init_script="Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => false}); window.Cypress = {}")
    tab.page.goto(site.add("/cypress", attrs='data-domain="site.test"'))
    assert tab.wait_sent(1, "pageview")[0]["b"] == 1
    site.no_events()
