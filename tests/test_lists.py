"""The gateway's list store (gateway/lists.py): update from a loopback HTTP server, validation, atomic storage, hot reload."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import DEFAULT_LIST_SOURCES as DEFAULT_SOURCES
from gateway.config import ListSettings, parse_lists
from gateway.errors import ConfigError
from gateway.lists import ListStore
from shields.lists import LIST_KINDS


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, body = self.files.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    """A loopback HTTP server serving the test's own small lists: (base URL, path → (status, body))."""
    files: dict[str, tuple[int, bytes]] = {}
    handler = type("Handler", (_Files,), {"files": files})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()


def hosts(n: int, prefix: str = "spam") -> bytes:
    return ("# a comment\n" + "".join(f"{prefix}{i}.example\n" for i in range(n))).encode()


def test_update_stores_the_list_with_metadata_and_loads_it(tmp_path: Path, server: tuple) -> None:
    base, files = server
    files["/spam.txt"] = (200, hosts(10))
    store = ListStore(tmp_path)
    result = store.update("referrer_spam", [f"{base}/spam.txt"])
    assert result.ok and result.count == 10 and result.previous_count is None
    assert (tmp_path / "lists" / "referrer_spam.txt").read_text().splitlines()[0] == "spam0.example"
    meta = json.loads((tmp_path / "lists" / "referrer_spam.json").read_text())
    assert meta["count"] == 10 and meta["sources"] == [f"{base}/spam.txt"] and meta["fetched_at"] > 0
    assert store.lists.referrer_spam.match("https://www.spam3.example/") == "spam3.example"


def test_update_merges_several_sources_and_json_range_files(tmp_path: Path, server: tuple) -> None:
    base, files = server
    files["/v4.txt"] = (200, b"203.0.113.0/24\n198.51.100.0/25\n")
    files["/cloud.json"] = (200, json.dumps({"prefixes": [{"ip_prefix": "192.0.2.0/24", "region": "x"}],
                                              "ipv6_prefixes": [{"ipv6_prefix": "2001:db8::/32"}]}).encode())
    store = ListStore(tmp_path)
    result = store.update("datacenter_ips", [f"{base}/v4.txt", f"{base}/cloud.json"])
    assert result.ok and result.count == 4
    for addr in ("203.0.113.9", "198.51.100.1", "192.0.2.200", "2001:db8::1"):
        assert addr in store.lists.datacenter_ips


def test_threat_list_keeps_the_first_field_of_each_line(tmp_path: Path, server: tuple) -> None:
    base, files = server
    files["/ipsum.txt"] = (200, b"# ipsum\n198.51.100.66\t5\n198.51.100.67\t3\n")
    store = ListStore(tmp_path)
    assert store.update("threat_ips", [f"{base}/ipsum.txt"]).ok
    assert "198.51.100.66" in store.lists.threat_ips and "198.51.100.68" not in store.lists.threat_ips


def test_a_list_that_shrinks_by_more_than_half_is_refused_unless_forced(tmp_path: Path, server: tuple) -> None:
    base, files = server
    store = ListStore(tmp_path)
    files["/spam.txt"] = (200, hosts(10))
    assert store.update("referrer_spam", [f"{base}/spam.txt"]).ok
    files["/spam.txt"] = (200, hosts(4, "other"))
    refused = store.update("referrer_spam", [f"{base}/spam.txt"])
    assert not refused.ok and "shrinks by more than half" in refused.message and refused.previous_count == 10
    assert "spam9.example" in store.path("referrer_spam").read_text()
    forced = store.update("referrer_spam", [f"{base}/spam.txt"], force=True)
    assert forced.ok and forced.count == 4
    assert store.lists.referrer_spam.match("https://other1.example/") and not store.lists.referrer_spam.match("https://spam9.example/")


def test_an_empty_list_is_refused(tmp_path: Path, server: tuple) -> None:
    base, files = server
    files["/empty.txt"] = (200, b"# nothing here\n\n")
    result = ListStore(tmp_path).update("referrer_spam", [f"{base}/empty.txt"])
    assert not result.ok and "no referrer_spam entries" in result.errors[0]
    assert not (tmp_path / "lists" / "referrer_spam.txt").exists()


