"""The request path's modules that the build compiles to C with mypyc (setup.py), and which of
them this process runs compiled.

Every event runs through these modules, tens of small Python calls each; compiled, the same code
costs about 30 % less worker CPU per server-side event (docs/performance.md). They stay plain
Python too: the build falls back to them, with a warning, where no C compiler or mypyc is at
hand, and they behave the same either way (the test suite runs the compiled build; `make test`
checks it is).

What a compiled module cannot do, and so none of these does: be inspected for its signature (a
Sanic handler), have its functions or classes replaced at run time (tests patch other modules),
or have its classes subclassed by interpreted code.

Only the standard library here: setup.py reads `MODULES` before anything is installed.
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES

__all__ = ["MODULES", "GROUP", "status"]

#: The group's shared library is `<GROUP>__mypyc.<suffix>`, beside the packages.
GROUP = "edge_tracker_gateway"

#: Paths from the project root, in import order.
MODULES: tuple[str, ...] = (
    "gateway/schema.py",
    "shields/model.py",
    "shields/intervals.py",
    "shields/hosts.py",
    "shields/iplists.py",
    "shields/bots.py",
    "shields/referrers.py",
    "shields/agents.py",
    "geo/location.py",
    "geo/reader.py",
    "gateway/enrich/useragent.py",
    "gateway/enrich/columns.py",
    "gateway/enrich/geo.py",
    "gateway/state/salts.py",
    "gateway/store/spool.py",
    "gateway/ingest/client_ip.py",
    "gateway/ingest/body.py",
    "gateway/ingest/clients.py",
    "gateway/ingest/visitor.py",
    "gateway/ingest/row.py",
    "gateway/ingest/steps.py",
    "gateway/ingest/executor.py",
    "gateway/ingest/server_events.py",
    "gateway/ingest/server_batch.py",
)


def module_name(path: str) -> str:
    """`gateway/ingest/body.py` → `gateway.ingest.body`."""
    return path.removesuffix(".py").replace("/", ".")


def status() -> tuple[list[str], list[str]]:
    """(compiled, interpreted): the names of `MODULES` as this process loaded them (importing
    those not loaded yet)."""
    compiled: list[str] = []
    interpreted: list[str] = []
    for path in MODULES:
        name = module_name(path)
        origin = getattr(importlib.import_module(name), "__file__", None) or ""
        (compiled if origin.endswith(tuple(EXTENSION_SUFFIXES)) else interpreted).append(name)
    return compiled, interpreted
