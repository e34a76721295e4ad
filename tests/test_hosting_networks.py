"""Hosting and VPN networks out of the box: the ASN table geo install puts in the data dir, the
classification of its networks, and the dc_ip shield and a site's `ignore` on top of them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.ingest.body import ParsedEvent
from gateway.ingest.clients import Client
from gateway.ingest.sites import Sites, parse_site
from gateway.lists import ListStore
from gateway.runtime import offline_executor
from geo import AsnTable, AsnTableError, GeoInstallError, install_asn, installed_asn
from geo.asn import write_table
from shields.errors import RuleError
from shields.hosting import HOSTING, VPN, classify_networks, load_naming_rules
from shields.iplists import DatacenterShield
from shields.lists import LiveLists
from shields.model import DropReason, SiteConfig
from test_geo_install import FakeRegistry, registry  # noqa: F401  (the fake npm registry fixture)

V4 = [["16777216", "16777471", "64500", "Example Hosting Ltd"],       # 1.0.0.0/24
      ["16777472", "16777727", "64501", "Example Broadband Cable Co"],  # 1.0.1.0/24
      ["16777728", "16777983", "64502", "Example VPN Service"],        # 1.0.2.0/24
      ["3221225984", "3221226239", "64503", "Acme Cloud Telecom"]]     # 192.0.2.0/24
V6 = [[str(int(ipaddress.IPv6Address("2001:db8::"))), str(int(ipaddress.IPv6Address("2001:db8::ffff"))),
       "64500", "Example Hosting Ltd"]]


def table(tmp_path: Path) -> AsnTable:
    write_table(V4, V6, tmp_path / "asn.bin", tmp_path / "asn-orgs.json")
    return AsnTable.open(tmp_path / "asn.bin", tmp_path / "asn-orgs.json")


def test_the_table_answers_as_numbers_for_both_families(tmp_path: Path) -> None:
    t = table(tmp_path)
    assert len(t) == 5
    assert t.lookup(ipaddress.ip_address("1.0.0.77")) == 64500
    assert t.lookup(ipaddress.ip_address("1.0.1.0")) == 64501 and t.lookup(ipaddress.ip_address("1.0.2.255")) == 64502
    assert t.lookup(ipaddress.ip_address("1.0.3.0")) is None and t.lookup(ipaddress.ip_address("0.255.255.255")) is None
    assert t.lookup(ipaddress.ip_address("2001:db8::1")) == 64500 and t.lookup(ipaddress.ip_address("2001:db9::")) is None
    assert t.lookup(ipaddress.ip_address("::ffff:1.0.0.1")) == 64500  # IPv4-mapped is IPv4
    assert t.orgs[64501] == "Example Broadband Cable Co"


def test_a_truncated_table_is_refused(tmp_path: Path) -> None:
    table(tmp_path)
    data = (tmp_path / "asn.bin").read_bytes()
    (tmp_path / "asn.bin").write_bytes(data[:-3])
    with pytest.raises(AsnTableError, match="truncated"):
        AsnTable.open(tmp_path / "asn.bin", tmp_path / "asn-orgs.json")


def _csv(rows: list[list[str]]) -> bytes:
    return "".join(",".join(f'"{c}"' if "," in c else c for c in r) + "\n" for r in rows).encode()


def test_geo_install_fetches_verifies_and_converts_the_asn_package(tmp_path: Path, registry: FakeRegistry) -> None:  # noqa: F811
    files = {"package/asn-ipv4-num.csv": _csv(V4), "package/asn-ipv6-num.csv": _csv(V6),
             "package/ROUTEVIEWS-LICENSE": b"routeviews", "package/package.json": b"{}"}
    integrity = registry.publish("2.0.0", files)
    found = install_asn(tmp_path, "@example/city-mmdb", "2.0.0", registry.url, expected_integrity=integrity, timeout=5)
    assert found == installed_asn(tmp_path) and found["ranges"] == 5
    assert (tmp_path / "geo" / "ROUTEVIEWS-LICENSE").exists()
    t = AsnTable.open(found["table"], found["orgs"])
    assert t.lookup(ipaddress.ip_address("1.0.2.3")) == 64502
    asked = len(registry.requests)
    install_asn(tmp_path, "@example/city-mmdb", "2.0.0", registry.url, expected_integrity=integrity, timeout=5)
    assert [r for r in registry.requests[asked:] if r.startswith("/t/")] == []  # nothing downloaded again
    with pytest.raises(GeoInstallError, match="pinned"):
        install_asn(tmp_path, "@example/city-mmdb", "2.0.0", registry.url, expected_integrity="sha512-AAAA", timeout=5)
    registry.publish("2.0.1", {"package/asn-ipv4-num.csv": _csv(V4)})
    with pytest.raises(GeoInstallError, match="asn-ipv6-num.csv"):
        install_asn(tmp_path, "@example/city-mmdb", "2.0.1", registry.url, expected_integrity=None, timeout=5)
    assert installed_asn(tmp_path)["version"] == "2.0.0"  # type: ignore[index]


@pytest.mark.parametrize(("name", "kind"), [
    ("Example Hosting Ltd", HOSTING), ("Secured Servers LLC", HOSTING), ("NTT Global Data Centers EMEA", HOSTING),
    ("Acme VPS", HOSTING), ("Leaseweb Canada Inc.", HOSTING), ("PlusServer GmbH", HOSTING),
    ("Delos Cloud GmbH", HOSTING), ("Example VPN Service", VPN),
    ("Acme Cloud Telecom", ""),  # "cloud" with an access network's word
    ("Comcast Cable Communications, LLC", ""), ("Leibniz-Rechenzentrum", ""), ("Example University Hosting", ""),
    ("Vodafone GmbH", ""), ("Google Fiber Inc.", ""), ("Deutsche Telekom AG", ""),
])
def test_networks_are_classified_by_what_their_names_say(name: str, kind: str) -> None:
    assert load_naming_rules().classify(name) == kind


def test_curated_lists_win_over_names() -> None:
    hosting, vpn = classify_networks({13335: "Cloudflare, Inc.", 9009: "M247 Europe SRL", 24940: "Hetzner Online GmbH",
                                      64500: "Example Hosting Ltd", 64501: "Example Broadband"})
    assert 13335 not in hosting  # carries people (WARP)
    assert 9009 in vpn and 9009 not in hosting and 24940 in hosting and 64500 in hosting and 64501 not in hosting


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _client(ip: str) -> Client:
    return Client(ipaddress.ip_address(ip), FIREFOX, verdicts=None)


def test_the_dc_shield_names_vpn_networks_apart(tmp_path: Path) -> None:
    t = table(tmp_path)
    hosting, vpn = classify_networks(t.orgs)
    shield = DatacenterShield(LiveLists(asn_table=t, hosting_asns=hosting, vpn_asns=vpn))
    event = ParsedEvent(name="pageview", domain="site.test", url="https://site.test/", hostname="site.test", pathname="/")
    site = SiteConfig(domain="site.test")
    evidence = {ip: (v.evidence if (v := shield.check(event, _client(ip), site)) else None)
                for ip in ("1.0.0.9", "1.0.1.9", "1.0.2.9", "192.0.2.9", "2001:db8::9", "198.51.100.1")}
    assert evidence == {"1.0.0.9": "hosting_asn", "1.0.1.9": None, "1.0.2.9": "vpn_asn", "192.0.2.9": None,
                        "2001:db8::9": "hosting_asn", "198.51.100.1": None}


def test_the_list_store_loads_the_installed_table_and_keeps_its_classes(tmp_path: Path) -> None:
    geo = tmp_path / "geo"
    geo.mkdir()
    write_table(V4, V6, geo / "asn.bin", geo / "asn-orgs.json")
    (geo / "asn-installed.json").write_text('{"package": "x", "version": "1", "integrity": "sha512-x"}')
    store = ListStore(tmp_path)
    store.load_all()
    assert store.lists.asn_table is not None and 64500 in store.lists.hosting_asns and 64502 in store.lists.vpn_asns
    assert (tmp_path / "lists" / "asn-classes.json").exists()
    again = ListStore(tmp_path)
    again.load_all()
    assert (again.lists.hosting_asns, again.lists.vpn_asns) == (store.lists.hosting_asns, store.lists.vpn_asns)


def test_a_site_can_keep_vpn_visitors_and_only_them(tmp_path: Path) -> None:
    t = table(tmp_path)
    hosting, vpn = classify_networks(t.orgs)
    executor = offline_executor(LiveLists(asn_table=t, hosting_asns=hosting, vpn_asns=vpn), tmp_path / "state")
    keeps = parse_site({"domain": "keeps.test", "shields": {"ignore": ["dc_ip:vpn_asn"]}}, "keeps.toml")
    strict = parse_site({"domain": "strict.test"}, "strict.toml")
    executor.use(Sites({"keeps.test": keeps, "strict.test": strict}, (keeps, strict)))

    def reason(domain: str, ip: str) -> DropReason | None:
        event = ParsedEvent(name="pageview", domain=domain, url=f"https://{domain}/", hostname=domain, pathname="/")
        dropped, _ = executor.decide(event, _client(ip))
        return None if dropped is None else dropped.reason

    assert reason("keeps.test", "1.0.2.9") is None and reason("strict.test", "1.0.2.9") is DropReason.DC_IP
    assert reason("keeps.test", "1.0.0.9") is DropReason.DC_IP  # hosting stays dropped
    trace = executor.trace(ParsedEvent(name="pageview", domain="keeps.test", url="https://keeps.test/",
                                       hostname="keeps.test", pathname="/"), _client("1.0.2.9"))
    dc = next(s for s in trace.steps if s.reason == "dc_ip")
    assert dc.outcome == "ignored" and dc.evidence == "vpn_asn" and trace.kept


@pytest.mark.parametrize(("ignore", "message"), [
    (["dc_ip"], "names no evidence ''"), (["dc_ip:vpn"], "names no evidence 'vpn'"),
    (["unknown_site:x"], "is not a shield that names evidence"), ("dc_ip:vpn_asn", "must be a list"),
])
def test_a_bad_ignore_entry_names_what_is_wrong(ignore: object, message: str) -> None:
    from gateway.errors import ConfigError

    with pytest.raises((ConfigError, RuleError), match=message):
        parse_site({"domain": "a.test", "shields": {"ignore": ignore}}, "a.toml")
