"""The build compiles the request path (gateway/compiled.py, setup.py): the suite runs what a
`make run` gateway runs, and never a compiled copy older than its source."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

from gatewayproc import ROOT, Gateway, write_config
from prerequisites import unavailable

from gateway.compiled import MODULES, module_name, status


def test_every_listed_module_exists_and_the_build_lists_the_same() -> None:
    assert MODULES and len(set(MODULES)) == len(MODULES)
    for path in MODULES:
        assert (ROOT / path).is_file(), path
    # The Makefile reads the same list: a change to one of them rebuilds before the tests run.
    dry = subprocess.run(["make", "-np", "-C", str(ROOT), "venv"], capture_output=True, text=True).stdout
    [line] = [ln for ln in dry.splitlines() if ln.startswith("COMPILED := ")]
    assert tuple(line.removeprefix("COMPILED := ").split()) == MODULES


def test_the_request_path_runs_compiled() -> None:
    compiled, interpreted = status()
    if interpreted:
        unavailable(f"the request path was built as plain Python ({', '.join(interpreted)}): "
                    "EDGE_GATEWAY_COMPILE=1 pip install -e . compiles it")
    assert len(compiled) == len(MODULES)


def test_no_compiled_copy_is_older_than_its_source() -> None:
    stale = []
    for path in MODULES:
        origin = Path(importlib.import_module(module_name(path)).__file__ or "")
        source = ROOT / path
        if origin != source and origin.parent == source.parent and origin.stat().st_mtime < source.stat().st_mtime:
            stale.append(path)
    assert not stale, f"compiled before their last change (make test-venv rebuilds them): {stale}"


def test_the_gateway_says_how_its_request_path_was_built(tmp_path: Path) -> None:
    gw = Gateway(write_config(tmp_path / "gw")).start()
    try:
        log = gw.log()
    finally:
        gw.close()
    compiled, interpreted = status()
    if interpreted:
        assert "request path running as plain Python" in log
    else:
        assert f"request path compiled ({len(compiled)} modules)" in log
