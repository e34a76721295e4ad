"""Exclusions: nothing leaves the page for localhost, file:, opted-out browsers, DNT (when asked),
excluded paths, or events a before-send hook cancels."""

from __future__ import annotations

from pathlib import Path

from conftest import Site, Tab

LOADED = "window.plausible && window.plausible.l"
BASE = 'data-domain="site.test" data-allow-automation'


def _nothing_sent(tab: Tab, wait_ms: int = 400) -> None:
    tab.page.wait_for_function(LOADED)
    tab.page.wait_for_timeout(wait_ms)
    assert tab.payloads() == []


def test_localhost_and_loopback_pages_send_nothing(site: Site, new_tab) -> None:
    site.add("/local")
    for host in ("localhost", "127.0.0.1"):
        tab: Tab = new_tab()
        tab.page.goto(site.url("/local", host=host))
        tab.page.wait_for_function(LOADED)
        called = tab.page.evaluate("() => new Promise(r => plausible('Local', {callback: r}))")
        assert called is None
        _nothing_sent(tab)


def test_allow_localhost_attribute_sends_from_localhost(site: Site, new_tab) -> None:
    tab: Tab = new_tab()
    tab.page.goto(site.add("/local-ok", attrs=BASE + " data-allow-localhost").replace("site.test", "localhost"))
    sent = tab.wait_sent(1, "pageview")[0]
    assert sent["u"].startswith("http://localhost:")


def test_file_pages_send_nothing(site: Site, new_tab, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(f'<!doctype html><script src="{site.script_src}" {BASE}></script>')
    tab: Tab = new_tab()
    tab.page.goto(page.as_uri())
    _nothing_sent(tab)


def test_local_storage_opt_out_blocks_pageviews_and_custom_events(site: Site, new_tab) -> None:
    tab: Tab = new_tab(init_script="localStorage.setItem('plausible_ignore', 'true')")
    tab.page.goto(site.add("/ignored"))
    tab.page.wait_for_function(LOADED)
    # The callback still runs, so code waiting on it is never stuck.
    assert tab.page.evaluate("() => new Promise(r => plausible('Signup', {callback: r}))") is None
    _nothing_sent(tab)
    site.no_events(settle=0.2)


def test_toggle_fragment_opts_out_and_back_in(site: Site, new_tab) -> None:
    url = site.add("/toggle")
    tab: Tab = new_tab()
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    tab.page.on("dialog", accept)
    tab.page.goto(url + "#toggle-plausible-ignore")
    _nothing_sent(tab)
    assert tab.page.evaluate("localStorage.plausible_ignore") == "true"
    assert "ignored" in dialogs[0]

    tab.page.evaluate("location.hash = ''")
    tab.page.evaluate("location.hash = '#toggle-plausible-ignore'")  # same page, fragment only
    tab.page.wait_for_function("localStorage.plausible_ignore === undefined")
    assert "counted again" in dialogs[1]
    tab.page.goto(site.url("/toggle?after=1"))
    tab.wait_sent(1, "pageview")
    assert len(site.events(1, name="pageview")) == 1


DNT = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})"


def test_do_not_track_is_honoured_only_with_the_attribute(site: Site, new_tab) -> None:
    tab: Tab = new_tab(init_script=DNT)
    tab.page.goto(site.add("/dnt", attrs=BASE + " data-dnt"))
    _nothing_sent(tab)

    tab = new_tab(init_script=DNT)
    tab.page.goto(site.add("/dnt-ignored"))
    tab.wait_sent(1, "pageview")
    assert site.events(1, name="pageview")[0]["pathname"] == site.prefix + "/dnt-ignored"


def _visit(tab: Tab, site: Site, paths: list[str]) -> None:
    for p in paths:
        tab.page.evaluate("u => history.pushState({}, '', u)", site.prefix + p)
    tab.page.evaluate("plausible('Done')")
    tab.wait_sent(1, "Done")


def test_include_patterns_limit_tracking_to_matching_paths(site: Site, new_tab) -> None:
    attrs = BASE + f' data-include="{site.prefix}/blog/**, {site.prefix}/docs/*"'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/blog/2024/post", attrs=attrs))
    tab.wait_sent(1, "pageview")
    _visit(tab, site, ["/shop", "/docs/intro", "/docs/intro/deep", "/docs/", "/blog/"])
    assert [p["u"].removeprefix(site.url("")) for p in tab.payloads("pageview")] == [
        "/blog/2024/post", "/docs/intro", "/docs/", "/blog/"
    ]
    rows = site.events(4, name="pageview")
    # Sending order is checked above; requests in flight together may be stored in any order.
    assert sorted(r["pathname"] for r in rows) == sorted(
        site.prefix + p for p in ("/blog/2024/post", "/docs/intro", "/docs/", "/blog/")
    )


def test_exclude_patterns_skip_matching_paths(site: Site, new_tab) -> None:
    attrs = BASE + f' data-exclude="{site.prefix}/admin/*,{site.prefix}/private/**,{site.prefix}/exact"'
    tab: Tab = new_tab()
    tab.page.goto(site.add("/home", attrs=attrs))
    tab.wait_sent(1, "pageview")
    _visit(tab, site, ["/admin/users", "/admin/users/edit", "/private/a/b/c", "/exact/", "/exactly", "/admin"])
    assert [p["u"].removeprefix(site.url("")) for p in tab.payloads("pageview")] == [
        "/home", "/admin/users/edit", "/exactly", "/admin"
    ]
    assert len(site.events(4, name="pageview")) == 4


def test_before_send_hook_rewrites_and_cancels_events(site: Site, new_tab) -> None:
    hook = """<script>
      function scrub(event) {
        if (event.n === 'Secret') return null;
        event.u = event.u.split('?')[0];
        event.p = Object.assign({}, event.p, {scrubbed: 'yes'});
        return event;
      }
    </script>"""
    tab: Tab = new_tab()
    tab.page.goto(site.add("/account", head=hook, attrs=BASE + ' data-before-send="scrub"') + "?email=a@b.test")
    sent = tab.wait_sent(1, "pageview")[0]
    assert sent["u"] == site.url("/account") and sent["p"] == {"scrubbed": "yes"}
    assert tab.page.evaluate("() => new Promise(r => plausible('Secret', {callback: r}))") is None
    tab.page.evaluate("plausible('Public')")
    tab.wait_sent(1, "Public")
    assert tab.payloads("Secret") == []
    rows = site.events(2)
    assert {r["name"] for r in rows} == {"pageview", "Public"} and rows[0]["props"] == {"scrubbed": "yes"}


def test_transform_request_init_option_is_the_same_hook(site: Site, new_tab) -> None:
    snippet = (
        "<script>window.plausible=window.plausible||function(){(plausible.q=plausible.q||[]).push(arguments)},"
        "plausible.init=plausible.init||function(i){plausible.o=i||{}};"
        "plausible.init({allowAutomation: true, transformRequest: e => e.n === 'pageview' ? null : e})</script>"
    )
    tab: Tab = new_tab()
    tab.page.goto(site.add("/transform", head=snippet, attrs=""))
    tab.page.wait_for_function(LOADED)
    tab.page.evaluate("plausible('Kept')")
    tab.wait_sent(1, "Kept")
    assert tab.payloads("pageview") == []
