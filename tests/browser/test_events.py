"""Custom events, the queue stub, init(), and the opt-in outbound-link, download and form events."""

from __future__ import annotations

from conftest import Site, Tab

STUB = (
    "<script>window.plausible=window.plausible||function(){(plausible.q=plausible.q||[]).push(arguments)},"
    "plausible.init=plausible.init||function(i){plausible.o=i||{}}</script>"
)
LOADED = "window.plausible && window.plausible.l"


def test_custom_event_with_props_revenue_and_callback(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/shop"))
    tab.page.wait_for_function(LOADED)
    result = tab.page.evaluate(
        """() => new Promise(resolve => plausible('Purchase', {
             props: {plan: 'pro', seats: 3},
             revenue: {amount: 29.5, currency: 'EUR'},
             callback: resolve,
           }))"""
    )
    assert result == {"status": 202}
    sent = tab.payloads("Purchase")[0]
    assert sent["p"] == {"plan": "pro", "seats": 3} and sent["$"] == {"amount": 29.5, "currency": "EUR"}
    row = site.events(1, name="Purchase")[0]
    assert row["props"] == {"plan": "pro", "seats": "3"}
    assert row["pathname"] == site.prefix + "/shop" and row["interactive"] == 1
    assert row["revenue_source_currency"] == "EUR" and float(row["revenue_source_amount"]) == 29.5


def test_non_interactive_event_and_url_override(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/video"))
    tab.page.wait_for_function(LOADED)
    tab.page.evaluate("u => plausible('Autoplay', {interactive: false, u})", site.url("/virtual/video-7"))
    assert tab.wait_sent(1, "Autoplay")[0]["i"] is False
    row = site.events(1, name="Autoplay")[0]
    assert row["interactive"] == 0 and row["pathname"] == site.prefix + "/virtual/video-7"


def test_calls_made_before_the_script_loads_are_replayed(site: Site, new_tab) -> None:
    early = STUB + "<script>plausible('Early', {props: {when: 'before-load'}})</script>"
    tab: Tab = new_tab()
    tab.page.goto(site.add("/queue", head=early))
    sent = tab.wait_sent(2)
    assert [p["n"] for p in sent] == ["pageview", "Early"]
    rows = site.events(2)
    assert rows[-1]["name"] == "Early" or rows[0]["name"] == "Early"
    assert site.events(1, name="Early")[0]["props"] == {"when": "before-load"}


def test_plausible_snippet_init_configures_the_script_without_attributes(site: Site, new_tab) -> None:
    snippet = (
        STUB + "<script>plausible.init({domain: 'site.test', allowAutomation: true, hashBasedRouting: true,"
        " customProperties: name => ({via: 'init-' + name}), outboundLinks: true})</script>"
    )
    tab: Tab = new_tab()
    tab.page.goto(site.add("/snippet", head=snippet, attrs=""))
    sent = tab.wait_sent(1, "pageview")[0]
    assert sent["d"] == "site.test" and sent["h"] == 1 and sent["p"] == {"via": "init-pageview"}
    assert site.events(1, name="pageview")[0]["props"] == {"via": "init-pageview"}


def test_init_called_after_the_script_loaded_starts_it(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/late-init", attrs=""))
    tab.page.wait_for_function(LOADED)
    tab.page.evaluate("plausible('Queued')")
    tab.page.wait_for_timeout(200)
    assert tab.payloads() == []  # no data-domain and no init(): waiting to be configured
    tab.page.evaluate("plausible.init({allowAutomation: true})")
    sent = tab.wait_sent(2)
    assert [p["n"] for p in sent] == ["pageview", "Queued"] and sent[0]["d"] == "site.test"


def test_outbound_link_click_is_sent_and_navigation_proceeds(site: Site, new_tab) -> None:
    target = f"http://other.test:{site.port}/landing?ref=1"
    body = f'<a id="out" href="{target}">out</a> <a id="in" href="inside">in</a>'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/links", attrs='data-domain="site.test" data-allow-automation data-outbound-links', body=body))
    tab.wait_sent(1, "pageview")
    with tab.page.expect_navigation(timeout=3000):
        tab.page.click("#out")
    assert tab.page.url == target
    row = site.events(1, name="Outbound Link: Click")[0]
    assert row["props"] == {"url": target} and row["pathname"] == site.prefix + "/links"


def test_outbound_middle_click_and_new_tab_links_are_sent(site: Site, new_tab) -> None:
    target = f"http://other.test:{site.port}/blank"
    body = f'<a id="out" href="{target}" target="_blank">out</a>'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/tabs", attrs='data-domain="site.test" data-allow-automation data-outbound-links', body=body))
    tab.wait_sent(1, "pageview")
    # Runs after the tracker's document listener: records whether anything cancelled the click.
    tab.page.evaluate("addEventListener('click', e => { window.prevented = e.defaultPrevented })")
    with tab.page.context.expect_page() as popup:
        tab.page.click("#out")
    assert popup.value.url.startswith(target)
    assert tab.page.evaluate("window.prevented") is False
    tab.page.click("#out", button="middle")
    rows = site.events(2, name="Outbound Link: Click")
    assert [r["props"]["url"] for r in rows] == [target, target]


def test_outbound_links_are_not_tracked_without_the_attribute(site: Site, new_tab) -> None:
    body = f'<a id="out" href="http://other.test:{site.port}/x">out</a>'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/plain", body=body))
    tab.wait_sent(1, "pageview")
    with tab.page.expect_navigation():
        tab.page.click("#out")
    assert tab.payloads("Outbound Link: Click") == []
    site.no_events(name="Outbound Link: Click")


def test_file_download_is_sent_without_query_and_the_download_happens(site: Site, new_tab) -> None:
    body = '<a id="pdf" href="files/report.PDF?token=secret">pdf</a><a id="txt" href="files/notes.txt">txt</a>'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/downloads", attrs='data-domain="site.test" data-allow-automation data-file-downloads', body=body))
    tab.wait_sent(1, "pageview")
    with tab.page.expect_download() as download:
        tab.page.click("#pdf")
    assert download.value.suggested_filename == "report.PDF"
    with tab.page.expect_download():
        tab.page.click("#txt")
    rows = site.events(2, name="File Download")
    assert sorted(r["props"]["url"] for r in rows) == [site.url("/files/notes.txt"), site.url("/files/report.PDF")]


def test_file_types_attribute_replaces_the_default_list(site: Site, new_tab) -> None:
    body = '<a id="pdf" href="files/a.pdf">pdf</a><a id="txt" href="files/b.txt">txt</a>'
    tab: Tab = new_tab()
    attrs = 'data-domain="site.test" data-allow-automation data-file-types="txt, csv"'
    tab.page.goto(site.add("/types", attrs=attrs, body=body))
    tab.wait_sent(1, "pageview")
    with tab.page.expect_download():
        tab.page.click("#pdf")
    with tab.page.expect_download():
        tab.page.click("#txt")
    sent = tab.wait_sent(1, "File Download")
    tab.page.wait_for_timeout(200)
    assert [p["p"]["url"] for p in tab.payloads("File Download")] == [site.url("/files/b.txt")]
    assert sent and site.events(1, name="File Download")[0]["props"]["url"] == site.url("/files/b.txt")


def test_form_submission_is_sent_and_the_form_still_submits(site: Site, new_tab) -> None:
    body = '<form id="f" method="post" action="thanks"><input name="email" required><button>send</button></form>'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/contact", attrs='data-domain="site.test" data-allow-automation data-form-submissions', body=body))
    tab.wait_sent(1, "pageview")
    tab.page.click("button")  # invalid (required field empty): the browser blocks it, nothing is sent
    tab.page.wait_for_timeout(200)
    assert tab.payloads("Form: Submission") == []
    tab.page.fill("input", "a@b.test")
    with tab.page.expect_navigation():
        tab.page.click("button")
    assert tab.page.url == site.url("/thanks") and "posted" in tab.page.content()
    assert site.events(1, name="Form: Submission")[0]["pathname"] == site.prefix + "/contact"
