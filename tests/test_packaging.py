"""What `pip install .` gives: a gateway that serves its tracker and loads its data files
without the checkout next to it, with its request path compiled."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from gatewayproc import ROOT, Gateway, write_config

from gateway.compiled import GROUP, MODULES


def test_an_installed_gateway_serves_the_tracker_from_package_data(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True,
                   env={**os.environ, "EDGE_GATEWAY_COMPILE": "1"})
    [wheel] = wheels.glob("edge_tracker_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("gateway/static/script.js", "gateway/enrich/data/referrer_sources.json",
                 "shields/data/bot_patterns.txt", "shields/data/iso3166_alpha2.txt"):
        assert data in names, data
    for path in MODULES:  # each compiled, beside the group's shared library
        stem = path.removesuffix(".py")
        assert any(n.startswith(stem + ".cpython-") and n.endswith(".so") for n in names), path
    assert any(n.startswith(GROUP + "__mypyc.") for n in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    where = subprocess.run([sys.executable, "-c", "import gateway; print(gateway.__file__)"], cwd=tmp_path,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout

    gw = Gateway(write_config(tmp_path / "gw"), env={"PYTHONPATH": str(site)}, cwd=tmp_path).start()
    try:
        r = gw.client.get("/js/script.js")
        assert r.status_code == 200 and r.content == (ROOT / "gateway" / "static" / "script.js").read_bytes()
        assert r.headers["content-type"].startswith("application/javascript")
        assert f"request path compiled ({len(MODULES)} modules)" in gw.log()
    finally:
        gw.close()
