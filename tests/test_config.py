from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gateway.config import ServerApiConfig, load_gateway_config
from gateway.ingest.sites import load_sites
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_shipped_config_and_example_site_are_valid() -> None:
    cfg = load_gateway_config(ROOT / "config" / "gateway.toml")
    sites = load_sites(cfg.sites_dir)
    assert cfg.server.port == 8000 and cfg.sink.type == "sqlite"
    assert sites.get("example.com") is not None


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load_gateway_config(write(tmp_path / "etc" / "gw.toml", 'data_dir = "d"\nsites_dir = "s"\n'))
    assert cfg.data_dir == tmp_path / "etc" / "d"
    assert cfg.sites_dir == tmp_path / "etc" / "s"


@pytest.mark.parametrize("text,key,reason", [
    ('trusted_proxies = ["10.0.0.0/33"]', "trusted_proxies[0]", "is not an address or network"),
    ("[server]\nport = 70000", "server.port", "at most 65535"),
    ("[server]\nworkers = 0", "server.workers", "at least 1"),
    ('[sink]\ntype = "mysql"', "sink.type", "must be 'sqlite' or 'clickhouse'"),
    ("listen = 1", "listen", "unknown key"),
    ("[server\n", "", "not valid TOML"),
])
def test_bad_gateway_config_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path / "gw.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(path)
    assert str(path) in str(exc.value) and key in str(exc.value) and reason in str(exc.value)


def test_sites_are_keyed_by_lower_cased_domain_and_aliases(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'domain = "WWW.Shop.Example"\naliases = ["shop.example.org"]\n')
    sites = load_sites(tmp_path)
    assert sites.get("shop.example") is sites.get("shop.example.org") is not None


@pytest.mark.parametrize("text,key", [
    ('aliases = ["x.test"]', "domain"),
    ("domain = 5", "domain"),
    ('domain = "a.test"\naliases = "b.test"', "aliases"),
    ('domain = "a.test"\ncolour = "red"', "colour"),
    ('domain = "a.test"\n[rate_limit]\nevents_per_minute = -1', "rate_limit.events_per_minute"),
])
def test_bad_site_file_is_refused_with_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_sites(tmp_path)
    assert str(path) in str(exc.value) and key in str(exc.value)


def test_two_sites_claiming_one_domain_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'domain = "a.test"\n')
    write(tmp_path / "b.toml", 'domain = "b.test"\naliases = ["a.test"]\n')
    with pytest.raises(ConfigError, match="already declared"):
        load_sites(tmp_path)


def test_salts_table_is_refused_and_log_level_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="salts: unknown key"):
        load_gateway_config(write(tmp_path / "a.toml", "[salts]\ndir = 'x'\n"))
    assert load_gateway_config(write(tmp_path / "b.toml", 'log_level = "warning"\n')).log_level == "warning"
    with pytest.raises(ConfigError, match="log_level: must be"):
        load_gateway_config(write(tmp_path / "c.toml", 'log_level = "loud"\n'))


@pytest.mark.parametrize("text,key", [
    ("[server]\nthreads = 4", "server.threads"),
    ("[limits]\nmax_events = 4", "limits.max_events"),
    ('[sink]\ntype = "sqlite"\nurl = "http://x/"', "sink.url"),
    ("[tracker]\nalias = '/a.js'", "tracker.alias"),
])
def test_an_unknown_key_in_any_table_is_an_error(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(write(tmp_path / "gw.toml", text))
    assert exc.value.key == key and "unknown key" in exc.value.reason


def test_retention_defaults_to_7_days_of_drop_records_and_reads_what_is_set(tmp_path: Path) -> None:
    default = load_gateway_config(write(tmp_path / "a.toml", 'data_dir = "d"\n'))
    assert default.retention.drops_days == 7 and default.retention.counts_days == 400
    assert default.retention.drop_records_per_minute == 60
    assert default.retention_days == {"drops": 7, "counts": 400}  # what the shipper expires by
    empty_table = load_gateway_config(write(tmp_path / "b.toml", "[retention]\n"))
    assert empty_table.retention_days == {"drops": 7, "counts": 400}
    set_ = load_gateway_config(write(tmp_path / "c.toml", "[retention]\ndrops_days = 3\ncounts_days = 30\n"))
    assert set_.retention_days == {"drops": 3, "counts": 30}
    for bad in ("drops_days = 0", "drops_days = 4000", 'drops_days = "7"'):
        with pytest.raises(ConfigError) as exc:
            load_gateway_config(write(tmp_path / "d.toml", f"[retention]\n{bad}\n"))
        assert exc.value.key == "retention.drops_days", bad


def test_an_unknown_key_in_a_site_table_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'domain = "a.test"\n[velocity]\nmax_events = 5\n')
    with pytest.raises(ConfigError) as exc:
        load_sites(tmp_path)
    assert exc.value.key == "velocity.max_events"


