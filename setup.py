"""The build's one step beyond pyproject.toml: the request path's modules (gateway/compiled.py)
compiled to C with mypyc.

`EDGE_GATEWAY_COMPILE`: `1` compiles and fails the build when it cannot (what `make run` and
`make test` ask for), `0` builds plain Python; unset, it compiles when mypyc and a C compiler
are at hand and otherwise builds plain Python with a warning. Plain Python behaves the same,
and costs more CPU per event.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _cannot_compile() -> str | None:
    """Why this machine cannot compile the modules (None: it can)."""
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc (part of mypy) is not installed"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Debian: python3-dev)"
    return None


def _ext_modules() -> list[object]:
    wanted = os.environ.get("EDGE_GATEWAY_COMPILE", "")
    if wanted == "0":
        return []
    why = _cannot_compile()
    if why is not None:
        if wanted == "1":
            sys.exit(f"EDGE_GATEWAY_COMPILE=1 but the request path cannot be compiled: {why}")
        print(f"warning: building the gateway as plain Python (slower): {why}", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    spec = runpy.run_path(str(HERE / "gateway" / "compiled.py"))
    os.chdir(HERE)  # mypycify takes the paths from the project root
    # Installed packages are not read: the compiled code assumes nothing of their types (each
    # build, isolated or not, makes the same code, and a library's value is never type-checked
    # on its way in); the project's own modules are.
    flags = ["--no-site-packages", "--ignore-missing-imports", "--no-warn-unused-ignores"]
    return list(mypycify([*flags, *spec["MODULES"]], opt_level="3", group_name=spec["GROUP"]))


setup(ext_modules=_ext_modules())