def test_a_bad_source_keeps_the_old_list(tmp_path: Path, server: tuple) -> None:
    base, files = server
    store = ListStore(tmp_path)
    files["/spam.txt"] = (200, hosts(10))
    assert store.update("referrer_spam", [f"{base}/spam.txt"]).ok
    before = store.path("referrer_spam").read_bytes()
    for bad in (f"{base}/missing.txt", "http://127.0.0.1:9/closed.txt", str(tmp_path / "no-such-file")):
        result = store.update("referrer_spam", [bad])
        assert not result.ok and result.errors
    files["/html.txt"] = (200, b"<html>\n<body>\nrate limited\n</body>\n</html>\n")
    assert not store.update("referrer_spam", [f"{base}/html.txt"]).ok
    assert store.path("referrer_spam").read_bytes() == before
    assert store.lists.referrer_spam.match("https://spam1.example/")


def test_one_failed_source_among_good_ones_is_reported_but_does_not_block(tmp_path: Path, server: tuple) -> None:
    base, files = server
    files["/a.txt"] = (200, hosts(5, "a"))
    result = ListStore(tmp_path).update("referrer_spam", [f"{base}/a.txt", f"{base}/gone.txt"])
    assert result.ok and result.count == 5 and len(result.errors) == 1 and "gone.txt" in result.errors[0]


def test_local_paths_are_sources_too(tmp_path: Path) -> None:
    src = tmp_path / "mine.txt"
    src.write_bytes(hosts(3))
    assert ListStore(tmp_path / "data").update("referrer_spam", [str(src)]).ok


def test_a_worker_picks_up_a_new_list_without_restart(tmp_path: Path, server: tuple) -> None:
    base, files = server
    updater = ListStore(tmp_path)
    worker = ListStore(tmp_path, check_interval=10)
    assert worker.load_all() == {kind: False for kind in LIST_KINDS}
    files["/spam.txt"] = (200, hosts(3))
    assert updater.update("referrer_spam", [f"{base}/spam.txt"]).ok
    assert worker.maybe_reload(now=100.0) == ["referrer_spam"]
    assert worker.lists.referrer_spam.match("https://spam2.example/")
    files["/spam.txt"] = (200, hosts(5))
    assert updater.update("referrer_spam", [f"{base}/spam.txt"]).ok
    assert worker.maybe_reload(now=105.0) == []  # checks at most every check_interval seconds
    assert worker.maybe_reload(now=110.0) == ["referrer_spam"]
    assert worker.lists.referrer_spam.match("https://spam4.example/")
    assert worker.maybe_reload(now=120.0) == []  # nothing changed


def test_status_says_which_lists_are_missing_or_stale(tmp_path: Path, server: tuple) -> None:
    base, files = server
    store = ListStore(tmp_path, ListSettings(max_age_seconds=3600))
    files["/spam.txt"] = (200, hosts(3))
    store.update("referrer_spam", [f"{base}/spam.txt"])
    fetched = store.metadata("referrer_spam")["fetched_at"]  # type: ignore[index]
    status = {s.kind: s for s in store.status(now=fetched + 10)}
    assert status["referrer_spam"].loaded and not status["referrer_spam"].stale and status["referrer_spam"].count == 3
    assert status["threat_ips"].missing and status["threat_ips"].stale and status["threat_ips"].age_seconds is None
    assert {s.kind: s for s in store.status(now=fetched + 7200)}["referrer_spam"].stale
    assert store.due(now=fetched + 10) == ["datacenter_ips", "threat_ips"]


def test_lists_config_validates_sources_and_keeps_defaults(tmp_path: Path) -> None:
    settings = parse_lists(
        {"refresh_interval": "12h", "referrer_spam": {"sources": ["https://lists.example/spam.txt", "extra.txt"]}},
        "gateway.toml", tmp_path,
    )
    assert settings.refresh_seconds == 12 * 3600
    assert settings.sources["referrer_spam"] == ("https://lists.example/spam.txt", str(tmp_path / "extra.txt"))
    assert settings.sources["threat_ips"] == DEFAULT_SOURCES["threat_ips"]
    assert all(s.startswith("https://") for kind in LIST_KINDS for s in DEFAULT_SOURCES[kind])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"referrer_spam": {"sources": ["http://lists.example/spam.txt"]}}, "lists.referrer_spam.sources[0]"),
        ({"referrer_spam": {"sources": ["ftp://x/y"]}}, "unsupported scheme"),
        ({"referer_spam": {"sources": []}}, "lists.referer_spam: unknown key"),
        ({"threat_ips": {"source": []}}, "lists.threat_ips.source: unknown key"),
        ({"refresh_interval": "soon"}, "lists.refresh_interval"),
    ],
)
def test_bad_lists_config_names_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_lists(table, "gateway.toml")