def test_every_key_the_gateway_reads_is_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import config

    seen: set[str] = set()
    get = config.Table.get

    def spy(self: config.Table, name: str, default: object = config._MISSING) -> object:
        seen.add(self.key(name))
        return get(self, name, default)

    monkeypatch.setattr(config.Table, "get", spy)
    monkeypatch.setenv("GW_DOC_TEST", "x")
    common = 'log_level = "info"\n[server]\n[limits]\n[spool]\n[tracker]\n[lists]\n[lists.referrer_spam]\n'
    load_gateway_config(write(tmp_path / "a.toml", common + '[sink]\ntype = "sqlite"\n'))
    load_gateway_config(write(tmp_path / "b.toml", common + '[sink]\ntype = "clickhouse"\nurl = "http://x:8123/"\n'
                                                   '[shared]\ntype = "redis"\npassword_env = "GW_DOC_TEST"\n'))
    docs = "".join((ROOT / "docs" / name).read_text() for name in ("configuration.md", "scaling.md", "shields.md"))
    missing = sorted(k for k in seen if f"`{k.rsplit('.', 1)[-1]}`" not in docs and k.rsplit(".", 1)[-1] not in docs)
    assert not missing, f"keys read by gateway/config.py but not in docs: {missing}"
    assert "[salts]" not in docs


def test_a_proxy_written_ipv4_mapped_is_its_ipv4_network(tmp_path: Path) -> None:
    import ipaddress

    cfg = load_gateway_config(write(tmp_path / "gw.toml", 'trusted_proxies = ["::ffff:10.0.0.0/104", "::ffff:192.0.2.1"]\n'))
    for peer in ("10.0.0.5", "10.255.1.1", "192.0.2.1"):
        assert cfg.trusted_proxies.contains(ipaddress.ip_address(peer)), peer
    assert not cfg.trusted_proxies.contains(ipaddress.ip_address("11.0.0.1"))


# --- [server_api] -------------------------------------------------------------------------------

def _server_api(tmp_path: Path, body: str) -> ServerApiConfig:
    return load_gateway_config(write(tmp_path / "gw.toml", f"[server_api]\n{body}\n")).server_api


def test_server_api_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    api = _server_api(tmp_path, "")
    assert (api.max_age_seconds, api.max_events, api.max_body_bytes, api.max_inflation_ratio,
            api.events_per_minute, api.burst) == (7 * 86400, 1000, 4 * 1024 * 1024, 50, 1000, None)


@pytest.mark.parametrize("text,seconds", [('"7d"', 7 * 86400), ('"36h"', 36 * 3600), ('"90m"', 5400),
                                          ('"3600s"', 3600), ("86400", 86400), ("60", 60), ("129600.5", 129600.5)])
def test_server_api_max_age_is_a_duration(tmp_path: Path, text: str, seconds: float) -> None:
    assert _server_api(tmp_path, f"max_age = {text}").max_age_seconds == seconds


@pytest.mark.parametrize("text,reason", [
    ("max_age = 7", "from 1 minute to 3660 days"),  # seconds, not days: refused, not silently 7 s
    ('max_age = "0d"', "from 1 minute to 3660 days"),
    ('max_age = "3661d"', "from 1 minute to 3660 days"),
    ('max_age = "7 days"', "is not a duration"),
    ('max_age = "d"', "is not a duration"),
    ("max_age = -5", "is not a duration"),
    ("max_age = true", "must be seconds or a duration"),
    ("max_age_days = 7", "is now max_age"),
    ("max_age_hours = 7", "unknown key"),
    ("max_events = 0", "at least 1"),
    ("max_events = 10001", "at most 10000"),
    ("max_body_bytes = 100", "at least 1024"),
    ("max_inflation_ratio = 1", "at least 2"),
    ('events_per_minute = "lots"', "an integer"),
    ("burst = 0", "at least 1"),
])
def test_a_bad_server_api_key_is_refused_with_its_name(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _server_api(tmp_path, text)
    assert exc.value.key == "server_api." + text.split(" ")[0] and reason in exc.value.reason, exc.value


@given(n=st.integers(min_value=0, max_value=10**7), unit=st.sampled_from("smhd"))
@settings(max_examples=200, deadline=None)
def test_any_max_age_in_range_is_read_and_any_other_refused(tmp_path_factory: pytest.TempPathFactory,
                                                            n: int, unit: str) -> None:
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    base = tmp_path_factory.mktemp("cfg")
    if 60 <= seconds <= 3660 * 86400:
        assert _server_api(base, f'max_age = "{n}{unit}"').max_age_seconds == seconds
    else:
        with pytest.raises(ConfigError):
            _server_api(base, f'max_age = "{n}{unit}"')
